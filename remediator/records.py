"""The engine's pen: every record an incident leaves goes through :class:`Records`.

It fills in ``dry_run``, fails closed where it must (an intent that cannot be written means
the step is not taken), keeps the last few records for ``status``, and tells the daemon of
each one written (its metrics count them)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from remediator.actionlog import ActionLog, ActionLogError
from remediator.actions.base import ActionResult
from remediator.events import Event


class Records:
    def __init__(self, actionlog: ActionLog, *, dry_run: bool) -> None:
        self.actionlog = actionlog
        self.dry_run = dry_run  # the daemon's own mode: a record's default
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=10)
        # Each record once written; called on the engine's thread.
        self.on_record: Callable[[dict[str, Any]], None] | None = None

    def write(self, rec: dict[str, Any], *, must: bool = True) -> bool:
        """Write ``rec``; False only when it could not be and ``must`` (do not act then)."""
        rec.setdefault("dry_run", self.dry_run)
        try:
            written = self.actionlog.write(rec)
            self.recent.append({k: v for k, v in written.items() if k != "evidence"})
        except ActionLogError:
            if must:
                return False
        else:
            if self.on_record is not None:
                self.on_record(written)
        return True

    def notify(
        self, incident: str, playbook: str, dry_run: bool, name: str, res: ActionResult, why: str
    ) -> None:
        """The record of a notification sent outside a step (exhausted, resolved)."""
        self.write(
            {
                "event": Event.NOTIFY,
                "incident": incident,
                "playbook": playbook,
                "action": "notify",
                "target": name,
                "dry_run": dry_run,
                "outcome": res.outcome,
                "reason": f"{why}: {res.reason}",
                "details": res.details,
            },
            must=False,
        )
