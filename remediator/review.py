"""``remediator log``: the action log as incident timelines for a person, or JSON for tools."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from remediator.actionlog import read


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
        if r.get("event") == "incident_closed" and r.get("outcome") == flt.outcome
    }
    return [r for r in kept if r.get("incident") in ended or r.get("outcome") == flt.outcome]


def _clock(rec: dict[str, Any]) -> str:
    t = ts_of(rec)
    if t is None:
        return "?" * 12
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:12]


def _line(rec: dict[str, Any]) -> str:
    ev = rec.get("event")
    step = f"step {rec.get('step')} {rec.get('action')} {rec.get('target') or ''}".rstrip()
    dur = f" ({rec['duration_ms']:g} ms)" if isinstance(rec.get("duration_ms"), int | float) else ""
    reason = rec.get("reason") or ""
    match ev:
        case "incident_opened":
            ev_ = rec.get("evidence") or {}
            lines = sum(len(v) for v in (ev_.get("lines") or {}).values())
            extra = f"\n{'':16}evidence: {lines} log line(s)"
            host = ev_.get("host") or {}
            if "memory_available" in host:
                extra += (
                    f", load {host.get('load', ['?'])[0]}, "
                    f"{host['memory_available'] // 2**20} MiB available"
                )
            return f"opened: {reason}{extra}"
        case "action_intent":
            return f"{step}: starting ({reason})"
        case "action_result":
            return f"{step}: {rec.get('outcome')}{dur}: {reason}"
        case "action_held":
            return f"{step}: held back: {reason}"
        case "verify_passed" | "verify_failed":
            word = "verified" if ev == "verify_passed" else "NOT verified"
            return f"{step} {word}: {reason}"
        case "rollback_intent" | "rollback_result":
            return f"{step} rollback: {rec.get('outcome') or ''} {reason}".rstrip()
        case "incident_closed":
            return f"closed: {rec.get('outcome')}{dur}"
        case _:
            target = f" {rec.get('target')}" if rec.get("target") else ""
            return f"{ev}{target}: {rec.get('outcome') or ''} {reason}".rstrip()


def render(records: list[dict[str, Any]], out: TextIO) -> None:
    """Group records by incident, oldest first; records of no incident come on their own."""
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
        closing = next((r for r in recs if r.get("event") == "incident_closed"), None)
        if first.get("incident"):
            state = closing.get("outcome") if closing else "open"
            dry = "  (dry run)" if any(r.get("dry_run") for r in recs) else ""
            day = str(first.get("ts", ""))[:10]
            out.write(
                f"incident {first['incident']}  {first.get('playbook')}  {state}  {day}{dry}\n"
            )
        for rec in recs:
            out.write(f"  {_clock(rec)}  {_line(rec)}\n")
        out.write("\n")


def follow(path: Path, flt: Filter, out: TextIO, *, as_json: bool, poll: float = 0.5) -> None:
    """Print new records as they are appended (until interrupted)."""
    seen = sum(1 for _ in read(path))
    while True:
        recs = list(read(path))
        if len(recs) < seen:  # rotated: start over with the new file
            seen = 0
        for rec in (r for r in recs[seen:] if flt.keeps(r)):
            out.write(
                json.dumps(rec) + "\n"
                if as_json
                else f"{_clock(rec)}  {rec.get('playbook') or ''}  {_line(rec)}\n"
            )
            out.flush()
        seen = len(recs)
        time.sleep(poll)


def records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of the action log and its rotated, uncompressed predecessor (oldest first)."""
    older = path.with_name(path.name + ".1")
    if older.exists():
        yield from read(older)
    yield from read(path)
