"""One incident read back from the action log: its records, its steps, and what held it back.

The action log is the truth (``remediator log`` reads the same records): an incident is the
records sharing its id, from ``incident_opened`` to ``incident_closed``. Around it, records of
no incident matter too: a trigger a guard held back (``trigger_held_back``) and the operator's
switches (pause, resume, reset) in the same minutes. Every value here is still raw outside
text; the page escapes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from remediator.events import Event, Outcome
from remediator.review import commands, ts_of

NEWEST: Final = 5  # incident ids named when the one asked for is not there
_AROUND: Final = frozenset(
    {
        Event.TRIGGER_HELD_BACK,
        Event.OPERATOR_PAUSE,
        Event.OPERATOR_RESUME,
        Event.OPERATOR_RESET,
        Event.OPERATOR_TRIGGER,
    }
)
_ENDS: Final = frozenset({Event.ACTION_RESULT, Event.ACTION_HELD})
_SAFE_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")

Record = dict[str, Any]


class NoIncident(LookupError):
    """The incident asked for is not in the action log (the message says what is)."""


@dataclass
class Step:
    """One step of the playbook as it happened: when it acted, how it ended, what it ran."""

    number: int
    action: str
    target: str
    records: list[Record] = field(default_factory=list)

    @property
    def started(self) -> float | None:
        return _first_ts(self.records, Event.ACTION_INTENT)

    @property
    def at(self) -> float | None:
        """When the step acted (its result), or was held back; its intent if it never ended."""
        ended = next((r for r in self.records if r.get("event") in _ENDS), None)
        if ended is not None:
            return ts_of(ended)
        return self.started if self.started is not None else _first_ts(self.records, None)

    @property
    def outcome(self) -> str:
        """ok, failed, held, would_run, ... or ``unfinished`` (no result was written)."""
        ended = next((r for r in self.records if r.get("event") in _ENDS), None)
        return str(ended.get("outcome") or "unknown") if ended is not None else "unfinished"

    @property
    def reason(self) -> str:
        ended = next((r for r in self.records if r.get("event") in _ENDS), None)
        rec = ended if ended is not None else (self.records[0] if self.records else {})
        return str(rec.get("reason") or "")

    @property
    def guard(self) -> str | None:
        held = next((r for r in self.records if r.get("guard")), None)
        return str(held["guard"]) if held is not None else None

    @property
    def verification(self) -> Record | None:
        """The ``verify_passed`` / ``verify_failed`` / ``verify_unknown`` record, if any."""
        kinds = (Event.VERIFY_PASSED, Event.VERIFY_FAILED, Event.VERIFY_UNKNOWN)
        return next((r for r in self.records if r.get("event") in kinds), None)

    @property
    def verdict(self) -> str:
        """What the step came to, in a word: the verification's, else the outcome's."""
        v = self.verification
        if v is not None:
            words = {str(Event.VERIFY_PASSED): "verified", str(Event.VERIFY_FAILED): "not verified"}
            return words.get(str(v.get("event")), "unverified")
        return self.outcome

    @property
    def commands(self) -> list[str]:
        """The exact commands, signals and edits of the step and of its rollback, in order."""
        found: list[str] = []
        for rec in self.records:
            if "details" in rec:
                found += commands(rec.get("details"), dry_run=bool(rec.get("dry_run")))
        return list(dict.fromkeys(found))


@dataclass
class Incident:
    """An incident's records and the records around it, read back from the action log."""

    id: str
    records: list[Record]
    around: list[Record]  # of no incident, in its minutes: held triggers, operator switches

    @property
    def opening(self) -> Record:
        return next((r for r in self.records if r.get("event") == Event.INCIDENT_OPENED), {})

    @property
    def closing(self) -> Record | None:
        ends = (Event.INCIDENT_CLOSED, Event.INCIDENT_ABANDONED)
        return next((r for r in self.records if r.get("event") in ends), None)

    @property
    def playbook(self) -> str:
        return str(self.records[0].get("playbook") or "?")

    @property
    def opened(self) -> float | None:
        return ts_of(self.opening) if self.opening else ts_of(self.records[0])

    @property
    def closed(self) -> float | None:
        return ts_of(self.closing) if self.closing is not None else None

    @property
    def last(self) -> float | None:
        """The time of its newest record (an open incident's end, so far)."""
        times = [t for r in self.records if (t := ts_of(r)) is not None]
        return max(times) if times else None

    @property
    def outcome(self) -> str:
        c = self.closing
        if c is None:
            return "open"
        return str(c.get("outcome") or c.get("event") or "closed")

    @property
    def dry_run(self) -> bool:
        return any(r.get("dry_run") for r in self.records)

    @property
    def evidence(self) -> Record:
        ev = self.opening.get("evidence")
        return ev if isinstance(ev, dict) else {}

    @property
    def steps(self) -> list[Step]:
        """Its steps in the order they ran (a step is the records of one ``step`` number)."""
        steps: dict[int, Step] = {}
        for rec in self.records:
            n = rec.get("step")
            if not isinstance(n, int) or isinstance(n, bool):
                continue
            if n not in steps:
                steps[n] = Step(n, str(rec.get("action") or "?"), str(rec.get("target") or ""))
            steps[n].records.append(rec)
        return list(steps.values())

    @property
    def notifications(self) -> list[Record]:
        return [r for r in self.records if r.get("event") == Event.NOTIFY]

    @property
    def held(self) -> list[Record]:
        """Everything a guard or a safety check held back, in and around the incident."""
        mine = [
            r
            for r in self.records
            if r.get("guard")
            or r.get("outcome") in (Outcome.HELD, Outcome.REFUSED, Outcome.CANNOT_ACT)
            or r.get("event") == Event.BREAKER_OPENED
        ]
        near = [r for r in self.around if r.get("event") == Event.TRIGGER_HELD_BACK]
        return sorted([*mine, *near], key=lambda r: ts_of(r) or 0.0)

    @property
    def switches(self) -> list[Record]:
        """The operator's switches in the incident's minutes."""
        return [r for r in self.around if str(r.get("event", "")).startswith("operator_")]

    def file_name(self) -> str:
        """A file name for its page: the id, with anything but letters, digits, - and _
        replaced (the id comes from a file; it names no path)."""
        return f"incident-{_SAFE_NAME.sub('_', self.id)[:80]}.html"


