"""The engine's state machine on a clock set by the test.

Actions here are small real functions (the real ones are tested against real servers in
their own tests and end to end); the signals are fed as the log watcher would feed them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from remediator.actionlog import ActionLog, read
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.causes import Cause
from remediator.detect import Signals
from remediator.engine import Engine
from remediator.guards import Guards
from remediator.load import load
from remediator.playbook import walk_conditions
from remediator.state import HostLock
from remediator.system import DryRunSystem, System

CONFIG = """
sources:
  acc: {type: access_log, path: /var/log/nginx/access.log}
  err: {type: error_log, path: /var/log/nginx/error.log, format: nginx-error}
  site: {type: probe, url: "http://127.0.0.1:1/"}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s}
notifiers:
  oncall: {url: "http://127.0.0.1:1/hook"}
playbooks:
  - name: fpm-down
    when:
      all:
        - status_rate: {source: acc, status: 502, window: 20s, at_least: 10, ratio: 5%}
        - error_cause: {source: err, cause: upstream_refused, window: 20s}
    steps:
      - reload: fpm
        verify: {within: 5s}
      - restart: fpm
        verify: {within: 5s}
    limits: {cooldown: 1m, max_runs: 2, per: 1h}
    on_exhausted: {notify: oncall, stop: true}
"""


class Host:
    """Records the actions the engine took, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.rolled_back = False

    def action(self, name: str, outcome: Outcome = Outcome.OK) -> Any:
        def run(args: Any, ctx: ActionContext) -> ActionResult:
            self.calls.append(f"{name} {getattr(args, 'service', getattr(args, 'notifier', ''))}")
            return ActionResult(outcome, f"{name} done", target=getattr(args, "service", None))

        return run


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Engine, Host, Signals, Path]:
    cfg_file = tmp_path / "r.yaml"
    cfg_file.write_text(textwrap.dedent(CONFIG))
    (tmp_path / "playbooks.d").mkdir()
    loaded = load(cfg_file)
    assert loaded.ok and loaded.config is not None, loaded.all_errors()
    conds = [c for pb in loaded.playbooks for c in walk_conditions(pb.when)]
    signals = Signals.for_conditions(conds)
    host = Host()
    actions = {n: host.action(n) for n in ("reload", "restart", "notify")}
    alog = ActionLog(tmp_path / "actions.jsonl", journal=False)
    guards = Guards(tmp_path / "state", loaded.config.guards, 0)
    engine = Engine(loaded.config, loaded.playbooks, signals, guards, alog, System(), actions)
    return engine, host, signals, tmp_path / "actions.jsonl"


def outage(signals: Signals, now: float) -> None:
    """An outage as the host sees it: 502s and their cause in the logs, the probe failing
    (what corroborates log lines, see test_corroborate.py)."""
    signals.probes["site"].record(False, "HTTP 502", now)
    signals.statuses["acc"].add(now, 502, 40)
    signals.statuses["acc"].add(now, 200, 10)
    signals.causes["err"].add(now, Cause.UPSTREAM_REFUSED, 40)
    signals.sample("acc", '127.0.0.1 - - [..] "GET / HTTP/1.1" 502 157')


def recovered(engine: Engine, signals: Signals, start: int, seconds: int = 4) -> None:
    """Users get 200s again from ``start`` on, for ``seconds`` (past the 3 s settle)."""
    for t in range(start, start + seconds):
        signals.statuses["acc"].add(t, 200, 50)
        engine.tick(t)


def events(path: Path) -> list[str]:
    return [r["event"] for r in read(path)]


def test_a_verified_first_step_resolves_the_incident(
    setup: tuple[Engine, Host, Signals, Path],
) -> None:
    engine, host, signals, alog = setup
    outage(signals, 100)
    engine.tick(100)
    assert host.calls == ["reload fpm"]
    signals.statuses["acc"].add(101, 200, 50)  # users get 200s again...
    engine.tick(101)
    assert "incident_closed" not in events(alog)  # ...but one good second proves little
    recovered(engine, signals, 102)
    assert engine.incident is None
    assert events(alog) == [
        "incident_opened",
        "action_intent",
        "action_result",
        "verify_passed",
        "incident_closed",
    ]
    opened = next(read(alog))
    assert opened["evidence"]["lines"]["acc"] == ['127.0.0.1 - - [..] "GET / HTTP/1.1" 502 157']
    assert "40 x 502 of 50 requests (80.0%) in 20s on acc" in opened["reason"]
    closed = list(read(alog))[-1]
    assert closed["outcome"] == "resolved"


