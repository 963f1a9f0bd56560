"""``remediator replay``: the configured detectors and playbooks over historical logs.

Time comes from the log lines; the engine runs exactly as live, in dry run, with actions that
only say what they would do, and verification judged on the log's own future (did users get
200s again within the step's deadline?). The timeline shows when each trigger held, which
playbook would have run, which steps, and which guards would have held it back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gzip
import heapq
import io
import itertools
import json
import os
import re
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, overload

from remediator import escape
from remediator.actionlog import ActionLog
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.actions.declare import ACTIONS
from remediator.config import AccessLogSource, Config, ErrorLogSource
from remediator.engine import Engine
from remediator.events import Event
from remediator.feed import Feeder, error_times
from remediator.filekind import not_regular
from remediator.guards import Guards
from remediator.playbook import (
    AllOf,
    AnyOf,
    Condition,
    ErrorCause,
    NotOf,
    Playbook,
    StatusRate,
    StatusSpike,
    walk_conditions,
)
from remediator.sources.access.guess import AUTO, Guess, guess
from remediator.sources.access.scanner import Statuses
from remediator.sources.accesslog import AccessFormat
from remediator.sources.formats import access_format, error_format
from remediator.system import DryRunSystem
from remediator.timezone import Span, describe, hour_skews, stamp
from remediator.wiring import Wiring, wire

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
    guessed: str | None = None  # --format auto: what it made of the file, to say so


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
    """A stand-in for action ``name``: a replay cannot ask this host's services how they are
    (they may not be the ones that wrote the logs), so it records what the step asked for;
    ``remediator trigger --dry-run`` on the host shows the exact commands."""

    def run(args: Any, ctx: ActionContext) -> ActionResult:
        target = getattr(args, "service", None) or getattr(args, "notifier", None)
        asked = _plain(args)
        details = {"replay": True, "action": name, "args": asked} if asked else {"replay": True}
        return ActionResult(
            Outcome.WOULD_RUN, f"would {name} {target or ''}".strip(), target, details
        )

    return run


def _plain(args: Any) -> Any:
    """A step's declared arguments as JSON-ready values."""
    if dataclasses.is_dataclass(args) and not isinstance(args, type):
        return {f.name: _plain(getattr(args, f.name)) for f in dataclasses.fields(args)}
    if isinstance(args, list | tuple):
        return [_plain(a) for a in args]
    if isinstance(args, dict):
        return {str(k): _plain(v) for k, v in args.items()}
    if isinstance(args, str | int | float | bool) or args is None:
        return args
    return str(args)


def _iso(t: float) -> str:
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
        elif fmt == AUTO:
            guessed = _guess(p)
            out.append(Input(p, None, "access", guessed.format.name, guessed.describe()))
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


GUESS_LINES = 1000  # --format auto reads this many of a file's first lines


def _guess(path: Path) -> Guess:
    """The built-in format of ``path``, from its first lines."""
    with _open(path) as f:
        head = list(itertools.islice(f, GUESS_LINES))
    found = guess([line.rstrip(b"\r\n") for line in head])
    if found is None:
        raise ReplayError(
            f"{path}: --format auto: no built-in format reads any of its first {len(head)} "
            "lines; give the server's log_format (or LogFormat) in a source, and --source"
        )
    return found


def _input(path: Path, name: str, src: AccessLogSource | ErrorLogSource) -> Input:
    if isinstance(src, AccessLogSource):
        if src.format_name == AUTO:  # the file replayed says, not the one on this host
            guessed = _guess(path)
            return Input(path, name, "access", guessed.format.name, guessed.describe())
        return Input(path, name, "access", src.format_name)
    return Input(path, name, "error", src.format)


def _rotation_key(p: Path) -> tuple[int, str]:
    """Oldest first: access.log.3.gz, access.log.2.gz, access.log.1, access.log."""
    m = re.search(r"[.-](\d{1,8})(?:\.(?:gz|z))?$", p.name)
    n = int(m.group(1)) if m else 0
    return (-n if n < 10_000 else n, p.name)  # dateext suffixes sort by date


