"""``remediator log``, ``pause``, ``resume`` and ``reset`` on a real state dir and action log."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.causes import Cause
from remediator.cli import main
from remediator.guards import Guard, Guards
from remediator.load import load
from tests.wired import engine_of, resolved_incident

CONFIG = """
state_dir: state
action_log: log/actions.jsonl
sources:
  acc: {type: access_log, path: /var/log/nginx/access.log}
  err: {type: error_log, path: /var/log/nginx/error.log, format: nginx-error}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s}
playbooks:
  - name: fpm-down
    when:
      all:
        - status_rate: {source: acc, status: 502, window: 20s, at_least: 10}
        - error_cause: {source: err, cause: upstream_refused, window: 20s}
    steps:
      - restart: fpm
        verify: {settle: 0s}
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


def _restart(args: object, ctx: ActionContext) -> ActionResult:
    return ActionResult(Outcome.OK, "restarted php8.2-fpm.service", target="fpm", restarted=True)


@pytest.fixture
def incident(tmp_path: Path) -> Path:
    """A config whose action log holds one resolved incident, made by the real engine."""
    cfg = tmp_path / "r.yaml"
    cfg.write_text(textwrap.dedent(CONFIG))
    (tmp_path / "playbooks.d").mkdir()
    resolved_incident(cfg, _restart)
    return cfg


def test_log_shows_the_incident_as_a_timeline(incident: Path) -> None:
    rc, out, _ = run("-c", str(incident), "log")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("incident ") and "fpm-down  resolved" in lines[0]
    assert "opened: 30 x 502 of 30 requests (100.0%) in 20s on acc" in out
    said = [line.strip() for line in lines if "corroborated by:" in line]
    assert said == ["corroborated by: fpm unit failed (Result=signal)"], out
    assert "step 1 restart fpm: ok (" in out
    assert "step 1 restart fpm verified: recovered 1.50s after the action" in out
    assert "closed: resolved" in out


def test_log_json_filters_by_incident_prefix_and_outcome(incident: Path) -> None:
    rc, out, _ = run("-c", str(incident), "log", "--json")
    recs = [json.loads(x) for x in out.splitlines()]
    inc = recs[0]["incident"]
    assert rc == 0 and {r["incident"] for r in recs} == {inc}
    rc, out, _ = run("-c", str(incident), "log", "--json", "--incident", inc[:10])
    assert len(out.splitlines()) == len(recs)
    rc, out, err = run("-c", str(incident), "log", "--outcome", "exhausted")
    assert rc == 0 and out == "" and "no records" in err


def test_log_since_a_duration_ago(incident: Path) -> None:
    _, recent, _ = run("-c", str(incident), "log", "--json", "--since", "1h")
    assert recent.count("\n") == 5
    _, future, _ = run("-c", str(incident), "log", "--json", "--since", "2999-01-01")
    assert future == ""


def test_pause_for_a_while_holds_back_the_daemons_guards(incident: Path) -> None:
    rc, out, _ = run("-c", str(incident), "pause", "--for", "30m", "--reason", "deploy")
    assert rc == 0 and "paused for 30m" in out
    loaded = load(incident)
    assert loaded.config is not None
    guards = Guards(loaded.config.state_dir, loaded.config.guards, 0)
    v = guards.may_run(loaded.playbooks[0], time.monotonic())
    assert v.guard is Guard.PAUSED and "deploy" in v.reason
    assert run("-c", str(incident), "resume")[0] == 0
    guards = Guards(loaded.config.state_dir, loaded.config.guards, time.monotonic())
    assert guards.may_run(loaded.playbooks[0], time.monotonic()).guard is not Guard.PAUSED


def test_reset_of_an_unknown_playbook_says_what_exists(incident: Path) -> None:
    rc, _, err = run("-c", str(incident), "reset", "fpm-dwn")
    assert rc == 2
    assert "no playbook 'fpm-dwn' (did you mean 'fpm-down'?)" in err
    rc, out, _ = run("-c", str(incident), "reset", "fpm-down")
    assert rc == 0 and "fpm-down: its breaker was not open" in out


# ---- what a person reads at 3 a.m. -------------------------------------------------------------

