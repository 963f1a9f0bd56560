"""``remediator report`` without a browser: which incident, what the logs say around it, what
the page holds and escapes, where it is written.

The incidents come from the real engine writing a real action log (as ``test_review_cli``
makes them), or, for values no engine writes on purpose (hostile ones in every field), from
records appended with the real :class:`ActionLog`. The logs are files in the servers' own
formats, written around the incident's wall-clock time.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from remediator.actionlog import ActionLog
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.cli import main
from remediator.load import load
from remediator.report import traffic
from remediator.report.incident import Incident
from remediator.review import ts_of
from tests.wired import resolved_incident

CONFIG = """
state_dir: state
action_log: log/actions.jsonl
sources:
  acc: {{type: access_log, path: {access}, format: nginx-timed}}
  err: {{type: error_log, path: {errors}, format: nginx-error}}
services:
  fpm: {{kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s}}
playbooks:
  - name: fpm-down
    when:
      all:
        - status_rate: {{source: acc, status: 502, window: 20s, at_least: 10}}
        - error_cause: {{source: err, cause: upstream_refused, window: 20s}}
    steps:
      - restart: fpm
        verify: {{settle: 0s}}
"""
HOSTILE = "</script><img src=x onerror=alert(1)>\x1b[2J\x1b]0;owned\x07\u202e"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


def access_line(t: float, status: int, path: str = "/index.php") -> str:
    when = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (
        f'127.0.0.1 - - [{when}] "GET {path} HTTP/1.1" {status} 157 "-" "curl/7.88.1" '
        f"rt=0.000 us={status} urt=0.000\n"
    )


def error_line(t: float) -> str:
    when = dt.datetime.fromtimestamp(t).strftime("%Y/%m/%d %H:%M:%S")  # nginx: local time
    return (
        f"{when} [error] 7#7: *1 connect() to unix:/run/php/fpm.sock failed (111: Connection "
        'refused) while connecting to upstream, client: 127.0.0.1, request: "GET / HTTP/1.1"\n'
    )


def write_config(tmp: Path) -> Path:
    cfg = tmp / "r.yaml"
    cfg.write_text(CONFIG.format(access=tmp / "access.log", errors=tmp / "error.log"))
    (tmp / "playbooks.d").mkdir(exist_ok=True)
    return cfg


def _restart(args: object, ctx: ActionContext) -> ActionResult:
    details = {"argv": ["systemctl", "restart", "php8.2-fpm.service"], "rc": 0}
    return ActionResult(
        Outcome.OK, "restarted php8.2-fpm.service", target="fpm", restarted=True, details=details
    )


def engine_incident(cfg: Path, evidence: Iterable[str] = ()) -> None:
    """One resolved incident in ``cfg``'s action log, opened now (wall clock) by the engine."""
    resolved_incident(cfg, _restart, evidence)


def records(cfg: Path) -> list[dict[str, Any]]:
    from remediator.actionlog import read  # noqa: PLC0415

    return list(read(cfg.parent / "log" / "actions.jsonl"))


def opened_at(cfg: Path) -> float:
    t = ts_of(records(cfg)[0])
    assert t is not None
    return t


# ---- which incident --------------------------------------------------------------------------


