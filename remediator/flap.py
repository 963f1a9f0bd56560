"""Flapping: a remedy that "works" while its trigger comes straight back is not working.

Nagios-style flap detection over a playbook's recent incidents. An incident resolved by a
step, whose trigger holds again (corroborated, as for any incident) within ``returns_within``
of the close, is a *return*. ``after`` returns within ``window`` make the playbook flapping:
its next incident does not repeat the steps that kept resolving it only for a moment, and
escalates to the playbook's next step (scale instead of restart), or, with none left, ends
exhausted (``on_exhausted``: alert, breaker).

It only ever skips steps: it opens no incident the guards would not open, adds no step and
passes no guard. What it keeps lives in the guard book (``PlaybookBook``), so it survives a
daemon restart. Everything takes ``now`` (monotonic seconds) from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from remediator.schema import Duration, Int, opt


@dataclass(frozen=True)
class Flap:
    """Flap detection: a playbook whose incidents are resolved, and whose trigger returns
    within `returns_within` of each close, `after` times within `window`, is flapping. Its
    next incident does not repeat the step that kept resolving them: it escalates to the
    playbook's next step, or, with none left, ends exhausted (`on_exhausted`: alert and
    breaker). Only a corroborated trigger counts as returned; flapping only ever skips steps
    (every guard still applies)."""

    after: int = opt(
        Int(min=0, max=100),
        "Returns within `window` that make the playbook flapping (0: never).",
        3,
    )
    returns_within: float = opt(
        Duration(min=0.1, max=3600),
        "A trigger that holds again this soon after an incident was resolved has returned.",
        60.0,
    )
    window: float = opt(Duration(min=1, max=7 * 86400), "How far back returns are counted.", 1800.0)


@dataclass(frozen=True)
class Return:
    """A resolved incident whose trigger came back soon after."""

    closed: float  # when the incident was resolved (monotonic)
    after: float  # how long the trigger stayed away
    step: int  # the index of the step that resolved it


@dataclass(frozen=True)
class Flapping:
    """A playbook found flapping: the returns that say so, and where its next incident starts."""

    returns: tuple[Return, ...]
    start: int  # index of the first step to run; len(steps) when none is left
    steps: int  # how many steps the playbook has
    since: float  # seconds from the first counted close to now

    @property
    def escalates(self) -> bool:
        return self.start < self.steps

    def record(self) -> dict[str, Any]:
        """The ``flapping`` field of the incident's records."""
        return {
            "returns": len(self.returns),
            "in_s": round(self.since, 1),
            "returned_after_s": [round(r.after, 1) for r in self.returns],
            "resolved_by_steps": [r.step + 1 for r in self.returns],
            "skipped_steps": list(range(1, self.start + 1)),
            "escalated_to_step": self.start + 1 if self.escalates else None,
        }

    def reason(self, next_step: str) -> str:
        """``next_step``: how the step escalated to is called (ignored when none is left)."""
        worst = max(r.after for r in self.returns)
        what = (
            f"escalating to step {self.start + 1} ({next_step})"
            if self.escalates
            else "no further step to escalate to: not repeating the remedy"
        )
        return (
            f"flapping: resolved {len(self.returns)} times in {seconds(self.since)}, the "
            f"trigger returned within {seconds(worst)} each time; {what}"
        )


def seconds(value: float) -> str:
    """``4.5s``, ``95s``: a span said in records."""
    return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"


def returned(flap: Flap, resolved: float | None, step: int, now: float) -> Return | None:
    """The return of the incident resolved at ``resolved`` by step ``step``, now that its
    trigger holds again at ``now``; None when it stayed away longer than ``returns_within``."""
    if resolved is None or now - resolved > flap.returns_within:
        return None
    return Return(resolved, max(0.0, now - resolved), step)


def recent(flap: Flap, returns: list[Return], now: float) -> list[Return]:
    """The returns still within ``window`` at ``now``."""
    return [r for r in returns if r.closed > now - flap.window]


def flapping(flap: Flap, returns: list[Return], steps: int, now: float) -> Flapping | None:
    """Whether a playbook with ``steps`` steps and these ``returns`` is flapping at ``now``."""
    counted = recent(flap, returns, now)
    if flap.after <= 0 or len(counted) < flap.after:
        return None
    start = min(steps, max(r.step for r in counted) + 1)
    return Flapping(tuple(counted), start, steps, now - counted[0].closed)
