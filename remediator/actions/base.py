"""What every action implementation receives and returns.

An action is a function ``(args, ctx) -> ActionResult`` registered by name in
``remediator.actions.registry``; ``args`` is its declared argument dataclass
(``remediator.actions.declare``). Actions touch the host only through ``ctx.system``, so a dry
run is the same code with a :class:`~remediator.system.DryRunSystem` underneath.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from remediator.config import Notifier, Service
from remediator.events import Outcome
from remediator.system import System


@dataclass(frozen=True)
class ActionContext:
    """What an action may use: the seam, the configured services and notifiers, and names for
    the log and for command templates (never anything taken from a log line)."""

    system: System
    services: dict[str, Service]
    notifiers: dict[str, Notifier]
    playbook: str
    incident: str
    # What tripped (with its counts), what was done, the outcome: filled by the engine, carried
    # by every notification.
    summary: str = ""
    opened_at: str = ""  # when the incident opened (RFC 3339, UTC): an alert's startsAt
    # The incident's page (remediator/pages.py), written when it closes; "" when none is.
    report: str = ""


@dataclass
class ActionResult:
    outcome: Outcome
    reason: str
    target: str | None = None  # the service (or notifier) acted on
    details: dict[str, Any] = field(default_factory=dict)  # evidence: outputs, pids, edits
    restarted: bool = False  # the service was (re)started: its start-up grace begins
    rollback: Callable[[], ActionResult] | None = None  # undo an edit that did not help


ActionFn = Callable[[Any, ActionContext], ActionResult]

__all__ = ["ActionContext", "ActionFn", "ActionResult", "Outcome"]