def test_report_takes_the_newest_incident_or_the_one_a_prefix_names(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    engine_incident(cfg)
    first = records(cfg)[0]["incident"]
    shutil.rmtree(tmp_path / "state")  # a fresh guard book: no cooldown from the first
    engine_incident(cfg)
    last = records(cfg)[-1]["incident"]
    assert first != last
    rc, _, err = run("-c", str(cfg), "report", "-o", str(tmp_path / "a.html"))
    assert rc == 0, err
    assert f"incident {last}" in (tmp_path / "a.html").read_text()
    rc, _, err = run("-c", str(cfg), "report", "--last", "-o", str(tmp_path / "b.html"))
    assert rc == 0 and f"incident {last}" in (tmp_path / "b.html").read_text()
    unique = next(first[:n] for n in range(1, len(first)) if not last.startswith(first[:n]))
    rc, _, err = run("-c", str(cfg), "report", unique, "-o", str(tmp_path / "c.html"))
    assert rc == 0 and f"incident {first}" in (tmp_path / "c.html").read_text()


def test_an_incident_the_log_does_not_hold_is_a_usage_error_naming_the_newest(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path)
    rc, out, err = run("-c", str(cfg), "report")
    assert (rc, out) == (2, "") and "holds no incidents yet" in err
    engine_incident(cfg)
    newest = records(cfg)[0]["incident"]
    rc, out, err = run("-c", str(cfg), "report", "1999")
    assert (rc, out) == (2, "")
    assert err.strip().endswith(
        f"no incident in {cfg.parent}/log/actions.jsonl starts so; the newest: {newest}"
    )


def test_an_action_log_that_cannot_be_read_is_a_one_line_failure(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "log" / "actions.jsonl").mkdir(parents=True)
    rc, out, err = run("-c", str(cfg), "report")
    assert (rc, out) == (1, "")
    assert err == f"remediator report: {tmp_path}/log/actions.jsonl: Is a directory\n"


def test_report_to_stdout_with_a_dash(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    engine_incident(cfg)
    rc, out, _ = run("-c", str(cfg), "report", "-o", "-")
    assert rc == 0 and out.startswith("<!DOCTYPE html>") and out.rstrip().endswith("</html>")


def test_report_replaces_a_symlink_at_its_path_and_never_writes_through_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    engine_incident(cfg)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    page = tmp_path / "page.html"
    page.symlink_to(victim)
    rc, out, err = run("-c", str(cfg), "report", "-o", str(page))
    assert rc == 0, err
    assert victim.read_text() == "keep me"
    assert not page.is_symlink() and page.read_text().startswith("<!DOCTYPE html>")
    assert out == f"{page}\n"


def test_the_default_file_name_keeps_only_safe_characters_of_the_id() -> None:
    inc = Incident("../../etc/cron.d/x y", [{"incident": "../../etc/cron.d/x y"}], [])
    assert inc.file_name() == "incident-______etc_cron_d_x_y.html"


# ---- what the logs say around it -------------------------------------------------------------


def _write(path: Path, lines: Iterable[str]) -> None:
    with path.open("a") as f:
        f.writelines(lines)


def _window(cfg: Path) -> tuple[Any, traffic.Traffic, float]:
    loaded = load(cfg)
    assert loaded.config is not None
    t0 = opened_at(cfg)
    return loaded.config, traffic.window(t0 - 30, t0 + 30), t0


def test_requests_5xx_and_causes_are_counted_per_second_from_the_logs(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    engine_incident(cfg)
    config, counts, t0 = _window(cfg)
    base = int(t0)
    lines = []
    for s in range(base - 100, base + 100):  # beyond the window on both sides
        lines += [access_line(s, 200)] * 3 + [access_line(s, 502)] * (s % 3)
    _write(tmp_path / "access.log", lines)
    _write(tmp_path / "error.log", [error_line(s) for s in range(base - 100, base + 100, 2)])
    traffic.read(config, {}, counts)
    assert counts.bucket == 1 and not counts.access_from_evidence
    for k in range(counts.size):
        s = int(counts.start) + k
        assert (counts.requests[k], counts.errors[k]) == (3 + s % 3, s % 3)
    assert counts.causes["upstream_refused"] == [
        1 if (int(counts.start) + k - base) % 2 == 0 else 0 for k in range(counts.size)
    ]
    assert counts.access_read == [f"acc: {tmp_path / 'access.log'}"]


def test_a_long_log_is_bisected_to_the_same_counts_and_its_predecessor_read_too(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path)
    engine_incident(cfg)
    config, counts, t0 = _window(cfg)
    base = int(t0)
    older = [access_line(s, 200) for s in range(base - 20_000, base - 5)]  # megabytes before
    newer = [access_line(s, 502 if s % 2 else 200) for s in range(base - 5, base + 5_000)]
    _write(tmp_path / "access.log.1", older)
    _write(tmp_path / "access.log", newer)
    traffic.read(config, {}, counts)
    expected = [1 if int(counts.start) + k < base + 5_000 else 0 for k in range(counts.size)]
    assert counts.requests == expected
    assert sum(counts.errors) == sum(
        1 for k in range(counts.size) if (s := int(counts.start) + k) >= base - 5 and s % 2
    )
    assert [r.split(": ")[1] for r in counts.access_read] == [
        str(tmp_path / "access.log.1"),
        str(tmp_path / "access.log"),
    ]


def test_when_the_logs_are_gone_the_evidence_is_charted_and_the_page_says_so(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path)
    now = time.time()
    engine_incident(cfg, [access_line(now, 502), access_line(now, 503)])
    rc, _, err = run("-c", str(cfg), "report", "-o", str(tmp_path / "p.html"))
    assert rc == 0, err
    page = (tmp_path / "p.html").read_text()
    assert "The logs on disk no longer cover this incident" in page
    assert "acc: the incident&#x27;s evidence lines only" in page
    assert len(re.findall(r'<rect class="err-bar"', page)) >= 1


def test_a_fifo_in_a_logs_place_is_not_read(tmp_path: Path) -> None:
    import os  # noqa: PLC0415

    cfg = write_config(tmp_path)
    engine_incident(cfg)
    os.mkfifo(tmp_path / "access.log")
    config, counts, _ = _window(cfg)
    traffic.read(config, {}, counts)  # returns: a FIFO would block a plain open
    assert f"{tmp_path / 'access.log'}: not a regular file (a FIFO): not read" in counts.notes


# ---- what the page holds ---------------------------------------------------------------------


def _hostile_log(cfg: Path) -> None:
    """An incident whose every outside value is hostile: its evidence, reasons, commands'
    output, a probe's answer, a guard's reason, a held trigger around it."""
    log = ActionLog(cfg.parent / "log" / "actions.jsonl", journal=False)
    inc = "20261205T191606Z-abcdef"
    t = dt.datetime.now(dt.UTC)

    def ts(s: float) -> str:
        return (t + dt.timedelta(seconds=s)).isoformat(timespec="milliseconds")

    base = {"incident": inc, "playbook": "fpm-down"}
    log.write({"ts": ts(-5), "event": "trigger_held_back", "playbook": "fpm-down",
               "outcome": "held", "guard": "cooldown", "reason": f"cooldown {HOSTILE}"})  # fmt: skip
    log.write(base | {
        "ts": ts(0), "event": "incident_opened", "reason": f"opened {HOSTILE}",
        "corroboration": {"mode": "any", "by": f"probe {HOSTILE}"},
        "evidence": {
            "lines": {"acc": [f"line {HOSTILE}"], "err": [f"err {HOSTILE}"]},
            "readings": [{"condition": "status_rate", "source": "acc", "holds": True,
                          "count": 3, "note": HOSTILE}],
            "probes": {"site": {"ok": False, "detail": HOSTILE, "consecutive_failures": 2,
                                "age_s": 42}},
        },
    })  # fmt: skip
    step = base | {"step": 1, "action": "restart", "target": f"fpm{HOSTILE}"}
    log.write(step | {"ts": ts(0.1), "event": "action_intent", "reason": HOSTILE})
    log.write(step | {"ts": ts(0.2), "event": "action_result", "outcome": "failed",
                      "reason": HOSTILE, "details": {"argv": ["echo", HOSTILE], "rc": 1,
                                                     "error": HOSTILE}})  # fmt: skip
    held = base | {"step": 2, "action": "restart", "target": "nginx"}
    log.write(held | {"ts": ts(0.3), "event": "action_held", "outcome": "held",
                      "guard": "max_restarts", "reason": f"held {HOSTILE}"})  # fmt: skip
    log.write(base | {"ts": ts(0.4), "event": "incident_closed", "outcome": "exhausted",
                      "reason": HOSTILE, "summary": HOSTILE})  # fmt: skip


def test_hostile_values_in_every_field_are_text_on_the_page(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    _hostile_log(cfg)
    rc, _, err = run("-c", str(cfg), "report", "-o", str(tmp_path / "p.html"))
    assert rc == 0, err
    page = (tmp_path / "p.html").read_text()
    assert not re.search(r"<(img|script)\b", page)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", page)
    shown = "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;\\x1b[2J\\x1b]0;owned\\x07\\u202e"
    # evidence (2), opening reason, corroboration, reading, probe, step reason, command,
    # the target, the held step's and the held trigger's reasons, closing reason and summary
    assert page.count(shown) >= 12
    # a probe's answer says how old it was, as `log` does (a probe asked seldom is old news)
    assert ", 2 failure(s) in a row, answered 42s before</li>" in page


def test_a_held_step_and_a_held_trigger_are_drawn_and_listed_under_guards(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path)
    _hostile_log(cfg)
    rc, out, _ = run("-c", str(cfg), "report", "-o", "-")
    assert rc == 0
    markers = re.findall(r'<g class="step-marker (\w+)" data-step="(\d)" data-outcome="(\w+)"', out)
    assert markers == [("bad", "1", "failed"), ("held", "2", "held")]
    guards = out[out.index('id="guards-section"') : out.index('id="evidence-section"')]
    assert guards.count('<tr class="held-row">') == 2  # the held step and the held trigger
    assert "max_restarts" in guards and "cooldown" in guards
    assert '<h1>fpm-down <span class="badge bad">exhausted</span></h1>' in out
