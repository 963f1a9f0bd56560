"""The engine's side of the fleet: whether a playbook may act given the fleet's latest answer,
and the action-log records of a slot. Nothing of etcd is imported here (the engine imports
this module; the gate that answers is built only with a ``fleet:`` section)."""

from __future__ import annotations

from typing import Any, Protocol

from remediator.events import Event
from remediator.fleet.decision import Answer, Decision
from remediator.fleet.options import Fleet
from remediator.guards import Guard, Verdict


class Slots(Protocol):
    """The fleet's slots (remediator.fleet.gate.Gate): asked for without waiting."""

    def want(self, playbook: str) -> Decision: ...
    def opened(self, playbook: str, incident: str) -> None: ...
    def release(self) -> None: ...
    def withdraw(self) -> None: ...
    def lost(self) -> str | None: ...
    @property
    def wanted(self) -> bool: ...


# The fleet has not answered yet: wait for it (the gate wakes the loop), record nothing.
ASKING = Verdict(False, Guard.FLEET, "")

Slot = dict[str, Any]  # what an incident's opening record says of its slot (``fleet``)


def ask(
    options: Fleet, slots: Slots | None, playbook: str, *, dry_run: bool
) -> tuple[Verdict, Slot | None]:
    """Whether ``playbook`` (which needs a slot) may act now, and what its opening record
    says of the slot. Never waits: :data:`ASKING` until the fleet has answered."""
    if dry_run:
        return Verdict.ok(), {"slot": "none", "reason": "dry run: no fleet slot taken"}
    if slots is None:  # replay, tests: no etcd here
        return Verdict.ok(), {"slot": "none", "reason": "the fleet is not consulted here"}
    decision = slots.want(playbook)
    if decision.answer is Answer.PENDING:
        return ASKING, None
    if decision.answer is Answer.GRANTED:
        return Verdict.ok(), {
            "slot": "granted",
            "pool": options.pool,
            "max_concurrent": options.max_concurrent,
            "holders": [h.record() for h in decision.holders],
        }
    if decision.answer is Answer.UNREACHABLE and options.on_unreachable == "act":
        return Verdict.ok(), {
            "slot": "alone",
            "pool": options.pool,
            "reason": "fleet unreachable: acting alone (on_unreachable: act)",
            "error": decision.detail,
        }
    return Verdict(False, Guard.FLEET, decision.reason()), None


def taken(options: Fleet, slot: Slot, playbook: str, incident: str) -> dict[str, Any] | None:
    """The record of the slot an incident acts in, or of its acting alone; None for none."""
    base = {"incident": incident, "playbook": playbook, "pool": options.pool}
    if slot["slot"] == "alone":
        return {
            "event": Event.FLEET_ACTING_ALONE,
            **base,
            "reason": slot["reason"],
            "error": slot.get("error"),
        }
    if slot["slot"] != "granted":
        return None
    hosts = ", ".join(h["host"] for h in slot["holders"])
    return {
        "event": Event.FLEET_SLOT_ACQUIRED,
        **base,
        "reason": (
            f"a slot of pool {options.pool}: {len(slot['holders'])} of "
            f"{options.max_concurrent} held now ({hosts})"
        ),
    }


def lost(options: Fleet, playbook: str, incident: str, why: str) -> dict[str, Any]:
    """The record of a slot lost while the incident runs: what the daemon does now."""
    return {
        "event": Event.FLEET_SLOT_LOST,
        "incident": incident,
        "playbook": playbook,
        "pool": options.pool,
        "reason": (
            f"{why}: another host may take it; the step under way carries on, and no "
            "further changing step runs until this host holds a slot again"
        ),
    }


def released(options: Fleet, playbook: str, incident: str, outcome: str) -> dict[str, Any]:
    return {
        "event": Event.FLEET_SLOT_RELEASED,
        "incident": incident,
        "playbook": playbook,
        "pool": options.pool,
        "reason": f"the incident is over ({outcome})",
    }
