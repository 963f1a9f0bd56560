"""A step that cannot act (an untrusted pid file, a master that is not the service's) is no
failed run: it opens no breaker, uses neither the playbook's runs nor the service's actions,
starts no start-up grace, and the operator is still alerted.

The engine runs on a clock set by the test, with small real action functions; the real
refusals are proved against real PHP-FPM in test_attack_pidfile.py.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
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
from remediator.system import System

CONFIG = """
sources:
  acc: {type: access_log, path: /var/log/nginx/access.log}
  err: {type: error_log, path: /var/log/nginx/error.log, format: nginx-error}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 10m, max_actions: 2}
notifiers:
  oncall: {url: "http://127.0.0.1:1/hook"}
playbooks:
  - name: fpm-down
    when:
      error_cause: {source: err, cause: upstream_refused, window: 20s}
    steps:
      - reload: fpm
        verify: {within: 5s}
      - restart: fpm
        verify: {within: 5s}
    limits: {cooldown: 1m, max_runs: 1, per: 1h, backoff: false}
    on_exhausted: {notify: oncall, stop: true}
    corroborate: none  # the accounting alone here; corroboration is test_corroborate's
"""

Engine_ = tuple[Engine, list[str], Callable[[list[Outcome]], None], Path]


@pytest.fixture
def setup(tmp_path: Path) -> Engine_:
    cfg_file = tmp_path / "r.yaml"
    cfg_file.write_text(textwrap.dedent(CONFIG))
    (tmp_path / "playbooks.d").mkdir()
    loaded = load(cfg_file)
    assert loaded.ok and loaded.config is not None, loaded.all_errors()
    conds = [c for pb in loaded.playbooks for c in walk_conditions(pb.when)]
    signals = Signals.for_conditions(conds)
    calls: list[str] = []
    outcomes: list[Outcome] = []

    def action(name: str) -> Any:
        def run(args: Any, ctx: ActionContext) -> ActionResult:
            calls.append(name)
            outcome = outcomes.pop(0) if name != "notify" else Outcome.OK
            return ActionResult(outcome, f"{name}: {outcome}", target=getattr(args, "service", ""))

        return run

    actions = {n: action(n) for n in ("reload", "restart", "notify")}
    alog = ActionLog(tmp_path / "actions.jsonl", journal=False)
    guards = Guards(tmp_path / "state", loaded.config.guards, 0)
    engine = Engine(loaded.config, loaded.playbooks, signals, guards, alog, System(), actions)
    engine.signals.causes["err"].add(0, Cause.UPSTREAM_REFUSED, 5)

    def will(seq: list[Outcome]) -> None:
        outcomes[:] = seq

    return engine, calls, will, tmp_path / "actions.jsonl"


def _incident(engine: Engine, now: float) -> None:
    engine.signals.causes["err"].add(now, Cause.UPSTREAM_REFUSED, 5)
    engine.tick(now)
    assert engine.incident is None  # inline executor: over within the tick


def _closed(path: Path) -> list[str]:
    return [str(r["outcome"]) for r in read(path) if r["event"] == "incident_closed"]


def test_cannot_act_steps_close_as_cannot_act_alert_and_open_no_breaker(setup: Engine_) -> None:
    engine, calls, will, log = setup
    will([Outcome.CANNOT_ACT, Outcome.CANNOT_ACT])
    _incident(engine, 1)
    assert calls == ["reload", "restart", "notify"]  # a person is told
    assert _closed(log) == ["cannot_act"]
    assert "breaker_opened" not in [r["event"] for r in read(log)]
    notify = [r for r in read(log) if r["event"] == "notify"]
    assert notify and notify[0]["outcome"] == "ok"


def test_cannot_act_uses_no_run_no_service_action_and_no_start_up_grace(
    setup: Engine_,
) -> None:
    """max_runs 1 per hour and max_actions 2: were they used, the second incident would be
    held back (and by the start-up grace of ten minutes the restart would begin)."""
    engine, calls, will, log = setup
    for n, now in enumerate((1.0, 62.0, 123.0)):  # each after the minute of cooldown
        will([Outcome.CANNOT_ACT, Outcome.CANNOT_ACT])
        _incident(engine, now)
        assert _closed(log) == ["cannot_act"] * (n + 1)
    assert calls.count("restart") == 3
    recs = read(log)
    assert not [r for r in recs if r["event"] in ("action_held", "trigger_held_back")]
    # A real attempt is counted again: it runs, fails, and that opens the breaker.
    will([Outcome.FAILED, Outcome.FAILED])
    _incident(engine, 184.0)
    assert _closed(log)[-1] == "exhausted"
    assert [r["event"] for r in read(log)].count("breaker_opened") == 1


def test_the_cooldown_still_spaces_cannot_act_incidents(setup: Engine_) -> None:
    engine, _, will, log = setup
    will([Outcome.CANNOT_ACT, Outcome.CANNOT_ACT])
    _incident(engine, 1.0)
    _incident(engine, 30.0)
    assert _closed(log) == ["cannot_act"]
    held = [r for r in read(log) if r["event"] == "trigger_held_back"]
    assert held and held[0]["guard"] == "cooldown"


def test_a_step_that_fails_after_one_that_cannot_act_is_a_failed_run(setup: Engine_) -> None:
    engine, _, will, log = setup
    will([Outcome.CANNOT_ACT, Outcome.FAILED])
    _incident(engine, 1.0)
    assert _closed(log) == ["exhausted"]
    assert "breaker_opened" in [r["event"] for r in read(log)]