SHOUTING = (
    'import sys; sys.stdout.write("config broken" + chr(27) + "]0;owned" + chr(7)); sys.exit(3)'
)
COMMAND_CONFIG = f"""
state_dir: state
action_log: log/actions.jsonl
sources:
  acc: {{type: access_log, path: /var/log/nginx/access.log}}
  err: {{type: error_log, path: /var/log/nginx/error.log, format: nginx-error}}
playbooks:
  - name: flush
    when:
      all:
        - status_rate: {{source: acc, status: 502, window: 20s, at_least: 10}}
        - error_cause: {{source: err, cause: upstream_refused, window: 20s}}
    steps:
      - command: {{argv: [{sys.executable}, -c, '{SHOUTING}'], timeout: 10s}}
"""
FORGED = '127.0.0.1 - - [24/Nov/2026:10:26:03 +0100] "GET /{n}\x1b[2J HTTP/1.1" 502 0 "-" "-"'
REFUSED = (
    "2026/11/24 10:26:03 [error] 7#7: *{n} connect() to unix:/run/php/fpm.sock failed "
    "(111: Connection refused) while connecting to upstream, client: 127.0.0.1"
)


@pytest.fixture
def command_incident(tmp_path: Path) -> Path:
    """An action log with one incident whose step ran a real command that failed loudly,
    with evidence lines (one of them forged with escape sequences)."""
    from remediator.actions.registry import all_actions  # noqa: PLC0415

    cfg = tmp_path / "r.yaml"
    cfg.write_text(textwrap.dedent(COMMAND_CONFIG))
    (tmp_path / "playbooks.d").mkdir()
    engine, signals = engine_of(cfg, all_actions())
    for n in range(6):
        signals.sample("acc", FORGED.format(n=n))
        signals.sample("err", REFUSED.format(n=n))
    signals.statuses["acc"].add(100, 502, 30)
    signals.causes["err"].add(100, Cause.UPSTREAM_REFUSED, 30)
    engine.tick(100)
    assert engine.closed and engine.closed[0]["outcome"] == "exhausted"
    return cfg


def test_log_shows_the_exact_command_and_its_exit_status(command_incident: Path) -> None:
    rc, out, _ = run("-c", str(command_incident), "log")
    assert rc == 0
    assert f"$ {sys.executable} -c {shlex.quote(SHOUTING)}  (exit 3)" in out


def test_log_escapes_what_a_command_printed(command_incident: Path) -> None:
    _, out, _ = run("-c", str(command_incident), "log")
    assert "exited with status 3: config broken\\x1b]0;owned\\x07" in out, out
    assert "\x1b" not in out and "\x07" not in out


def test_log_shows_a_few_evidence_lines_per_source_escaped(command_incident: Path) -> None:
    _, out, _ = run("-c", str(command_incident), "log")
    assert "acc: 6 line(s), last 3 (--evidence: all)" in out
    assert '"GET /5\\x1b[2J HTTP/1.1" 502' in out
    assert "GET /2" not in out
    assert out.count("connect() to unix:/run/php/fpm.sock failed") == 3


def test_log_evidence_shows_every_line(command_incident: Path) -> None:
    _, out, _ = run("-c", str(command_incident), "log", "--evidence")
    assert all(f'"GET /{n}\\x1b[2J HTTP/1.1"' in out for n in range(6))
    assert out.count("connect() to unix:/run/php/fpm.sock failed") == 6


def test_log_shows_the_closing_reason(command_incident: Path) -> None:
    _, out, _ = run("-c", str(command_incident), "log")
    assert "closed: exhausted (" in out and "ms): exhausted after 1 step(s)" in out