@contextlib.contextmanager
def _open(path: Path) -> Iterator[io.BufferedIOBase]:
    """A log file, compressed (gzip) or not: told by its first bytes, not its name. Opened
    without blocking and judged on the open descriptor: a FIFO or a device (a log another user
    replaced) is refused, never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ReplayError(f"{path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ReplayError(f"{path}: {not_regular(mode)}: not read")
        magic = f.read(2)
        f.seek(0)
        if magic != b"\x1f\x8b":
            yield f
            return
        with gzip.GzipFile(fileobj=f, mode="rb") as g:
            yield g


# (time, stream order, kind, source, lines, statuses): one run of lines sharing a time
Run = tuple[float, int, str, str, Sequence[bytes], Statuses]
BLOCK = 1 << 19  # bytes read and scanned at once


def _events(
    inp: Input, config: Config | None, feeder: Feeder, order: int, tz: dt.tzinfo | None
) -> Iterator[Run]:
    key = _key(inp)
    if inp.kind == "access":
        src = config.sources.get(inp.source) if config and inp.source else None
        own = isinstance(src, AccessLogSource) and src.format_name == "custom"
        fmt = access_format(inp.format, src if own else None)
        if fmt is None:
            raise ReplayError(f"{inp.path}: unknown access log format {inp.format}")
        if not fmt.has_time:
            raise ReplayError(f"{inp.path}: its format has no time field; replay needs one")
        feeder.add_source(key, fmt)  # the format this file is read in (format: auto)
        with _open(inp.path) as f:
            for buf, end in _regions(f):
                yield from _access_runs(fmt, buf, end, key, order, feeder)
        return
    efmt = error_format(inp.format)
    if efmt is None:
        raise ReplayError(f"{inp.path}: unknown error log format {inp.format}")
    if key not in feeder.formats:
        feeder.add_source(key, efmt)
    with _open(inp.path) as f:
        for t, lines in error_times(efmt, f, tz, feeder.stats[key]):
            yield (t, order, "cause", key, lines, _NONE)


class _Lines(Sequence[bytes]):
    """Lines ``start`` to ``start + n`` of a block, split from it only when one is asked for
    (evidence: 5xx lines); most blocks of a healthy log never are."""

    __slots__ = ("_block", "_n", "_start")

    def __init__(self, block: _Block, start: int, n: int) -> None:
        self._block, self._start, self._n = block, start, n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(i, slice):
            return self._block.lines[self._start : self._start + self._n][i]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._block.lines[self._start + i % self._n]


class _Block:
    """Lines 1 to ``end`` of ``buf`` (a region that leads with a newline), split only when
    a line is asked for."""

    __slots__ = ("_lines", "buf", "end")

    def __init__(self, buf: bytes, end: int) -> None:
        self.buf, self.end = buf, end
        self._lines: list[bytes] | None = None

    @property
    def lines(self) -> list[bytes]:
        if self._lines is None:
            self._lines = self.buf[1 : self.end].split(b"\n")
        return self._lines


def _regions(f: io.BufferedIOBase, block: int = BLOCK) -> Iterator[tuple[bytes, int]]:
    """A file's whole lines in blocks of about ``block`` bytes: ``(buf, end)``, where ``buf``
    leads with a newline and ``buf[1:end]`` are lines, the last of the file perhaps without its
    newline. A plain file is read at offsets (``pread``) so that each block starts at the
    newline that ended the last: one copy, and nothing to join; anything else (gzip) is read
    on and joined to the last block's unfinished line."""
    if type(f) is io.BufferedReader:  # not GzipFile: its fileno() is the compressed file
        yield from _pread_regions(f.fileno(), f.tell(), block)
        return
    rest = b""
    while data := f.read(block):
        buf = b"".join((b"\n", rest, data))
        cut = buf.rfind(b"\n", 1)
        if cut < 0:  # a line longer than the block: read on
            rest = buf[1:]
            continue
        yield buf, cut
        rest = buf[cut + 1 :]
    if rest:
        yield b"\n" + rest, len(rest) + 1


