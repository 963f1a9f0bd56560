"""After an incident: what came before it is not evidence, and a held step is not a failure."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from remediator.actionlog import ActionLog, read
from remediator.causes import Cause
from remediator.detect import Signals
from remediator.engine import Engine
from remediator.guards import Guards
from remediator.load import load
from remediator.playbook import walk_conditions
from remediator.system import System
from tests.test_engine import Host

CONFIG = """
sources:
  acc: {type: access_log, path: /var/log/nginx/access.log}
  err: {type: error_log, path: /var/log/nginx/error.log, format: nginx-error}
  site: {type: probe, url: "http://127.0.0.1:1/"}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 5s}
playbooks:
  - name: fpm-down
    priority: 10
    when:
      all:
        - status_rate: {source: acc, status: 502, window: 20s, at_least: 10}
        - error_cause: {source: err, cause: upstream_refused, window: 20s}
    steps:
      - restart: fpm
        verify: {within: 5s, settle: 0s}  # a settle would overlap the grace tested here
  - name: fpm-saturated
    priority: 20
    when:
      all:
        - status_rate: {source: acc, status: 502, window: 20s, at_least: 10}
        - error_cause: {source: err, cause: upstream_overloaded, window: 20s}
    steps:
      - reload: fpm
        verify: {within: 5s, settle: 0s}  # a settle would overlap the grace tested here
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Engine, Host, Signals, Path]:
    cfg_file = tmp_path / "r.yaml"
    cfg_file.write_text(textwrap.dedent(CONFIG))
    (tmp_path / "playbooks.d").mkdir()
    loaded = load(cfg_file)
    assert loaded.ok and loaded.config is not None, loaded.all_errors()
    signals = Signals.for_conditions(
        [c for pb in loaded.playbooks for c in walk_conditions(pb.when)]
    )
    host = Host()
    actions = {n: host.action(n) for n in ("reload", "restart")}
    alog = ActionLog(tmp_path / "actions.jsonl", journal=False)
    guards = Guards(tmp_path / "state", loaded.config.guards, 0)
    engine = Engine(loaded.config, loaded.playbooks, signals, guards, alog, System(), actions)
    return engine, host, signals, tmp_path / "actions.jsonl"


def bad(signals: Signals, now: float, cause: Cause) -> None:
    """502s with their cause, and the probe failing (which corroborates the log lines)."""
    signals.probes["site"].record(False, "HTTP 502", now)
    signals.statuses["acc"].add(now, 502, 40)
    signals.causes["err"].add(now, cause, 40)


def resolve_by_restart(engine: Engine, host: Host, signals: Signals) -> None:
    bad(signals, 100, Cause.UPSTREAM_REFUSED)
    bad(signals, 100, Cause.UPSTREAM_OVERLOADED)  # both playbooks' triggers hold
    engine.tick(100)
    assert host.calls == ["restart fpm"]
    signals.statuses["acc"].add(101, 200, 50)
    engine.tick(101)
    assert engine.incident is None


def test_evidence_from_before_a_resolved_incident_triggers_no_other_playbook(
    setup: tuple[Engine, Host, Signals, Path],
) -> None:
    engine, host, signals, alog = setup
    resolve_by_restart(engine, host, signals)
    for t in range(102, 110):  # grace over at 105; the old 502s are still in the 20 s window
        signals.statuses["acc"].add(t, 200, 50)
        engine.tick(t)
    assert host.calls == ["restart fpm"]
    assert [r["event"] for r in read(alog)].count("incident_opened") == 1
    bad(signals, 110, Cause.UPSTREAM_OVERLOADED)  # a new saturation: new evidence
    engine.tick(110.5)
    assert host.calls == ["restart fpm", "reload fpm"]


def test_steps_held_by_the_start_up_grace_hold_the_trigger_and_open_no_breaker(
    setup: tuple[Engine, Host, Signals, Path],
) -> None:
    engine, host, signals, alog = setup
    resolve_by_restart(engine, host, signals)
    bad(signals, 102, Cause.UPSTREAM_OVERLOADED)  # new evidence within the grace
    engine.tick(102.5)
    assert host.calls == ["restart fpm"]
    recs = list(read(alog))
    held = [r for r in recs if r["event"] == "trigger_held_back"]
    assert [(r["playbook"], r["guard"]) for r in held] == [("fpm-saturated", "startup_grace")]
    assert not [r for r in recs if r["event"] == "breaker_opened"]
    assert [r["event"] for r in recs].count("incident_opened") == 1
    bad(signals, 105.5, Cause.UPSTREAM_OVERLOADED)  # still saturated once the grace is over
    engine.tick(105.6)
    assert host.calls == ["restart fpm", "reload fpm"]
