"""Triggers that hold but may not run now: each recorded once per reason
(``trigger_held_back``), so a guard that holds for an hour writes one line, not thousands."""

from __future__ import annotations

from typing import Any

from remediator import corroborate, evidence
from remediator.actions.base import Outcome
from remediator.detect import Reading, Signals
from remediator.events import Event
from remediator.guards import Guard, Verdict
from remediator.incident import reading
from remediator.playbook import Playbook
from remediator.records import Records


class HoldBacks:
    def __init__(self, records: Records, signals: Signals) -> None:
        self._records = records
        self._signals = signals
        self._last: dict[str, str] = {}  # playbook -> the hold last recorded

    def record(
        self,
        pb: Playbook,
        verdict: Verdict,
        readings: list[Reading],
        *,
        corroboration: dict[str, Any] | None = None,
    ) -> None:
        """Record that ``verdict`` holds ``pb`` back, unless that was the last thing said."""
        key = f"{verdict.guard}"
        if verdict.guard is Guard.FLEET:  # who holds the slots is news each time it changes
            key += f": {verdict.reason}"
        if self._last.get(pb.name) == key:
            return
        self._last[pb.name] = key
        rec: dict[str, Any] = {
            "event": Event.TRIGGER_HELD_BACK,
            "playbook": pb.name,
            "outcome": Outcome.HELD,
            "reason": verdict.reason,
            "guard": verdict.guard,
            "readings": [reading(r) for r in readings],
        }
        if corroboration is not None:
            rec["corroboration"] = corroboration
            rec["lines"] = evidence.lines(self._signals, pb.when)
        self._records.write(rec, must=False)

    def uncorroborated(self, pb: Playbook, held: corroborate.Held) -> None:
        """A trigger on log lines alone that nothing corroborated: held back, nothing counted."""
        reason = (
            f"uncorroborated: the trigger rests on {corroborate.forged_what(held.need)} only, "
            f"which whoever can write them can forge; waiting for {held.judgement.missing}"
        )
        self.record(
            pb,
            Verdict(False, Guard.UNCORROBORATED, reason),
            held.readings,
            corroboration=held.judgement.record(held.need),
        )

    def forget(self, playbook: str) -> None:
        """``playbook`` runs, or its trigger stopped holding: its next hold is news."""
        self._last.pop(playbook, None)

    def by_fleet(self, playbook: str) -> str | None:
        """Why the fleet holds ``playbook`` back now (slots busy, etcd unreachable), if so."""
        key, prefix = self._last.get(playbook, ""), f"{Guard.FLEET}: "
        return key.removeprefix(prefix) if key.startswith(prefix) else None