def _pread_regions(fd: int, at: int, block: int) -> Iterator[tuple[bytes, int]]:
    """:func:`_regions` of a plain file from offset ``at``; ``buf[i]`` is the file's byte
    ``at + i - 1`` (the first block's leading newline is added)."""
    buf = b"\n" + os.pread(fd, block, at)
    while True:
        if len(buf) < block + 1:  # the file ends in this block
            if len(buf) > 1:
                yield buf, len(buf) - 1 if buf.endswith(b"\n") else len(buf)
            return
        cut = buf.rfind(b"\n", 1)
        if cut < 0:  # a line longer than the block: read on
            more = os.pread(fd, block, at + len(buf) - 1)
            if not more:
                yield buf, len(buf)
                return
            buf += more
            continue
        yield buf, cut
        at += cut  # the next block starts with the newline that ended this one
        buf = os.pread(fd, block + 1, at - 1)


def _access_runs(
    fmt: AccessFormat, buf: bytes, end: int, key: str, order: int, feeder: Feeder
) -> Iterator[Run]:
    """The lines of ``buf[1:end]`` (``buf`` leads with a newline) in runs sharing a time,
    each with its statuses (scanned once, in C-speed passes over the block, in place).
    Malformed lines are counted and left out."""
    with memoryview(buf) as mv, mv[:end] as region:
        batch = fmt.scan_region(region)
    block = _Block(buf, end)
    if not batch.malformed:
        i = 0
        for t, n in batch.runs or ():
            yield (t, order, "status", key, _Lines(block, i, n), batch.status_run(i, n))
            i += n
        return
    # rare: leave out the malformed lines, which the scan located
    feeder.statuses(key, [], _NONE, batch.malformed, feeder.stats[key].last_line_at or 0.0)
    skip = set(batch.bad)
    lines = [line for i, line in enumerate(block.lines) if i not in skip]
    i = 0
    for t, n in batch.runs or ():
        yield (t, order, "status", key, lines[i : i + n], batch.status_run(i, n))
        i += n


_NONE = Statuses([])


def _order(run: Run) -> tuple[float, int]:
    """Runs of several streams in time order, a stream's own order for the same time."""
    return run[0], run[1]


def _key(inp: Input) -> str:
    return inp.source or f"{inp.format}:{inp.path.name}"


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

    Lines go through the daemon's own feeder and engine (``remediator.wiring``), with the
    log's time for the clock: the engine is ticked as each second of log completes, and
    every second through a gap while anything could still change. ``tz``: the zone of times
    written without a UTC offset (error logs); None: this machine's."""
    inputs = match_inputs(paths, config, source=source, fmt=fmt)
    by_source: dict[str, list[Input]] = {}
    for inp in inputs:
        by_source.setdefault(inp.source or f"{inp.format}:{inp.path}", []).append(inp)
    memlog = _MemoryLog()
    with tempfile.TemporaryDirectory(prefix="remediator-replay-") as tmp:
        cfg = config if config is not None else Config()  # --format only: no config file
        w = wire(
            cfg,
            playbooks if config is not None else [],
            system=DryRunSystem(),
            guards=Guards(Path(tmp), cfg.guards, 0.0),
            actionlog=memlog,
            actions={name: _would(name) for name in ACTIONS},
            wall=lambda: memlog.now,
            probes=False,
        )
        engine = w.engine if config is not None and playbooks else None
        streams = []
        for order, group in enumerate(by_source.values()):
            group.sort(key=lambda i: _rotation_key(i.path))
            streams.append(_chain(group, config, w.feeder, order, tz))
        seen = _Seen()
        clock = _Clock(memlog, engine, _horizon(w))
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_order)
        for t, _, kind, key, lines, codes in merged:
            if (start is not None and t < start) or (end is not None and t > end):
                continue
            clock.advance(t)
            seen.span(key, kind, t)
            if kind == "status":
                seen.statuses.update(w.feeder.statuses(key, lines, codes, 0, t))
            else:
                seen.causes.update(str(c) for c in w.feeder.causes(key, lines, t))
        clock.finish()
        still_open = engine.incident.playbook.name if engine and engine.incident else None
    stats = w.feeder.stats.values()
    incidents = sum(1 for r in memlog.records if r["event"] == Event.INCIDENT_OPENED)
    summary = {
        "summary": True,
        "files": [str(p) for p in paths],
        "lines": sum(s.lines for s in stats),
        "malformed": sum(s.malformed for s in stats),
        "untimed": sum(s.untimed for s in stats),
        "statuses": {str(k): v for k, v in sorted(seen.statuses.items())},
        "causes": dict(sorted(seen.causes.items())),
        "incidents": incidents,
        "not_replayed": _not_replayed(playbooks if config is not None else []),
        "open_at_end": still_open,
        "from": _iso(seen.first) if seen.first is not None else None,
        "to": _iso(seen.last) if seen.last is not None else None,
        "tz": describe(tz),
        "formats_guessed": {str(i.path): i.guessed for i in inputs if i.guessed},
        "warnings": hour_skews(
            (Span(k, f, last, k in seen.zoned) for k, (f, last) in seen.spans.items()), tz
        ),
    }
    return memlog.records, summary


