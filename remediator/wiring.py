"""One wiring for every way remediator runs: sources -> signals -> engine -> system.

``run`` (the daemon), ``trigger`` (one-shot), ``replay`` and the tests all build their detector
signals, their feeder and their engine here, so the same incident read live, replayed or run
in dry run meets the same conditions, the same evidence and the same verification.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from remediator.actionlog import ActionLog
from remediator.actions.base import ActionFn
from remediator.config import Config, FpmStatusSource, ProbeSource
from remediator.detect import ProbeState, Signals
from remediator.engine import Engine
from remediator.executor import Executor
from remediator.feed import Feeder
from remediator.fpmdetect import FpmState
from remediator.guards import Guards
from remediator.playbook import Playbook, walk_conditions
from remediator.state import HostLock
from remediator.system import System
from remediator.verify import Verifier


@dataclass
class Wiring:
    signals: Signals
    feeder: Feeder
    engine: Engine


def wire(
    config: Config,
    playbooks: list[Playbook],
    *,
    system: System,
    guards: Guards,
    actionlog: ActionLog,
    actions: Mapping[str, ActionFn],
    executor: Executor | None = None,
    snapshot: Callable[[], dict[str, Any]] | None = None,
    wall: Callable[[], float] = time.time,
    lock: HostLock | None = None,
    probes: bool = True,
) -> Wiring:
    """Signals for every condition of ``playbooks``, a feeder for the configured sources and
    an engine over them. ``probes`` False (replay): no probe ever answers, so verification
    judges probe-verified steps on the logs' own future and says so, and no probe or service
    state can corroborate a trigger on log lines: corroboration is assumed, and said so."""
    conds = [c for pb in playbooks for c in walk_conditions(pb.when)]
    signals = Signals.for_conditions(conds)
    if probes:  # probes run even when no playbook names them (status shows them)
        for name, src in config.sources.items():
            if isinstance(src, ProbeSource):
                signals.probes.setdefault(name, ProbeState())
            elif isinstance(src, FpmStatusSource):
                signals.fpm.setdefault(name, FpmState())
    feeder = Feeder(config, signals)
    engine = Engine(
        config,
        playbooks,
        signals,
        guards,
        actionlog,
        system,
        actions,
        executor=executor,
        snapshot=snapshot,
        wall=wall,
        lock=lock,
        verifier=Verifier(signals, probes=probes),
        observed=probes,
    )
    return Wiring(signals, feeder, engine)
