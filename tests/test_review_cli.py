"""``remediator log``, ``pause``, ``resume`` and ``reset`` on a real state dir and action log."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from remediator.actionlog import ActionLog
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.causes import Cause
from remediator.cli import main
from remediator.detect import Signals
from remediator.engine import Engine
from remediator.guards import Guard, Guards
from remediator.load import load
from remediator.playbook import walk_conditions
from remediator.system import System

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
    loaded = load(cfg)
    assert loaded.config is not None
    signals = Signals.for_conditions(c for p in loaded.playbooks for c in walk_conditions(p.when))
    engine = Engine(
        loaded.config,
        loaded.playbooks,
        signals,
        Guards(loaded.config.state_dir, loaded.config.guards, 0),
        ActionLog(loaded.config.action_log, journal=False),
        System(),
        {"restart": _restart},
    )
    signals.statuses["acc"].add(100, 502, 30)
    signals.causes["err"].add(100, Cause.UPSTREAM_REFUSED, 30)
    engine.tick(100)
    signals.statuses["acc"].add(101, 200, 30)
    engine.tick(101.5)
    assert engine.closed and engine.closed[0]["outcome"] == "resolved"
    return cfg


def test_log_shows_the_incident_as_a_timeline(incident: Path) -> None:
    rc, out, _ = run("-c", str(incident), "log")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("incident ") and "fpm-down  resolved" in lines[0]
    assert "opened: 30 x 502 of 30 requests (100.0%) in 20s on acc" in out
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
    import time  # noqa: PLC0415

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