def _first_ts(records: Iterable[Record], event: str | None) -> float | None:
    for r in records:
        if event is None or r.get("event") == event:
            return ts_of(r)
    return None


def ids(records: Iterable[Record]) -> list[str]:
    """Incident ids in the order they first appear (oldest first)."""
    return list(dict.fromkeys(str(r["incident"]) for r in records if r.get("incident")))


def choose(records: list[Record], wanted: str | None, where: str) -> str:
    """The id of the incident ``wanted`` names (an id or a prefix; None: the newest).
    Raises :class:`NoIncident` saying what the log holds when it names none or several."""
    known = ids(records)
    if not known:
        raise NoIncident(f"{where} holds no incidents yet")
    newest = ", ".join(reversed(known[-NEWEST:]))
    if wanted is None:
        return known[-1]
    if wanted in known:
        return wanted
    matching = [i for i in known if i.startswith(wanted)]
    if len(matching) == 1:
        return matching[0]
    if matching:
        shown = ", ".join(matching[-NEWEST:])
        raise NoIncident(f"{wanted}: {len(matching)} incidents start so ({shown}); give more of it")
    raise NoIncident(f"{wanted}: no incident in {where} starts so; the newest: {newest}")


def gather(records: list[Record], incident: str, *, margin: float) -> Incident:
    """The records of ``incident``, and the records of no incident within ``margin`` seconds
    of it (before its opening, after its close or its last record)."""
    mine = [r for r in records if r.get("incident") == incident]
    inc = Incident(incident, mine, [])
    start, end = inc.opened, inc.closed or inc.last
    if start is not None and end is not None:
        inc.around = [
            r
            for r in records
            if not r.get("incident")
            and r.get("event") in _AROUND
            and (t := ts_of(r)) is not None
            and start - margin <= t <= end + margin
        ]
    return inc