_LOG_LEAVES = (StatusRate, StatusSpike, ErrorCause)


def _from_logs(cond: Condition) -> bool:
    """Whether ``cond`` can hold on log lines alone (what a replay has)."""
    if isinstance(cond, AllOf):
        return all(_from_logs(c) for c in cond.conditions)
    if isinstance(cond, AnyOf):
        return any(_from_logs(c) for c in cond.conditions)
    if isinstance(cond, NotOf):
        return _from_logs(cond.condition)
    return isinstance(cond, _LOG_LEAVES)


def _not_replayed(playbooks: Iterable[Playbook]) -> dict[str, str]:
    """Playbooks whose trigger no log line can set off, with what it needs instead: a replay
    says so rather than let "no incident" read as "nothing would have happened"."""
    out = {}
    for pb in playbooks:
        if not _from_logs(pb.when):
            needs = sorted(
                {_KINDS.get(type(c).__name__, type(c).__name__) for c in walk_conditions(pb.when)}
                - {"status_rate", "status_spike", "error_cause"}
            )
            out[pb.name] = f"its trigger needs {', '.join(needs)}, which logs do not hold"
    return out


_KINDS = {
    "ProbeFailing": "probe_failing",
    "ServiceDown": "service_down",
    "FpmSaturated": "fpm_saturated",
    "FpmHung": "fpm_hung",
    "FpmStuck": "fpm_stuck",
    "FpmSlow": "fpm_slow",
    "HostCondition": "host",
    "DnsMismatch": "dns_mismatch",
    "StatusRate": "status_rate",
    "StatusSpike": "status_spike",
    "ErrorCause": "error_cause",
}


@dataclass
class _Seen:
    """What the replay read: counts, and each source's first and last time."""

    statuses: Counter[int] = field(default_factory=Counter)
    causes: Counter[str] = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None
    spans: dict[str, list[float]] = field(default_factory=dict)
    zoned: set[str] = field(default_factory=set)  # sources whose lines carry their UTC offset

    def span(self, key: str, kind: str, t: float) -> None:
        self.first = t if self.first is None else self.first
        self.last = t
        span = self.spans.get(key)
        if span is None:
            self.spans[key] = [t, t]
            if kind == "status":  # access logs carry their offset; error logs do not
                self.zoned.add(key)
        else:
            span[1] = t


