"""``remediator replay``: the configured detectors and playbooks over historical logs.

Time comes from the log lines; the engine runs exactly as live, in dry run, with actions that
only say what they would do, and verification judged on the log's own future (did users get
200s again within the step's deadline?). The timeline shows when each trigger held, which
playbook would have run, which steps, and which guards would have held it back.
"""

from __future__ import annotations

import datetime as dt
import gzip
import heapq
import io
import json
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from remediator import escape
from remediator.actionlog import ActionLog
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.actions.declare import ACTIONS
from remediator.config import AccessLogSource, Config, ErrorLogSource
from remediator.detect import Signals
from remediator.engine import Engine
from remediator.guards import Guards
from remediator.playbook import Playbook, walk_conditions
from remediator.sources.formats import access_format, error_format
from remediator.system import DryRunSystem
from remediator.timezone import Span, describe, hour_skews, stamp

_ROTATED = re.compile(r"^(?P<base>.+?)(?:[.-]\d{1,8})?(?:\.(?:gz|z))?$")


class ReplayError(Exception):
    """A problem with the replay's inputs (exit status 2)."""


@dataclass(frozen=True)
class Input:
    """One file to replay: the source it belongs to (if any) and how to read it."""

    path: Path
    source: str | None
    kind: str  # access or error
    format: str  # a format name, or "custom" for a source's own log_format


@dataclass
class Totals:
    lines: int = 0
    malformed: int = 0
    untimed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    causes: Counter[str] = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None
    spans: dict[str, list[float]] = field(default_factory=dict)  # per source: first, last time
    zoned: set[str] = field(default_factory=set)  # sources whose lines carry their UTC offset


class _MemoryLog(ActionLog):
    """The engine's action log, kept in memory: replay's timeline."""

    def __init__(self) -> None:
        super().__init__(Path("/dev/null"), journal=False)
        self.records: list[dict[str, Any]] = []
        self.now = 0.0

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        rec = {"ts": _iso(self.now), **{k: v for k, v in record.items() if k != "ts"}}
        self.records.append(rec)
        return rec


def _would(name: str) -> Any:
    def run(args: Any, ctx: ActionContext) -> ActionResult:
        target = getattr(args, "service", None) or getattr(args, "notifier", None)
        return ActionResult(Outcome.WOULD_RUN, f"would {name} {target or ''}".strip(), target)

    return run


def _iso(t: float) -> str:
    import datetime as dt  # noqa: PLC0415

    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def match_inputs(
    paths: Iterable[Path], config: Config | None, *, source: str | None, fmt: str | None
) -> list[Input]:
    """Decide which source (and format) each file is read as."""
    sources = (
        {}
        if config is None
        else {
            n: s
            for n, s in config.sources.items()
            if isinstance(s, AccessLogSource | ErrorLogSource)
        }
    )
    out = []
    for p in paths:
        if source is not None:
            src = sources.get(source)
            if src is None:
                raise ReplayError(
                    f"--source {source}: no access_log or error_log source of that name"
                )
            out.append(_input(p, source, src))
        elif fmt is not None:
            kind = "access" if access_format(fmt) is not None else "error"
            out.append(Input(p, None, kind, fmt))
        else:
            base = _ROTATED.match(p.name)
            stem = base.group("base") if base else p.name
            found = [n for n, s in sources.items() if s.path.name in (p.name, stem)]
            if len(found) > 1:
                same_dir = [n for n in found if sources[n].path.parent == p.parent.resolve()]
                found = same_dir if len(same_dir) == 1 else found
            if len(found) != 1:
                why = "several sources" if found else "no source"
                raise ReplayError(
                    f"{p}: {why} match this file; say which with --source NAME, "
                    f"or read it as a format with --format (e.g. nginx-combined)"
                )
            out.append(_input(p, found[0], sources[found[0]]))
    return out