@pytest.fixture
def kolkata() -> Iterator[None]:
    """This machine's zone, for the test: +05:30 all year."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.usefixtures("kolkata")
def test_log_times_carry_their_offset(incident: Path) -> None:
    _, out, _ = run("-c", str(incident), "log")
    lines = out.splitlines()
    assert re.fullmatch(
        r"incident \S+  fpm-down  resolved  \d{4}-\d\d-\d\d [\d:]{8} \+05:30", lines[0]
    )
    timed = [line for line in lines[1:] if line[2:3].isdigit()]
    assert len(timed) == 5
    assert all(re.match(r"  \d\d:\d\d:\d\d\.\d{3} \+05:30  ", line) for line in timed), out


def test_records_of_old_versions_show_no_commands() -> None:
    from remediator.review import commands  # noqa: PLC0415

    assert commands({}) == []
    assert commands({"pid_before": 10, "pid_after": 11}) == []


def test_commands_name_signals_edits_and_what_a_dry_run_did_not_do() -> None:
    from remediator.review import commands  # noqa: PLC0415

    details = {
        "steps": [
            {"kind": "observe", "argv": ["systemctl", "show", "x"], "rc": 0},
            {"kind": "signal", "pid": 4711, "signal": "SIGUSR2"},
            {"kind": "signal_group", "pgid": 4711, "signal": "SIGKILL", "error": "no such process"},
        ],
        "config_test": {"argv": ["php-fpm8.2", "-t", "-y", "/etc/php fpm.conf"], "rc": 0},
        "edit": {"file": "/etc/php/pool.conf", "set": {"pm.max_children": 12}},
        "would": [{"kind": "command", "argv": ["systemctl", "restart", "php8.2-fpm"]}],
    }
    assert commands(details, dry_run=True) == [
        "$ kill -USR2 4711  (not run: dry run)",
        "$ kill -KILL -- -4711  (no such process, not run: dry run)",
        "$ php-fpm8.2 -t -y '/etc/php fpm.conf'  (exit 0)",
        "edit /etc/php/pool.conf: pm.max_children = 12  (not run: dry run)",
        "$ systemctl restart php8.2-fpm  (not run: dry run)",
    ]


def test_commands_come_in_the_order_the_backend_acted() -> None:
    """A restart's record sums up its start command (``argv``) beside the backend's own log
    (``steps``), in which a stale pid file was removed first: the timeline says so in that
    order, as a person would redo it."""
    from remediator.review import commands  # noqa: PLC0415

    start = ["/usr/sbin/php-fpm8.2", "-y", "/etc/php/fpm.conf"]
    details = {
        "backend": "pid_file",
        "steps": [
            {"kind": "remove", "path": "/run/php/php-fpm.pid"},
            {"kind": "change", "argv": start, "rc": 0, "ms": 12.0},
        ],
        "argv": start,
    }
    assert commands(details) == [
        "$ rm /run/php/php-fpm.pid",
        "$ /usr/sbin/php-fpm8.2 -y /etc/php/fpm.conf  (exit 0)",
    ]


def test_a_config_test_a_dry_run_ran_shows_its_exit_status_not_not_run() -> None:
    """A dry run runs read-only config tests (diagnose's, a reload's): the timeline must not
    say they were not run. The shapes are those of real records (diagnose's summary of a test,
    the config_test action's, a reload's); a test's exit status is never lent to another
    command.
    """
    from remediator.review import commands  # noqa: PLC0415

    test = ["php-fpm8.2", "-t"]
    diagnose = {
        "config_tests": [
            {
                "steps": [{"kind": "observe", "argv": test, "rc": 0}],
                "argv": test,
                "config_test": {"argv": test, "rc": 0, "output": "test is successful"},
            }
        ]
    }
    assert commands(diagnose, dry_run=True) == ["$ php-fpm8.2 -t  (exit 0)"]
    action = {"argv": test, "config_test": {"argv": test, "rc": 1}}  # the config_test action
    assert commands(action, dry_run=True) == ["$ php-fpm8.2 -t  (exit 1)"]
    other = {"argv": ["systemctl", "reload", "nginx"], "config_test": {"argv": test, "rc": 0}}
    assert commands(other, dry_run=True) == [
        "$ systemctl reload nginx  (not run: dry run)",
        "$ php-fpm8.2 -t  (exit 0)",
    ]


# ---- usage errors ------------------------------------------------------------------------------


def test_an_unknown_outcome_is_a_usage_error_naming_the_valid_ones(incident: Path) -> None:
    rc, out, err = run("-c", str(incident), "log", "--outcome", "bogus")
    assert rc == 2 and out == ""
    assert err.startswith("remediator log: --outcome bogus: not an outcome; incidents end ")
    assert (
        "resolved, completed, incomplete, exhausted, held, cannot_act, unverified, aborted, interrupted"
        in err
        and "would_run" in err
    )


def test_an_outcome_with_a_typo_gets_a_suggestion(incident: Path) -> None:
    rc, _, err = run("-c", str(incident), "log", "--outcome", "resovled")
    assert rc == 2 and "(did you mean 'resolved'?)" in err


def test_an_unknown_playbook_is_a_usage_error_naming_the_configured_ones(incident: Path) -> None:
    rc, out, err = run("-c", str(incident), "log", "--playbook", "fpm-dwn")
    assert rc == 2 and out == ""
    assert err == (
        "remediator log: --playbook fpm-dwn: no such playbook (did you mean 'fpm-down'?); "
        "configured: fpm-down\n"
    )


def test_an_unknown_incident_is_a_usage_error_naming_the_newest(incident: Path) -> None:
    _, out, _ = run("-c", str(incident), "log", "--json")
    newest = json.loads(out.splitlines()[0])["incident"]
    rc, out, err = run("-c", str(incident), "log", "--incident", "1999")
    assert rc == 2 and out == ""
    assert f"no incident in {incident.parent / 'log' / 'actions.jsonl'} starts so" in err
    assert err.rstrip().endswith(f"the newest: {newest}")


@pytest.mark.parametrize("since", ["yesterday", "00:00", "1h", "2026-01-01", "1700000000"])
def test_since_takes_a_time_of_day_a_day_a_duration_iso_and_epoch(
    incident: Path, since: str
) -> None:
    rc, out, _ = run("-c", str(incident), "log", "--json", "--since", since)
    assert rc == 0 and out.count("\n") == 5


@pytest.mark.parametrize("since", ["yesterday 00:00", "2h", "00:00", "ISO", "EPOCH"])
def test_since_leaves_out_what_came_before(incident: Path, since: str) -> None:
    """An incident of three days ago is left out by each form of --since (the day's five
    records are kept): a --since that parsed but filtered nothing would fail here."""
    actions = incident.parent / "log" / "actions.jsonl"
    old = json.loads(actions.read_text().splitlines()[0])
    then = time.time() - 3 * 86400
    old["ts"] = dt.datetime.fromtimestamp(then, dt.UTC).isoformat().replace("+00:00", "Z")
    old["incident"] = "19991231T000000Z-0ld000"
    with actions.open("a") as f:
        f.write(json.dumps(old) + "\n")
    day_ago = time.time() - 86400
    since = {
        "ISO": dt.datetime.fromtimestamp(day_ago, dt.UTC).isoformat(),
        "EPOCH": str(int(day_ago)),
    }.get(since, since)
    rc, everything, _ = run("-c", str(incident), "log", "--json")
    assert rc == 0 and old["incident"] in everything
    rc, out, _ = run("-c", str(incident), "log", "--json", "--since", since)
    assert rc == 0 and out.count("\n") == 5 and old["incident"] not in out


def test_until_a_while_ago_leaves_out_what_came_after(incident: Path) -> None:
    rc, out, err = run("-c", str(incident), "log", "--until", "1h")
    assert rc == 0 and out == "" and "no records" in err


def test_a_since_that_is_no_time_is_a_usage_error_with_an_example(
    incident: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, _ = run("-c", str(incident), "log", "--since", "last tuesday")
    assert rc == 2
    assert (
        "'last tuesday' is not a time: use e.g. 14:41, yesterday 14:00" in capsys.readouterr().err
    )


# ---- a reader that goes away ---------------------------------------------------------------------


def test_a_closed_pipe_ends_log_quietly_with_exit_0(incident: Path) -> None:
    """``remediator log --json | head -1`` on a log far larger than a pipe's buffer."""
    actions = incident.parent / "log" / "actions.jsonl"
    one = actions.read_text().splitlines()[0]
    with actions.open("a") as f:
        f.write((one + "\n") * 5000)  # ~2 MB: the writer must block, then meet a closed pipe
    proc = subprocess.Popen(
        [sys.executable, "-m", "remediator", "-c", str(incident), "log", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what head -1 does after its line
    err = proc.stderr.read()
    assert proc.wait(60) == 0
    assert json.loads(first)["event"] == "incident_opened"
    assert err == b""