class _Clock:
    """Log time for the engine: a tick as each second of log completes, and one a second
    through a gap while anything could still change (a window, an open incident)."""

    def __init__(self, memlog: _MemoryLog, engine: Engine | None, horizon: float) -> None:
        self.memlog = memlog
        self.engine = engine
        self.horizon = horizon
        self.current: int | None = None  # the log second being gathered; judged once complete
        self.last = 0.0

    def tick(self, t: float) -> None:
        self.memlog.now = t
        if self.engine is not None:
            self.engine.tick(t)

    def advance(self, t: float) -> None:
        if self.current is not None and int(t) != self.current:
            self.tick(self.last)
            gap = self.last + 1.0
            while gap < int(t) and (gap - self.last <= self.horizon or self._busy()):
                self.tick(gap)
                gap += 1.0
        self.current, self.last = int(t), t

    def finish(self) -> None:
        if self.current is None:
            return
        self.tick(self.last)
        while self._busy() and self.memlog.now < self.last + 600:
            self.tick(self.memlog.now + 1.0)  # let the open incident reach its verdict

    def _busy(self) -> bool:
        return self.engine is not None and self.engine.incident is not None


def _horizon(w: Wiring) -> float:
    """The longest window any condition looks back over: after that, a gap changes nothing."""
    spans = [
        float(getattr(c, "baseline", None) or getattr(c, "window", None) or 0.0)
        for pb in w.engine.playbooks
        for c in walk_conditions(pb.when)
    ]
    return max(spans, default=0.0) + 1.0


def _chain(
    group: list[Input], config: Config | None, feeder: Feeder, order: int, tz: dt.tzinfo | None
) -> Iterator[Run]:
    for inp in group:
        yield from _events(inp, config, feeder, order, tz)


# --- output ----------------------------------------------------------------------------------


def print_json(records: list[dict[str, Any]], summary: dict[str, Any], out: TextIO) -> None:
    for rec in records:
        out.write(json.dumps(rec, default=str, separators=(",", ":")) + "\n")
    out.write(json.dumps(summary, separators=(",", ":")) + "\n")


_LABELS = {
    Event.INCIDENT_OPENED: "trigger held",
    Event.TRIGGER_HELD_BACK: "held back",
    Event.ACTION_INTENT: "would run",
    Event.ACTION_HELD: "step held",
    Event.VERIFY_PASSED: "recovered",
    Event.VERIFY_FAILED: "not recovered",
    Event.INCIDENT_CLOSED: "closed",
    Event.BREAKER_OPENED: "breaker open",
    Event.VERIFY_UNKNOWN: "unverified",
    Event.NOTIFY: "would notify",
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
        if rec["event"] == Event.ACTION_INTENT:
            what = f"step {rec['step']}: {rec['action']} {rec.get('target') or ''}".rstrip()
        by = (rec.get("corroboration") or {}).get("by", "")
        if by.startswith("assumed"):  # replay sees no probe: say what live would have needed
            what += f" (corroboration {by})"
        line = f"{_local(rec['ts'], tz)}  {label:<14} {rec.get('playbook') or '':<22} {what}"
        out.write(escape.text(line) + "\n")
    statuses = ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items()) or "none"
    causes = ", ".join(f"{k}: {v}" for k, v in summary["causes"].items())
    out.write(
        f"\n{summary['lines']} lines ({summary['malformed']} malformed"
        + (f", {summary['untimed']} untimed" if summary.get("untimed") else "")
        + ") "
        f"from {_local(summary['from'], tz)} to {_local(summary['to'], tz)}\n"
        f"statuses: {statuses}\n"
        + (f"causes: {causes}\n" if causes else "")
        + f"incidents: {summary['incidents']}\n"
    )
    for name, why in (summary.get("not_replayed") or {}).items():
        out.write(escape.text(f"not replayed: {name} ({why})") + "\n")


def _local(iso: str | None, tz: dt.tzinfo | None) -> str:
    """An RFC 3339 time of a record, as the timeline shows it (see :func:`stamp`)."""
    if not iso:
        return "-"
    try:
        return stamp(dt.datetime.fromisoformat(iso).timestamp(), tz)
    except ValueError:
        return escape.text(iso)
