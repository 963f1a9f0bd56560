"""An incident in progress, and the words its records and notifications are made of."""

from __future__ import annotations

import enum
import itertools
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from remediator.actions.base import ActionResult, Outcome
from remediator.detect import Reading
from remediator.events import Event, IncidentOutcome
from remediator.flap import Flapping
from remediator.playbook import Condition, ErrorCause, Playbook, Step, walk_conditions
from remediator.verify import Verification


class Phase(enum.StrEnum):
    ACTING = "acting"
    VERIFYING = "verifying"
    ROLLING_BACK = "rolling_back"
    NOTIFYING = "notifying"  # on_exhausted: alerting a person, off the main loop


@dataclass
class Incident:
    id: str
    playbook: Playbook
    opened: float
    dry_run: bool
    reason: str = ""  # what tripped, with its counts (the opening record's reason)
    manual: str = ""  # who triggered it by hand, if anyone
    accounted: bool = True  # counts in the guard book (not a dry run inside a live daemon)
    step: int = -1
    phase: Phase = Phase.ACTING
    future: Future[Any] | None = None
    result: ActionResult | None = None
    started_step: float = 0.0
    verification: Verification | None = None
    outcomes: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # one line per step: what was done, how it went
    flapping: Flapping | None = None  # found flapping when opened: its first steps are skipped
    opened_at: str = ""  # wall time of the opening, RFC 3339 (an alert's startsAt)
    alerted: set[str] = field(default_factory=set)  # alertmanager notifiers it fired on
    slot: bool = False  # holds one of the fleet's slots, given back when it closes
    slot_lost: bool = False  # ...and lost it: no further changing step until it is had again

    @property
    def current(self) -> Step:
        return self.playbook.steps[self.step]

    def summary(self, outcome: str = "") -> str:
        """What tripped with its counts, what was done, the outcome: for notifications."""
        parts = [f"{self.playbook.name}: {self.reason or 'trigger held'}"]
        if self.done:
            parts.append("done: " + "; ".join(self.done))
        if outcome:
            parts.append(f"outcome: {outcome}")
        return " | ".join(parts)


def new_incident_id(now_wall: float | None = None) -> str:
    t = time.gmtime(now_wall if now_wall is not None else time.time())
    return time.strftime("%Y%m%dT%H%M%SZ", t) + "-" + os.urandom(3).hex()


def step_record(
    inc: Incident, event: Event, outcome: str | None, reason: str, step: Step | None = None
) -> dict[str, Any]:
    step = step or inc.current
    return {
        "event": event,
        "incident": inc.id,
        "playbook": inc.playbook.name,
        "step": inc.step + 1,
        "action": step.action,
        "target": target_of(step),
        "dry_run": inc.dry_run,
        "outcome": outcome,
        "reason": reason,
    }


def service_of(step: Step) -> str | None:
    return getattr(step.args, "service", None)


def target_of(step: Step) -> str | None:
    for attr in ("service", "notifier"):
        value = getattr(step.args, attr, None)
        if value:
            return str(value)
    return None


def step_reason(step: Step) -> str:
    return step.name or f"{step.action} {target_of(step) or ''}".strip()


def done_line(step: Step, result: ActionResult) -> str:
    what = step_reason(step)
    if step.action == "diagnose" and result.reason:  # its findings are what the alert is for
        return f"{what} ({result.reason})"
    if result.outcome is Outcome.OK:
        return what
    return f"{what} ({result.outcome})"


def reading(r: Reading) -> dict[str, Any]:
    out = {"condition": r.condition, "holds": r.holds, **r.detail}
    if r.negated:
        out["negated"] = True
    if not r.known:
        out["known"] = False  # no evidence yet: a `not` of it cannot hold
    return out


def tripped(r: Reading) -> bool:
    """Whether ``r`` is part of why a trigger holds: a leaf that holds, or under a ``not``
    one known not to."""
    return (not r.holds and r.known) if r.negated else r.holds


def describe(r: Reading) -> str:
    d = r.detail
    if r.negated:
        if r.condition == "probe_failing":
            return f"probe {d['probe']} answers ({d['last']})"
        return f"not ({_describe(r)})"
    return _describe(r)


