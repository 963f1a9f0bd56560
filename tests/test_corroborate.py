"""Corroboration on a clock set by the test: `corroborate:` parsed and defaulted, a trigger on
log lines alone held back (`uncorroborated`, nothing counted) until a probe fails or the
service is down, replay and manual triggers, and what `check` says about forgeable logs.

The real attack (www-data forging lines against a real PHP-FPM and the daemon) is in
test_attack_forged.py."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from remediator import corroborate, logtrust
from remediator.actionlog import read
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.causes import Cause
from remediator.cli import main
from remediator.engine import Engine
from remediator.load import Loaded
from remediator.playbook import Corroborate
from tests.attacker import give_to_www_data
from tests.wired import load_text, wired

SOURCES = """
sources:
  acc: {type: access_log, path: /var/log/nginx/access.log}
  err: {type: error_log, path: /var/log/nginx/error.log, format: nginx-error}
"""
PROBE = """
  site: {type: probe, url: "http://127.0.0.1:1/"}
"""
SERVICES = """
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s}
"""
TRIGGER = """
    when:
      all:
        - status_rate: {source: acc, status: 502, window: 20s, at_least: 10}
        - error_cause: {source: err, cause: upstream_refused, window: 20s}
"""


def _load(tmp_path: Path, text: str) -> Loaded:
    return load_text(tmp_path, text)


def _config(
    *, probe: bool = True, corroborate: str | None = None, step: str = "restart: fpm"
) -> str:
    line = f"    corroborate: {corroborate}\n" if corroborate else ""
    return (
        SOURCES
        + (PROBE if probe else "")
        + SERVICES
        + "playbooks:\n  - name: fpm-down\n"
        + line
        + TRIGGER
        + f"    steps:\n      - {step}\n"
    )


# --- the option -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["probe", "service", "any", "none"])
def test_each_corroborate_value_is_accepted(tmp_path: Path, value: str) -> None:
    loaded = _load(tmp_path, _config(corroborate=value))
    assert loaded.ok, loaded.all_errors()
    assert loaded.playbooks[0].corroborate == value


def test_a_bad_corroborate_value_is_a_located_error(tmp_path: Path) -> None:
    loaded = _load(tmp_path, _config(corroborate="probes"))
    assert [str(e) for e in loaded.all_errors()] == [
        f"{tmp_path / 'r.yaml'}:12:18: playbooks[0].corroborate: unknown corroboration 'probes' "
        "(did you mean 'probe'?); expected one of: probe, service, any, none"
    ]


def test_the_default_is_any_when_the_config_has_a_probe(tmp_path: Path) -> None:
    loaded = _load(tmp_path, _config(step="command: [/bin/true]"))
    assert loaded.config is not None
    assert corroborate.mode_of(loaded.playbooks[0], loaded.config) is Corroborate.ANY


def test_the_default_is_any_when_the_playbook_acts_on_a_service(tmp_path: Path) -> None:
    loaded = _load(tmp_path, _config(probe=False))
    assert loaded.config is not None
    need = corroborate.need_of(loaded.playbooks[0], loaded.config)
    assert need is not None
    assert (need.mode, need.probes, need.services) == (Corroborate.ANY, (), ("fpm",))


def test_the_default_is_none_when_nothing_can_corroborate_and_check_says_so(
    tmp_path: Path,
) -> None:
    loaded = _load(tmp_path, _config(probe=False, step="command: [/bin/true]"))
    assert loaded.config is not None
    pb = loaded.playbooks[0]
    assert corroborate.mode_of(pb, loaded.config) is Corroborate.NONE
    assert corroborate.need_of(pb, loaded.config) is None
    out, err = io.StringIO(), io.StringIO()
    assert main(["-c", str(tmp_path / "r.yaml"), "check"], out, err) == 0
    assert (
        "warning: playbook 'fpm-down': nothing can corroborate it, so log lines alone set off "
        "its steps" in err.getvalue()
    )
    assert "fix: add a probe source of the site" in err.getvalue()


def test_an_explicit_none_is_warned_about_too(tmp_path: Path) -> None:
    loaded = _load(tmp_path, _config(corroborate="none"))
    assert loaded.config is not None
    [warning] = corroborate.warnings(loaded.config, loaded.playbooks)
    assert warning.startswith("playbook 'fpm-down': `corroborate: none`, so log lines alone")


def test_probe_corroboration_without_a_probe_is_warned_about(tmp_path: Path) -> None:
    loaded = _load(tmp_path, _config(probe=False, corroborate="probe"))
    assert loaded.config is not None
    [warning] = corroborate.warnings(loaded.config, loaded.playbooks)
    assert "`corroborate: probe` but there is no probe source" in warning


def test_a_playbook_that_changes_nothing_needs_no_corroboration(tmp_path: Path) -> None:
    text = _config(step="diagnose: {snapshot: true}")
    loaded = _load(tmp_path, text)
    assert loaded.config is not None
    assert corroborate.need_of(loaded.playbooks[0], loaded.config) is None
    assert corroborate.warnings(loaded.config, loaded.playbooks) == []


def test_the_window_is_the_longest_of_the_log_conditions(tmp_path: Path) -> None:
    loaded = _load(tmp_path, _config())
    assert loaded.config is not None
    need = corroborate.need_of(loaded.playbooks[0], loaded.config)
    assert need is not None and need.window == 20.0


# --- the engine -------------------------------------------------------------------------------


class Host:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def actions(self) -> dict[str, Any]:
        def restart(args: Any, ctx: ActionContext) -> ActionResult:
            self.calls.append(f"restart {args.service}")
            return ActionResult(Outcome.OK, "restarted", target=args.service)

        return {"restart": restart}


def _engine(tmp_path: Path, text: str, *, probes: bool = True) -> tuple[Engine, Host, Path]:
    host = Host()
    w = wired(tmp_path, text, host.actions(), probes=probes)
    return w.engine, host, tmp_path / "actions.jsonl"


def forged(engine: Engine, now: float) -> None:
    """What forged lines make the detectors see: 502s and refused upstreams."""
    engine.signals.statuses["acc"].add(now, 502, 30)
    engine.signals.causes["err"].add(now, Cause.UPSTREAM_REFUSED, 30)
    engine.signals.sample("acc", '127.0.0.1 - - [..] "GET / HTTP/1.1" 502 157 "-" "forged"')


def records(path: Path, event: str) -> list[dict[str, Any]]:
    return [r for r in read(path) if r["event"] == event]


def test_log_lines_alone_are_held_back_uncorroborated_and_use_no_budget(tmp_path: Path) -> None:
    engine, host, alog = _engine(tmp_path, _config())
    engine.signals.probes["site"].record(True, "200 in 2 ms", 99)
    engine.signals.services["fpm"].record(False, "running (pid 42)", 99)
    forged(engine, 100)
    for t in range(100, 110):
        engine.tick(t)
    assert host.calls == []
    assert engine.incident is None
    [held] = records(alog, "trigger_held_back")  # once, not once per tick
    assert held["guard"] == "uncorroborated"
    assert held["outcome"] == "held"
    assert held["reason"].startswith("uncorroborated: the trigger rests on log lines only")
    assert held["corroboration"] == {
        "mode": "any",
        "missing": "a failure of probe site or fpm down, failed or not running within 20s",
        "seen": {"probe site": "ok 1.0s ago: 200 in 2 ms", "fpm": "up (running (pid 42))"},
    }
    assert '"forged"' in held["lines"]["acc"][0]  # the lines it was shown, for the post-mortem
    book = engine.guards.playbooks.get("fpm-down")
    assert book is None or book.runs == []
    assert engine.guards.may_run(engine.playbooks[0], 110).allowed
    assert engine.corroboration.waiting["fpm-down"].startswith("a failure of probe site")


def test_a_failing_probe_while_the_trigger_holds_corroborates_it(tmp_path: Path) -> None:
    engine, host, alog = _engine(tmp_path, _config())
    forged(engine, 100)
    engine.tick(100)
    assert host.calls == []
    engine.signals.probes["site"].record(False, "HTTP 502", 103)
    engine.tick(103)
    assert host.calls == ["restart fpm"]
    [opened] = records(alog, "incident_opened")
    assert opened["corroboration"] == {"mode": "any", "by": "probe site failed 0.0s ago: HTTP 502"}
    assert "fpm-down" not in engine.corroboration.waiting


def test_the_service_down_corroborates_it(tmp_path: Path) -> None:
    engine, host, alog = _engine(tmp_path, _config(corroborate="service"))
    engine.signals.probes["site"].record(False, "HTTP 502", 100)  # not asked for: service only
    forged(engine, 100)
    engine.tick(100)
    assert host.calls == []
    engine.signals.services["fpm"].record(True, "unit failed (Result=signal)", 101)
    engine.tick(101)
    assert host.calls == ["restart fpm"]
    [opened] = records(alog, "incident_opened")
    assert opened["corroboration"]["by"] == "fpm unit failed (Result=signal)"


def test_a_probe_failure_older_than_the_window_does_not_corroborate(tmp_path: Path) -> None:
    engine, host, _ = _engine(tmp_path, _config(corroborate="probe"))
    engine.signals.probes["site"].record(False, "HTTP 502", 50)
    engine.signals.probes["site"].record(True, "200", 60)
    forged(engine, 100)
    engine.tick(100)
    assert host.calls == []


def test_a_trigger_that_holds_on_a_probe_needs_nothing_more(tmp_path: Path) -> None:
    text = (
        SOURCES
        + PROBE
        + SERVICES
        + """
