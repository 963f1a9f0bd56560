"""An incident's seat in the fleet, as the engine sees it: whether a playbook needs one of the
fleet's slots, asking for it without waiting, recording it taken, lost, had again and given
back. The answers come from :mod:`.gate` (set as :attr:`Seat.slots` by the daemon); replay and
tests have none, and are told so in the records."""

from __future__ import annotations

import structlog

from remediator.config import Config
from remediator.fleet import hook
from remediator.guards import Guard, Verdict
from remediator.incident import Incident
from remediator.playbook import Playbook
from remediator.records import Records

log = structlog.get_logger(__name__)

# `remediator trigger` with a fleet: its wish for a slot stays in line this long, so that the
# operator's next attempt finds the fleet's answer (no trigger of the playbook holds meanwhile).
MANUAL_WISH_S = 10.0


class Seat:
    def __init__(self, config: Config, records: Records, *, dry_run: bool) -> None:
        self._config = config
        self._records = records
        self._dry_run = dry_run  # the daemon's own mode: it takes no slot
        self.slots: hook.Slots | None = None  # with a `fleet:` section, live
        self._wish_by_hand_until = 0.0  # monotonic; see MANUAL_WISH_S

    def needs(self, pb: Playbook) -> bool:
        """Whether ``pb`` runs its changing steps only in one of the fleet's slots."""
        return self._config.fleet is not None and pb.fleet and any(s.changes_host for s in pb.steps)

    def ask(self, pb: Playbook, *, dry_run: bool = False) -> tuple[Verdict, hook.Slot | None]:
        """Whether the fleet lets ``pb`` act now, and what its opening record says of it.
        Never waits: the gate answers from its worker thread (``hook.ASKING`` until then)."""
        options = self._config.fleet
        if options is None or not self.needs(pb):
            return Verdict.ok(), None
        return hook.ask(options, self.slots, pb.name, dry_run=self._dry_run or dry_run)

    @property
    def in_line(self) -> bool:
        """Whether this host waits in the fleet's line for a slot."""
        return self.slots is not None and self.slots.wanted

    def leave_line(self, now: float) -> None:
        """No trigger wants the slot any more (nor an operator, lately): leave the line."""
        if self.slots is not None and self.slots.wanted and now >= self._wish_by_hand_until:
            self.slots.withdraw()

    def wished_by_hand(self, now: float) -> None:
        """An operator's trigger asked for a slot: keep the wish a while for the next try."""
        self._wish_by_hand_until = now + MANUAL_WISH_S

    def taken(self, inc: Incident, slot: hook.Slot) -> None:
        """Record the slot ``inc`` acts in (or that it acts alone), and label it."""
        options = self._config.fleet
        rec = hook.taken(options, slot, inc.playbook.name, inc.id) if options else None
        if rec is None:
            return
        if slot["slot"] == "granted":
            inc.slot = True
            if self.slots is not None:
                self.slots.opened(inc.playbook.name, inc.id)
        self._records.write(rec)

    def check_lost(self, inc: Incident) -> None:
        """The fleet took the slot back (its lease expired or was revoked): say so, once."""
        if not inc.slot or self.slots is None or self._config.fleet is None:
            return
        why = self.slots.lost()
        if why is None:
            return
        inc.slot_lost = True
        log.warning("fleet_slot_lost", incident=inc.id, reason=why)
        rec = hook.lost(self._config.fleet, inc.playbook.name, inc.id, why)
        self._records.write(rec, must=False)

    def again(self, inc: Incident) -> Verdict | None:
        """Before a changing step of an incident that lost its slot: None when a slot is
        this host's again (or it acts alone, ``on_unreachable: act``), recorded; otherwise
        why the step is held."""
        verdict, slot = self.ask(inc.playbook)
        if not verdict.allowed or slot is None:
            why = verdict.reason or "the fleet has not answered yet"
            return Verdict(False, Guard.FLEET, f"the fleet slot was lost: {why}")
        inc.slot_lost = False
        self.taken(inc, slot)
        return None

    def release(self, inc: Incident, outcome: str) -> None:
        """``inc`` is over, verified: the next host may act."""
        if not inc.slot or self.slots is None or self._config.fleet is None:
            return
        self.slots.release()
        rec = hook.released(self._config.fleet, inc.playbook.name, inc.id, outcome)
        self._records.write(rec, must=False)