def _input(path: Path, name: str, src: AccessLogSource | ErrorLogSource) -> Input:
    if isinstance(src, AccessLogSource):
        custom = src.log_format is not None or src.apache_format is not None
        return Input(path, name, "access", "custom" if custom else src.format)
    return Input(path, name, "error", src.format)


def _rotation_key(p: Path) -> tuple[int, str]:
    """Oldest first: access.log.3.gz, access.log.2.gz, access.log.1, access.log."""
    m = re.search(r"[.-](\d{1,8})(?:\.(?:gz|z))?$", p.name)
    n = int(m.group(1)) if m else 0
    return (-n if n < 10_000 else n, p.name)  # dateext suffixes sort by date


def _open(path: Path) -> io.BufferedIOBase:
    """A log file, compressed (gzip) or not: told by its first bytes, not its name."""
    with path.open("rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(path, "rb")
    return path.open("rb")


Event = tuple[float, int, str, str, Counter[Any]]  # time, order, kind, source key, counts


def _events(
    inp: Input, config: Config | None, totals: Totals, order: int, tz: dt.tzinfo | None = None
) -> Iterator[Event]:
    key = inp.source or f"{inp.format}:{inp.path.name}"
    if inp.kind == "access":
        src = config.sources.get(inp.source) if config and inp.source else None
        fmt = access_format(inp.format, src if isinstance(src, AccessLogSource) else None)
        if fmt is None:
            raise ReplayError(f"{inp.path}: unknown access log format {inp.format}")
        if not fmt.has_time:
            raise ReplayError(f"{inp.path}: its format has no time field; replay needs one")
        with _open(inp.path) as f:
            for batch in fmt.scan_file(f):
                totals.lines += batch.lines
                totals.malformed += batch.malformed
                for t, counts in batch.by_time():
                    yield (t, order, "status", key, counts)
        return
    efmt = error_format(inp.format)
    if efmt is None:
        raise ReplayError(f"{inp.path}: unknown error log format {inp.format}")
    with _open(inp.path) as f:
        last_t: float | None = None
        for raw in f:
            totals.lines += 1
            cause = efmt.classify(raw)
            if cause is None:
                continue
            # a line without its own time (a continuation) belongs to the previous entry's
            when = efmt.time(raw, tz) or last_t
            if when is None:
                totals.untimed += 1
                continue
            last_t = when
            yield (when, order, "cause", key, Counter({cause: 1}))


def replay(
    paths: list[Path],
    config: Config | None,
    playbooks: list[Playbook],
    *,
    source: str | None = None,
    fmt: str | None = None,
    start: float | None = None,
    end: float | None = None,
    tz: dt.tzinfo | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Replay ``paths``; returns the timeline records and the summary.

    ``tz``: the zone of times written without a UTC offset (error logs); None: this machine's.
    """
    inputs = match_inputs(paths, config, source=source, fmt=fmt)
    by_source: dict[str, list[Input]] = {}
    for inp in inputs:
        by_source.setdefault(inp.source or f"{inp.format}:{inp.path}", []).append(inp)
    totals = Totals()
    streams = []
    for order, group in enumerate(by_source.values()):
        group.sort(key=lambda i: _rotation_key(i.path))
        streams.append(_chain(group, config, totals, order, tz))
    conds = [c for pb in playbooks for c in walk_conditions(pb.when)]
    signals = Signals.for_conditions(conds)
    memlog = _MemoryLog()
    with tempfile.TemporaryDirectory(prefix="remediator-replay-") as tmp:
        engine = None
        if config is not None and playbooks:
            guards = Guards(Path(tmp), config.guards, 0.0)
            engine = Engine(
                config,
                playbooks,
                signals,
                guards,
                memlog,
                DryRunSystem(),
                {name: _would(name) for name in ACTIONS},
                wall=lambda: memlog.now,
            )
        current: int | None = None  # the log second being gathered; judged once complete
        last_t = 0.0
        for t, _, kind, key, counts in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
            if (start is not None and t < start) or (end is not None and t > end):
                continue
            if engine is not None and current is not None and int(t) != current:
                memlog.now = last_t
                engine.tick(last_t)
            current, last_t = int(t), t
            if kind == "status":
                totals.statuses.update(counts)
            else:
                totals.causes.update({str(k): n for k, n in counts.items()})
            totals.first = t if totals.first is None else totals.first
            totals.last = t
            span = totals.spans.get(key)
            if span is None:
                totals.spans[key] = [t, t]
                if kind == "status":
                    totals.zoned.add(key)
            else:
                span[1] = t
            windows = signals.statuses if kind == "status" else signals.causes
            win = windows.get(key)
            if win is not None:
                win.add_many(t, counts)
        if engine is not None and current is not None:
            memlog.now = last_t
            engine.tick(last_t)
        still_open = engine.incident.playbook.name if engine and engine.incident else None
    incidents = sum(1 for r in memlog.records if r["event"] == "incident_opened")
    summary = {
        "summary": True,
        "files": [str(p) for p in paths],
        "lines": totals.lines,
        "malformed": totals.malformed,
        "statuses": {str(k): v for k, v in sorted(totals.statuses.items())},
        "causes": dict(sorted(totals.causes.items())),
        "incidents": incidents,
        "open_at_end": still_open,
        "from": _iso(totals.first) if totals.first is not None else None,
        "to": _iso(totals.last) if totals.last is not None else None,
        "tz": describe(tz),
        "warnings": hour_skews(
            (Span(k, f, last, k in totals.zoned) for k, (f, last) in totals.spans.items()), tz
        ),
    }
    return memlog.records, summary


def _chain(
    group: list[Input], config: Config | None, totals: Totals, order: int, tz: dt.tzinfo | None
) -> Iterator[Event]:
    for inp in group:
        yield from _events(inp, config, totals, order, tz)


# --- output ----------------------------------------------------------------------------------


def print_json(records: list[dict[str, Any]], summary: dict[str, Any], out: TextIO) -> None:
    for rec in records:
        out.write(json.dumps(rec, default=str, separators=(",", ":")) + "\n")
    out.write(json.dumps(summary, separators=(",", ":")) + "\n")


_LABELS = {
    "incident_opened": "trigger held",
    "trigger_held_back": "held back",
    "action_intent": "would run",
    "action_held": "step held",
    "verify_passed": "recovered",
    "verify_failed": "not recovered",
    "incident_closed": "closed",
    "breaker_opened": "breaker open",
    "notify": "would notify",
}


def print_timeline(
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    out: TextIO,
    *,
    tz: dt.tzinfo | None = None,
) -> None:
    """Times in ``tz`` (None: this machine's zone) with their UTC offset; outside text escaped."""
    for rec in records:
        label = _LABELS.get(rec["event"])
        if label is None:
            continue
        what = rec.get("reason") or ""
        if rec["event"] == "action_intent":
            what = f"step {rec['step']}: {rec['action']} {rec.get('target') or ''}".rstrip()
        line = f"{_local(rec['ts'], tz)}  {label:<14} {rec.get('playbook') or '':<22} {what}"
        out.write(escape.text(line) + "\n")
    statuses = ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items()) or "none"
    causes = ", ".join(f"{k}: {v}" for k, v in summary["causes"].items())
    out.write(
        f"\n{summary['lines']} lines ({summary['malformed']} malformed) "
        f"from {_local(summary['from'], tz)} to {_local(summary['to'], tz)}\n"
        f"statuses: {statuses}\n"
        + (f"causes: {causes}\n" if causes else "")
        + f"incidents: {summary['incidents']}\n"
    )


def _local(iso: str | None, tz: dt.tzinfo | None) -> str:
    """An RFC 3339 time of a record, as the timeline shows it (see :func:`stamp`)."""
    if not iso:
        return "-"
    try:
        return stamp(dt.datetime.fromisoformat(iso).timestamp(), tz)
    except ValueError:
        return escape.text(iso)