def _describe(r: Reading) -> str:
    d = r.detail
    if r.condition == "status_rate":
        return (
            f"{d['count']} x {d['statuses']} of {d['total']} requests "
            f"({d['ratio'] * 100:.1f}%) in {d['window_s']:g}s on {d['source']}"
        )
    if r.condition == "status_spike":
        return f"{d['statuses']} at {d['rate_per_s']}/s vs baseline {d['baseline_per_s']}/s"
    if r.condition == "error_cause":
        return f"{d['count']} x {'/'.join(d['causes'])} in {d['window_s']:g}s on {d['source']}"
    if r.condition == "service_down":
        how = f"; a crash, seen by {d['seen_by']}" if d.get("definitive") else ""
        return f"{d['service']} down for {d['down_for_s']:g}s ({d['detail']}{how})"
    if r.condition == "fpm_saturated":
        return f"pool on {d['source']} saturated for {d['saturated_for_s']:g}s ({d['last']})"
    if r.condition == "fpm_hung":
        return f"pool on {d['source']} stuck for {d['hung_for_s']:g}s ({d['last']})"
    if r.condition == "fpm_stuck":
        how = (
            f"all {d['workers']} workers stopped"
            if d.get("workers") and d.get("stopped") == d.get("workers")
            else f"no request finished for {d['stuck_for_s']:g}s (span {d['span_s']:g}s)"
        )
        return f"pool on {d['source']} stuck: {how} ({d['last']})"
    if r.condition == "fpm_slow":
        return f"{d['slow_requests_rise']} slow requests in {d['window_s']:g}s on {d['source']}"
    if r.condition == "probe_failing":
        return f"probe {d['probe']} failed {d['consecutive_failures']} times ({d['last']})"
    if r.condition == "dns_mismatch":
        return f"{d['source']} resolving wrong for {d['wrong_for_s']:g}s: {d['detail']}"
    return f"{r.condition}: {d}"


def sources_of(when: Condition) -> list[str]:
    out = []
    for c in walk_conditions(when):
        src = getattr(c, "source", None)
        if src and src not in out:
            out.append(src)
    return out


def causes_of(when: Condition) -> list[str]:
    return list(
        dict.fromkeys(
            itertools.chain.from_iterable(
                c.cause for c in walk_conditions(when) if isinstance(c, ErrorCause)
            )
        )
    )


def could_not_act(inc: Incident) -> bool:
    """Whether no changing step acted, and some could not act safely (an untrusted pid file,
    a master that is not the service's): the others were held back or change nothing."""
    pairs = list(zip(inc.playbook.steps, inc.outcomes, strict=False))
    untried = (Outcome.HELD, Outcome.CANNOT_ACT)
    return any(o == Outcome.CANNOT_ACT for _, o in pairs) and not any(
        s.changes_host and o not in untried for s, o in pairs
    )


_CLOSING = {
    IncidentOutcome.RESOLVED: "the site is healthy again",
    IncidentOutcome.COMPLETED: "its steps ran (this playbook changes nothing)",
    IncidentOutcome.INCOMPLETE: "a step of this playbook failed (it changes nothing)",
    IncidentOutcome.EXHAUSTED: "no step helped",
    IncidentOutcome.HELD: "every step was held back by a guard: nothing was tried",
    IncidentOutcome.CANNOT_ACT: (
        "no step could act safely (see each step's reason): nothing was tried, no failure counted"
    ),
    IncidentOutcome.UNVERIFIED: "no evidence either way of whether the step helped",
    IncidentOutcome.ABORTED: "the action log cannot be written: not acting",
    IncidentOutcome.SUPERSEDED: "this dry run gave way to a real incident",
}


def closing_reason(inc: Incident, outcome: IncidentOutcome) -> str:
    """The closing record's reason: the outcome, how many steps, and why in words."""
    why = _CLOSING.get(outcome, str(outcome))
    if inc.flapping is not None:
        skipped = inc.flapping.start
        why += f" (flapping: {skipped} step(s) not repeated"
        why += ")" if inc.flapping.escalates else ", no step left to escalate to)"
    return f"{outcome} after {len(inc.outcomes)} step(s): {why}"
