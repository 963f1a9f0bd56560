"""An engine wired as the daemon wires it (remediator.wiring), on a config written by the test,
with a real state dir and action log in ``tmp_path`` and the test's own action functions."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from remediator.actionlog import ActionLog
from remediator.actions.base import ActionFn
from remediator.causes import Cause
from remediator.detect import Signals
from remediator.engine import Engine
from remediator.guards import Guards
from remediator.load import Loaded, load
from remediator.playbook import walk_conditions
from remediator.system import System
from remediator.wiring import Wiring, wire


def load_text(tmp_path: Path, text: str) -> Loaded:
    """``text`` (dedented) as ``tmp_path/r.yaml`` beside an empty ``playbooks.d``, loaded."""
    cfg = tmp_path / "r.yaml"
    cfg.write_text(textwrap.dedent(text))
    (tmp_path / "playbooks.d").mkdir(exist_ok=True)
    return load(cfg)


def wired(tmp_path: Path, text: str, actions: dict[str, Any], *, probes: bool = True) -> Wiring:
    """The wiring of config ``text``; the action log is ``tmp_path/actions.jsonl``."""
    loaded = load_text(tmp_path, text)
    assert loaded.ok and loaded.config is not None, loaded.all_errors()
    return wire(
        loaded.config,
        loaded.playbooks,
        system=System(),
        guards=Guards(tmp_path / "state", loaded.config.guards, 0),
        actionlog=ActionLog(tmp_path / "actions.jsonl", journal=False),
        actions=actions,
        probes=probes,
    )


def engine_of(cfg: Path, actions: dict[str, ActionFn]) -> tuple[Engine, Signals]:
    """An engine on config file ``cfg`` (its state dir and action log), and its signals."""
    loaded = load(cfg)
    assert loaded.config is not None, loaded.all_errors()
    signals = Signals.for_conditions(c for p in loaded.playbooks for c in walk_conditions(p.when))
    engine = Engine(
        loaded.config,
        loaded.playbooks,
        signals,
        Guards(loaded.config.state_dir, loaded.config.guards, 0),
        ActionLog(loaded.config.action_log, journal=False),
        System(),
        actions,
    )
    return engine, signals


def resolved_incident(cfg: Path, restart: ActionFn, evidence: Iterable[str] = ()) -> None:
    """One incident resolved by the real engine into the action log of config file ``cfg``
    (sources ``acc`` and ``err``, service ``fpm``, a playbook that restarts it): ``fpm`` seen
    down, 30 x 502 with nginx's "connection refused" at t=100 (``evidence`` lines sampled on
    ``acc`` first), 200s again at t=101; the step is ``restart``."""
    engine, signals = engine_of(cfg, {"restart": restart})
    for line in evidence:
        signals.sample("acc", line)
    signals.services["fpm"].record(True, "unit failed (Result=signal)", 100)  # corroborates
    signals.statuses["acc"].add(100, 502, 30)
    signals.causes["err"].add(100, Cause.UPSTREAM_REFUSED, 30)
    engine.tick(100)
    signals.statuses["acc"].add(101, 200, 30)
    engine.tick(101.5)
    assert engine.closed and engine.closed[0]["outcome"] == "resolved"