playbooks:
  - name: site-down
    when: {probe_failing: {probe: site, consecutive: 2}}
    steps:
      - restart: fpm
"""
    )
    engine, host, alog = _engine(tmp_path, text)
    for t in (100, 101):
        engine.signals.probes["site"].record(False, "timed out", t)
    engine.tick(101)
    assert host.calls == ["restart fpm"]
    [opened] = records(alog, "incident_opened")
    assert (
        opened["corroboration"]["by"] == "the trigger holds on more than log lines (probe_failing)"
    )


def test_with_corroborate_none_log_lines_alone_act(tmp_path: Path) -> None:
    engine, host, alog = _engine(tmp_path, _config(corroborate="none"))
    forged(engine, 100)
    engine.tick(100)
    assert host.calls == ["restart fpm"]
    assert "corroboration" not in records(alog, "incident_opened")[0]


def test_replay_assumes_corroboration_and_says_what_live_would_need(tmp_path: Path) -> None:
    engine, host, alog = _engine(tmp_path, _config(), probes=False)
    forged(engine, 100)
    engine.tick(100)
    assert host.calls == ["restart fpm"]
    [opened] = records(alog, "incident_opened")
    assert opened["corroboration"]["by"] == (
        "assumed: replay sees no probe or service state; live, this runs only on "
        "a failure of probe site or fpm down, failed or not running within 20s"
    )


def test_a_manual_trigger_is_the_operators_evidence(tmp_path: Path) -> None:
    engine, host, alog = _engine(tmp_path, _config())
    forged(engine, 100)
    assert engine.trigger(engine.playbooks[0], 100, who="alice").allowed
    assert host.calls == ["restart fpm"]
    [opened] = records(alog, "incident_opened")
    assert opened["corroboration"]["by"].startswith("the operator (`remediator trigger`)")
    assert records(alog, "trigger_held_back") == []


# --- forged 200s: a count that cannot be diluted ----------------------------------------------


def test_count_alone_holds_whatever_the_ratio(tmp_path: Path) -> None:
    text = _config(corroborate="none").replace(
        "at_least: 10}", "at_least: 10, ratio: 10%, count_alone: 25}"
    )
    engine, host, _ = _engine(tmp_path, text)
    engine.signals.statuses["acc"].add(100, 200, 1000)  # forged 200s dilute the 502s to 3 %
    forged(engine, 100)
    engine.tick(100)
    assert host.calls == ["restart fpm"]


def test_without_count_alone_forged_200s_dilute_the_ratio(tmp_path: Path) -> None:
    text = _config(corroborate="none").replace("at_least: 10}", "at_least: 10, ratio: 10%}")
    engine, host, _ = _engine(tmp_path, text)
    engine.signals.statuses["acc"].add(100, 200, 1000)
    forged(engine, 100)
    engine.tick(100)
    assert host.calls == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("at_least: 10, count_alone: 20", "only with ratio: without one, at_least is a count"),
        ("at_least: 10, ratio: 5%, count_alone: 5", "must not be less than at_least"),
    ],
)
def test_count_alone_is_checked(tmp_path: Path, options: str, message: str) -> None:
    loaded = _load(tmp_path, _config().replace("at_least: 10}", options + "}"))
    [error] = loaded.all_errors()
    assert "count_alone" in error.key and message in error.message


# --- logs others can write --------------------------------------------------------------------


def _log_config(tmp_path: Path, log: Path) -> Loaded:
    return _load(
        tmp_path,
        f"sources:\n  acc: {{type: access_log, path: {log}}}\n"
        f"  err: {{type: error_log, path: {tmp_path / 'logs' / 'error.log'}, "
        "format: nginx-error}\n",
    )


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    for name in ("access.log", "error.log"):
        (d / name).touch()
        (d / name).chmod(0o640)
    return d


def test_a_log_owned_by_www_data_is_warned_about_with_the_fix(tmp_path: Path, logs: Path) -> None:
    access = logs / "access.log"
    give_to_www_data(access)  # what Debian's logrotate and nginx's reopen do
    rules = tmp_path / "logrotate.d"
    rules.mkdir()
    (rules / "nginx").write_text(f"{logs}/*.log {{\n\tcreate 0640 www-data adm\n}}\n")
    loaded = _log_config(tmp_path, access)
    assert loaded.config is not None
    [warning] = logtrust.warnings(loaded.config, rules_dir=rules)
    assert warning.startswith(
        f"nginx access log {access} (source acc) is writable by www-data: anyone who runs "
        "code as www-data can forge lines; corroboration is what stands between them and an "
        f"action (fix: `create 0640 root adm` in {rules / 'nginx'}, and reload nginx"
    )


def test_check_and_status_print_the_warning(tmp_path: Path, logs: Path) -> None:
    give_to_www_data(logs / "error.log")
    loaded = _log_config(tmp_path, logs / "access.log")
    assert loaded.ok
    for command in ("check", "status"):
        out, err = io.StringIO(), io.StringIO()
        main(["-c", str(tmp_path / "r.yaml"), command], out, err)
        assert f"warning: nginx error log {logs / 'error.log'} (source err) is writable by " in (
            err.getvalue()
        ), command


def test_root_owned_logs_in_a_root_directory_are_not_warned_about(
    tmp_path: Path, logs: Path
) -> None:
    loaded = _log_config(tmp_path, logs / "access.log")
    assert loaded.config is not None
    assert logtrust.warnings(loaded.config) == []


def test_group_writable_logs_and_directories_are_warned_about(tmp_path: Path, logs: Path) -> None:
    access = logs / "access.log"
    os.chown(access, 0, 4)  # adm
    access.chmod(0o660)
    logs.chmod(0o777)
    loaded = _log_config(tmp_path, access)
    assert loaded.config is not None
    warnings = logtrust.warnings(loaded.config)
    assert any("is writable by group adm" in w for w in warnings)
    assert any("is in a directory everyone can write" in w and "chmod go-w" in w for w in warnings)


# --- asking before holding back ---------------------------------------------------------------


def _asking(tmp_path: Path) -> tuple[Engine, Host, Path, list[str]]:
    engine, host, alog = _engine(tmp_path, _config())
    asked: list[str] = []
    engine.request_probe = lambda name: asked.append(f"probe {name}")
    engine.request_service = lambda name: asked.append(f"service {name}")
    return engine, host, alog, asked


def test_corroboration_is_asked_for_before_the_trigger_is_held_back(tmp_path: Path) -> None:
    engine, host, alog, asked = _asking(tmp_path)
    forged(engine, 100)
    engine.tick(100)
    assert asked == ["probe site", "service fpm"]
    assert engine.corroboration.asking
    assert records(alog, "trigger_held_back") == []  # the answer is not due yet
    engine.signals.probes["site"].record(False, "HTTP 502", 100.2)  # a real outage
    engine.tick(100.2)
    assert host.calls == ["restart fpm"]
    assert records(alog, "trigger_held_back") == []  # no held record before a real incident
    assert not engine.corroboration.asking


def test_no_answer_by_its_due_time_holds_the_trigger_back(tmp_path: Path) -> None:
    engine, host, alog, asked = _asking(tmp_path)
    forged(engine, 100)
    engine.tick(100)
    engine.signals.probes["site"].record(True, "200", 100.1)
    engine.tick(100.1)
    assert records(alog, "trigger_held_back") == []
    engine.tick(101.5)  # the probe's timeout (1 s) and a little: due
    [held] = records(alog, "trigger_held_back")
    assert held["guard"] == "uncorroborated"
    engine.tick(102)
    assert asked == ["probe site", "service fpm"]  # asked once per hold, not once per tick
    assert host.calls == []


def test_a_trigger_that_stops_holding_while_asking_is_still_recorded(tmp_path: Path) -> None:
    engine, _, alog, _ = _asking(tmp_path)
    forged(engine, 100)
    engine.tick(100)
    engine.tick(121)  # the forged lines left the 20 s window before any answer
    [held] = records(alog, "trigger_held_back")
    assert held["guard"] == "uncorroborated"
    assert held["readings"][0]["holds"] is True  # what it saw while it held
    assert not engine.corroboration.asking