def test_a_step_that_does_not_help_escalates_then_stops_and_alerts(
    setup: tuple[Engine, Host, Signals, Path],
) -> None:
    engine, host, signals, alog = setup
    outage(signals, 100)
    engine.tick(100)
    for t in range(101, 112):
        signals.statuses["acc"].add(t, 502, 20)  # still failing
        engine.tick(t)
    assert host.calls == ["reload fpm", "restart fpm", "notify oncall"]
    assert engine.incident is None
    ev = events(alog)
    assert ev.count("verify_failed") == 2
    assert ev.index("breaker_opened") == ev.index("incident_closed") - 1
    # the breaker now holds the playbook back, and says so once
    for t in range(200, 205):
        outage(signals, t)
        engine.tick(t)
    held = [r for r in read(alog) if r["event"] == "trigger_held_back"]
    assert len(held) == 1
    assert held[0]["guard"] == "breaker_open"
    assert host.calls == ["reload fpm", "restart fpm", "notify oncall"]


def test_no_traffic_and_no_probe_is_no_evidence_of_recovery(
    setup: tuple[Engine, Host, Signals, Path],
) -> None:
    engine, _, signals, alog = setup
    outage(signals, 100)
    engine.tick(100)
    engine.tick(106)
    failed = [r for r in read(alog) if r["event"] == "verify_failed"]
    assert failed[0]["reason"].startswith("no evidence of recovery")


def test_unwritable_action_log_means_no_action(setup: tuple[Engine, Host, Signals, Path]) -> None:
    engine, host, signals, alog = setup
    alog.mkdir()  # the log's path is now a directory: every write fails
    outage(signals, 100)
    engine.tick(100)
    assert host.calls == []
    assert engine.incident is None


def test_cooldown_holds_back_the_next_incident(setup: tuple[Engine, Host, Signals, Path]) -> None:
    engine, host, signals, alog = setup
    outage(signals, 100)
    engine.tick(100)
    recovered(engine, signals, 101)
    outage(signals, 130)
    engine.tick(130)
    assert host.calls == ["reload fpm"]
    held = [r for r in read(alog) if r["event"] == "trigger_held_back"]
    assert held[0]["guard"] == "cooldown"


def test_budget_survives_an_engine_restart_mid_incident(
    setup: tuple[Engine, Host, Signals, Path], tmp_path: Path
) -> None:
    engine, host, signals, _ = setup
    outage(signals, 100)
    engine.tick(100)  # an incident is open, its reload done: the daemon dies here
    again = Engine(
        engine.config,
        engine.playbooks,
        signals,
        Guards(tmp_path / "state", engine.config.guards, 101),
        engine.actionlog,
        System(),
        engine.actions,
    )
    outage(signals, 101)
    again.tick(101)
    assert host.calls == ["reload fpm"]  # the restarted daemon respects the cooldown...
    assert again.incident is None


def test_dry_run_records_would_run_and_marks_every_record(
    setup: tuple[Engine, Host, Signals, Path],
) -> None:
    live, host, signals, alog = setup
    actions = {
        "reload": host.action("reload", Outcome.WOULD_RUN),
        "restart": host.action("restart", Outcome.WOULD_RUN),
    }
    engine = Engine(
        live.config, live.playbooks, signals, live.guards, live.actionlog, DryRunSystem(), actions
    )
    outage(signals, 100)
    engine.tick(100)
    recs = list(read(alog))
    assert all(r["dry_run"] is True for r in recs)
    assert recs[2]["outcome"] == "would_run"


def test_trigger_by_hand_runs_without_the_trigger_holding(
    setup: tuple[Engine, Host, Signals, Path],
) -> None:
    engine, host, _, alog = setup
    pb = engine.playbooks[0]
    assert engine.trigger(pb, 100, who="alice").allowed
    assert host.calls == ["reload fpm"]
    opened = next(read(alog))
    assert opened["manual"] is True and opened["reason"] == "triggered by hand by alice"


def test_trigger_goes_through_the_guards_unless_forced_which_is_logged(
    setup: tuple[Engine, Host, Signals, Path],
) -> None:
    engine, host, _signals, alog = setup
    pb = engine.playbooks[0]
    engine.guards.open_breaker(pb.name, 50, "steps exhausted")
    verdict = engine.trigger(pb, 100)
    assert not verdict.allowed and host.calls == []
    assert engine.trigger(pb, 100, force=True).allowed
    assert host.calls == ["reload fpm"]
    opened = next(r for r in read(alog) if r["event"] == "incident_opened")
    assert "forced past: breaker open" in opened["reason"]


def test_a_second_process_holding_the_host_lock_keeps_the_engine_from_acting(
    setup: tuple[Engine, Host, Signals, Path], tmp_path: Path
) -> None:
    engine, host, signals, alog = setup
    other = HostLock(tmp_path / "state" / "act.lock")  # as a `remediator trigger` would hold it
    assert other.acquire()
    engine.lock = HostLock(tmp_path / "state" / "act.lock")
    outage(signals, 100)
    engine.tick(100)
    assert host.calls == []
    held = [r for r in read(alog) if r["event"] == "trigger_held_back"]
    assert held[0]["reason"] == "another remediator process is acting"
    other.release()
    engine.tick(101)
    assert host.calls == ["reload fpm"]
