"""``remediator log``: the action log as incident timelines for a person, or JSON for tools.

Written for someone woken at 3 a.m.: each incident shows what tripped it with a few of the log
lines that were its evidence, each step with the exact command it ran (or would have run), and
why it closed. Times carry their UTC offset. Everything taken from a record is outside text (a
log line, a probe's answer, a command's output) and is escaped before it is printed.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from remediator import escape
from remediator.actionlog import read
from remediator.actions.base import Outcome
from remediator.events import Event, IncidentOutcome
from remediator.timezone import stamp

# How an incident can end (the engine's incident_closed outcomes); steps end in an Outcome.
CLOSING: Final = tuple(str(o) for o in IncidentOutcome)
FEW: Final = 3  # evidence lines shown per source unless --evidence
NEWEST: Final = 5  # incident ids named when --incident matches none
_INDENT: Final = " " * 23  # under the text of a timeline line: "  HH:MM:SS.mmm +00:00  "


@dataclass(frozen=True)
class Filter:
    since: float | None = None
    until: float | None = None
    incident: str | None = None
    playbook: str | None = None
    outcome: str | None = None

    def keeps(self, rec: dict[str, Any]) -> bool:
        t = ts_of(rec)
        if self.since is not None and (t is None or t < self.since):
            return False
        if self.until is not None and (t is None or t > self.until):
            return False
        if self.incident is not None and not str(rec.get("incident") or "").startswith(
            self.incident
        ):
            return False
        return self.playbook is None or rec.get("playbook") == self.playbook


def ts_of(rec: dict[str, Any]) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(rec.get("ts"))).timestamp()
    except ValueError:
        return None


def select(records: Iterable[dict[str, Any]], flt: Filter) -> list[dict[str, Any]]:
    """Records kept by ``flt``; the outcome filter keeps whole incidents that ended so."""
    kept = [r for r in records if flt.keeps(r)]
    if flt.outcome is None:
        return kept
    ended = {
        r.get("incident")
        for r in kept
        if r.get("event") == Event.INCIDENT_CLOSED and r.get("outcome") == flt.outcome
    }
    return [r for r in kept if r.get("incident") in ended or r.get("outcome") == flt.outcome]


def outcomes() -> list[str]:
    """Every outcome ``--outcome`` can name: incidents' first, then steps'."""
    return list(dict.fromkeys([*CLOSING, *(str(o) for o in Outcome)]))


def refuse(
    flt: Filter, recs: list[dict[str, Any]], playbooks: Iterable[str], path: Path
) -> str | None:
    """Why ``flt`` names something that does not exist (a usage error), or None.

    ``recs`` are the whole action log; ``playbooks`` the configured names (a playbook only the
    log still knows is valid too).
    """
    from remediator.schema import did_you_mean  # noqa: PLC0415 - schema is heavy for `log`

    if flt.outcome is not None:
        valid = outcomes()
        seen = {str(r["outcome"]) for r in recs if r.get("outcome")}
        if flt.outcome not in valid and flt.outcome not in seen:
            return (
                f"--outcome {flt.outcome}: not an outcome{did_you_mean(flt.outcome, valid)}; "
                f"incidents end {', '.join(CLOSING)}; steps "
                f"{', '.join(v for v in valid if v not in CLOSING)}"
            )
    if flt.playbook is not None:
        configured = list(dict.fromkeys(playbooks))
        known = set(configured) | {str(r["playbook"]) for r in recs if r.get("playbook")}
        if flt.playbook not in known:
            return (
                f"--playbook {flt.playbook}: no such playbook"
                f"{did_you_mean(flt.playbook, known)}; configured: "
                f"{', '.join(configured) or 'none'}"
            )
    if flt.incident is not None:
        ids = list(dict.fromkeys(str(r["incident"]) for r in recs if r.get("incident")))
        if not any(i.startswith(flt.incident) for i in ids):
            newest = ", ".join(reversed(ids[-NEWEST:]))
            return f"--incident {flt.incident}: no incident in {path} starts so; " + (
                f"the newest: {newest}" if ids else "it holds no incidents yet"
            )
    return None


# --- text ------------------------------------------------------------------------------------


def _clock(rec: dict[str, Any], tz: dt.tzinfo | None) -> str:
    t = ts_of(rec)
    return "?" * 19 if t is None else stamp(t, tz, millis=True, date=False)


def _line(rec: dict[str, Any]) -> str:
    ev = rec.get("event")
    step = f"step {rec.get('step')} {rec.get('action')} {rec.get('target') or ''}".rstrip()
    dur = f" ({rec['duration_ms']:g} ms)" if isinstance(rec.get("duration_ms"), int | float) else ""
    reason = rec.get("reason") or ""
    match ev:
        case Event.INCIDENT_OPENED:
            return f"opened: {reason}"
        case Event.ACTION_INTENT:
            return f"{step}: starting ({reason})"
        case Event.ACTION_RESULT:
            return f"{step}: {rec.get('outcome')}{dur}: {reason}"
        case Event.ACTION_HELD:
            return f"{step}: held back: {reason}"
        case Event.VERIFY_PASSED | Event.VERIFY_FAILED:
            word = "verified" if ev == Event.VERIFY_PASSED else "NOT verified"
            return f"{step} {word}: {reason}"
        case Event.ROLLBACK_INTENT | Event.ROLLBACK_RESULT:
            return f"{step} rollback: {rec.get('outcome') or ''} {reason}".rstrip()
        case Event.INCIDENT_CLOSED:
            return f"closed: {rec.get('outcome')}{dur}" + (f": {reason}" if reason else "")
        case Event.TRIGGER_HELD_BACK if rec.get("guard") == "fleet":
            return f"{rec.get('playbook')} held: {reason}"
        case Event.FLEET_SLOT_ACQUIRED:
            return f"fleet slot acquired: {reason}"
        case Event.FLEET_SLOT_LOST:
            return f"fleet slot LOST: {reason}"
        case Event.FLEET_SLOT_RELEASED:
            return f"fleet slot released: {reason}"
        case Event.FLEET_ACTING_ALONE:
            return f"fleet: {reason}"
        case _:
            target = f" {rec.get('target')}" if rec.get("target") else ""
            said = " ".join(str(x) for x in (rec.get("outcome"), reason) if x)
            return f"{ev}{target}: {said}" if said else f"{ev}{target}"


def _below(rec: dict[str, Any], all_evidence: bool) -> list[str]:
    """The lines under a record: an opening's evidence, a step's commands."""
    if rec.get("event") == Event.INCIDENT_OPENED:
        fleet = rec.get("fleet")
        slot = (
            [f"fleet: {fleet['reason']}"] if isinstance(fleet, dict) and fleet.get("reason") else []
        )
        return (
            slot
            + _corroboration(rec.get("corroboration"))
            + _evidence(rec.get("evidence"), all_evidence)
        )
    if "details" in rec:
        return commands(rec.get("details"), dry_run=bool(rec.get("dry_run")))
    return []


def _corroboration(c: Any) -> list[str]:
    """What backed a trigger that rested on log lines (forgeable) before it acted."""
    if not isinstance(c, dict) or not c.get("by"):
        return []
    return [f"corroborated by: {c['by']}"]


def _evidence(ev: Any, all_lines: bool) -> list[str]:
    if not isinstance(ev, dict):
        return []
    by_source: dict[str, Any] = ev["lines"] if isinstance(ev.get("lines"), dict) else {}
    total = sum(len(v) for v in by_source.values() if isinstance(v, list))
    head = f"evidence: {total} log line(s)"
    host = ev.get("host")
    if isinstance(host, dict) and isinstance(host.get("memory_available"), int):
        load = host.get("load")
        head += f", load {load[0] if isinstance(load, list) and load else '?'}, "
        head += f"{host['memory_available'] // 2**20} MiB available"
    out = [head]
    for source, lines in by_source.items():
        if not isinstance(lines, list) or not lines:
            continue
        shown = lines if all_lines else lines[-FEW:]
        more = "" if len(shown) == len(lines) else f", last {len(shown)} (--evidence: all)"
        out.append(f"{source}: {len(lines)} line(s){more}")
        out.extend(f"  {line}" for line in shown)
    probes = ev.get("probes")
    for name, p in probes.items() if isinstance(probes, dict) else ():
        if isinstance(p, dict):
            out.append(f"probe {name}: {probe_said(p)}")
    return out


def probe_said(p: dict[str, Any]) -> str:
    """A probe's last answer in an opening's evidence: ``ok (status 200), answered 42s
    before`` (the age only when it is not this moment's answer: a probe asked seldom)."""
    state = {True: "ok", False: "failing", None: "no answer yet"}.get(p.get("ok"), "?")
    fails = p.get("consecutive_failures") or 0
    extra = f", {fails} failure(s) in a row" if fails else ""
    detail = f" ({p['detail']})" if p.get("detail") else ""
    age = p.get("age_s")
    if isinstance(age, int | float) and age >= 0.1:
        extra += f", answered {age:g}s before"
    return f"{state}{detail}{extra}"


def commands(details: Any, *, dry_run: bool = False) -> list[str]:
    """The exact commands, signals and file edits in an action's ``details``, in order.

    Knows ``argv`` (with ``rc`` or ``returncode``), ``signal`` with ``pid``/``pgid``, ``file``
    with ``set``, ``path`` with ``changes`` (a line edit), and ``remove``/``copy`` steps; a
    record without any (older ones) shows none. Read-only queries of a service's state are left
    out. In a ``dry_run`` record, what has no exit status was not run, and says so.
    """
    found: dict[str, str] = {}  # the command -> what became of it; the first mention wins
    _walk(details, found, 0, dry_run)
    return [f"{cmd}{how}" for cmd, how in found.items()]


def _walk(node: Any, found: dict[str, str], depth: int, dry_run: bool) -> None:
    if depth > 6:
        return
    if isinstance(node, dict):
        steps = node.get("steps")
        if isinstance(steps, list):  # the backend's own log, in the order it acted: first
            _walk(steps, found, depth + 1, dry_run)
        shown = _command(node)
        if shown is not None:
            found.setdefault(shown, _how(node, dry_run))
        for key, value in node.items():  # and what it holds: a reload's config test, say
            if key != "steps":
                _walk(value, found, depth + 1, dry_run)
    elif isinstance(node, list):
        for item in node:
            _walk(item, found, depth + 1, dry_run)


def _command(d: dict[str, Any]) -> str | None:
    argv = d.get("argv")
    if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
        if d.get("kind") == "observe":
            return None  # a query (systemctl show ...), not an act; config tests come on their own
        return f"$ {shlex.join(argv)}"
    sig = d.get("signal")
    if isinstance(sig, str) and ("pid" in d or "pgid" in d):
        name = sig.removeprefix("SIG")
        who = f"{d['pid']}" if "pid" in d else f"-- -{d['pgid']}"
        return f"$ kill -{name} {who}"
    path = d.get("file") or d.get("path")
    if isinstance(d.get("set"), dict):
        edits = ", ".join(f"{k} = {v}" for k, v in d["set"].items())
        return f"edit {path}: {edits}"
    if isinstance(d.get("changes"), list) and path:
        lines = [
            f"line {c.get('line')}: {str(c.get('after', '')).strip()}"
            for c in d["changes"]
            if isinstance(c, dict)
        ]
        return f"edit {path}: {'; '.join(lines)}"
    if d.get("kind") == "write" and path:
        return f"write {path}" + (f" ({d['bytes']} bytes)" if "bytes" in d else "")
    if d.get("kind") == "remove" and path:
        return f"$ rm {shlex.quote(str(path))}"
    if d.get("kind") == "copy" and d.get("src") and d.get("dst"):
        return f"$ cp {shlex.quote(str(d['src']))} {shlex.quote(str(d['dst']))}"
    return None


def _how(d: dict[str, Any], dry_run: bool) -> str:
    notes = []
    rc = d.get("rc", d.get("returncode"))
    test = d.get("config_test")
    if rc is None and isinstance(test, dict) and test.get("argv") == d.get("argv"):
        rc = test.get("rc")  # a config test's summary: its run, with its exit status, nested
    if isinstance(rc, int) and not d.get("dry_run"):  # a dry run's stand-in status is none
        notes.append(f"exit {rc}")
    if d.get("timed_out"):
        notes.append("timed out")
    if d.get("error"):
        notes.append(str(d["error"]))
    if d.get("dry_run") or (dry_run and rc is None):
        notes.append("not run: dry run")
    return f"  ({', '.join(notes)})" if notes else ""


def _emit(out: TextIO, text: str) -> None:
    out.write(escape.text(text) + "\n")


def render(
    records: list[dict[str, Any]],
    out: TextIO,
    *,
    tz: dt.tzinfo | None = None,
    all_evidence: bool = False,
) -> None:
    """Group records by incident, oldest first; records of no incident come on their own.
    Times are shown in ``tz`` (None: this machine's zone) with their offset."""
    order: list[str] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        key = rec.get("incident") or f"~{len(order)}"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(rec)
    for key in order:
        recs = groups[key]
        first = recs[0]
        closing = next((r for r in recs if r.get("event") == Event.INCIDENT_CLOSED), None)
        if first.get("incident"):
            state = closing.get("outcome") if closing else "open"
            dry = "  (dry run)" if any(r.get("dry_run") for r in recs) else ""
            t = ts_of(first)
            when = stamp(t, tz) if t is not None else str(first.get("ts", ""))
            _emit(
                out, f"incident {first['incident']}  {first.get('playbook')}  {state}  {when}{dry}"
            )
        for rec in recs:
            _emit(out, f"  {_clock(rec, tz)}  {_line(rec)}")
            for below in _below(rec, all_evidence):
                _emit(out, f"{_INDENT}{below}")
        out.write("\n")


def follow(
    path: Path,
    flt: Filter,
    out: TextIO,
    *,
    as_json: bool,
    poll: float = 0.5,
    tz: dt.tzinfo | None = None,
) -> None:
    """Print new records as they are appended (until interrupted)."""
    seen = sum(1 for _ in read(path))
    while True:
        recs = list(read(path))
        if len(recs) < seen:  # rotated: start over with the new file
            seen = 0
        for rec in (r for r in recs[seen:] if flt.keeps(r)):
            if as_json:
                out.write(json.dumps(rec) + "\n")
            else:
                _emit(out, f"{_clock(rec, tz)}  {rec.get('playbook') or ''}  {_line(rec)}")
            out.flush()
        seen = len(recs)
        time.sleep(poll)


def records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of the action log and its rotated, uncompressed predecessor (oldest first)."""
    older = path.with_name(path.name + ".1")
    if older.exists():
        yield from read(older)
    yield from read(path)
