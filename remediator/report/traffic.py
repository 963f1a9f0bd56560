"""What users got around an incident, read back from the logs: requests and 5xx per second
(access logs), error causes per second (error logs).

The logs are read where they still are: each configured file and its rotated predecessor
(``access.log.1``, plain or gzip). A plain file is not read whole: its lines are in time
order, so a bisection over its bytes finds the window's first line, and reading stops past
the window's end. When the logs no longer cover the incident (rotated away, truncated), the
incident's own evidence lines are read instead, and the page says so.

Files are opened as ``replay`` opens them: without blocking and checked on the open
descriptor, so a FIFO or a device put in a log's place is never read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import io
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from remediator.config import AccessLogSource, Config, ErrorLogSource
from remediator.filekind import not_regular
from remediator.sources.errorlog import ErrorFormat
from remediator.sources.formats import access_format, error_format

MAX_BUCKETS: Final = 900  # points on the chart: one a second up to 15 minutes
_BUCKETS: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
_SLACK: Final = 120.0  # lines are logged when a request ends: a little out of order
_PROBE: Final = 1 << 16  # bisection stops when the span is this small
_TRIES: Final = 64  # lines read at a probe point to find one with a time

TimeOf = Callable[[bytes], float | None]
S = TypeVar("S", AccessLogSource, ErrorLogSource)


class _Unreadable(Exception):
    """A log that is there but cannot be read (the message says why)."""


@dataclass
class Traffic:
    """Counts per bucket of ``bucket`` seconds from ``start`` (epoch seconds)."""

    start: float
    bucket: int
    size: int
    requests: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)  # 5xx
    causes: dict[str, list[int]] = field(default_factory=dict)
    access_read: list[str] = field(default_factory=list)  # what the counts come from
    errors_read: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be read, and why
    access_from_evidence: bool = False
    causes_from_evidence: bool = False

    def __post_init__(self) -> None:
        self.requests = [0] * self.size
        self.errors = [0] * self.size

    @property
    def end(self) -> float:
        return self.start + self.bucket * self.size

    def slot(self, t: float) -> int | None:
        k = int((t - self.start) // self.bucket)
        return k if 0 <= k < self.size else None

    def add_cause(self, cause: str, t: float) -> bool:
        k = self.slot(t)
        if k is None:
            return False
        self.causes.setdefault(cause, [0] * self.size)[k] += 1
        return True

    @property
    def has_requests(self) -> bool:
        return any(self.requests)


def bucket_for(span: float) -> int:
    """Seconds per point so that ``span`` takes at most :data:`MAX_BUCKETS` of them."""
    for b in _BUCKETS:
        if span / b <= MAX_BUCKETS:
            return b
    return _BUCKETS[-1]


def window(start: float, end: float) -> Traffic:
    """Empty counts covering ``start`` to ``end``, on whole buckets."""
    bucket = bucket_for(end - start)
    first = math.floor(start / bucket) * bucket
    return Traffic(float(first), bucket, max(1, math.ceil((end - first) / bucket)))


def read(
    cfg: Config,
    evidence: dict[str, Any],
    traffic: Traffic,
    *,
    tz: dt.tzinfo | None = None,
) -> Traffic:
    """Fill ``traffic`` from the logs of the sources the incident names (all access and
    error logs when it names none of a kind), or from its evidence lines."""
    named = _named(evidence)
    access = _sources(cfg, named, AccessLogSource)
    errors = _sources(cfg, named, ErrorLogSource)
    given = evidence.get("lines")
    lines: dict[str, Any] = given if isinstance(given, dict) else {}
    got = 0
    for name, src in access.items():
        got += _access(name, src, traffic)
    if not got:
        for name, src in access.items():
            if _access_evidence(name, src, lines.get(name), traffic):
                traffic.access_from_evidence = True
    got = 0
    for name, esrc in errors.items():
        got += _errors(name, esrc, traffic, tz)
    if not got:
        for name, esrc in errors.items():
            if _errors_evidence(name, esrc, lines.get(name), traffic, tz):
                traffic.causes_from_evidence = True
    return traffic


def _named(evidence: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    lines = evidence.get("lines")
    if isinstance(lines, dict):
        names |= {str(k) for k in lines}
    for r in evidence.get("readings") or ():
        if isinstance(r, dict) and isinstance(r.get("source"), str):
            names.add(r["source"])
    return names


def _sources(cfg: Config, named: set[str], kind: type[S]) -> dict[str, S]:
    """The configured sources of ``kind`` the incident names, or all of them if it names none."""
    of_kind = {n: s for n, s in cfg.sources.items() if isinstance(s, kind)}
    mine = {n: s for n, s in of_kind.items() if n in named}
    return mine or of_kind


def _files(name: str, path: Path, lo: float, notes: list[str]) -> list[Path]:
    """The log and its rotated predecessor (``.1``, or ``.1.gz`` without delaycompress),
    oldest first; files last written before ``lo`` hold nothing of the window and are left
    out. A log that is not there at all is noted."""
    out = []
    for p in (path.with_name(f"{path.name}.1.gz"), path.with_name(f"{path.name}.1"), path):
        try:
            if p.stat().st_mtime >= lo:
                out.append(p)
        except FileNotFoundError:
            if p == path:
                notes.append(f"{name}: {path}: not on disk")
        except OSError as exc:
            notes.append(f"{name}: {p}: {exc.strerror or exc}")
    return out


@contextlib.contextmanager
def _open(path: Path) -> Iterator[tuple[io.BufferedIOBase, int | None]]:
    """The file and its size when it can be bisected (plain), None when gzip."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise _Unreadable(f"{path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unreadable(f"{path}: {not_regular(st.st_mode)}: not read")
        magic = f.read(2)
        f.seek(0)
        if magic != b"\x1f\x8b":
            yield f, st.st_size
            return
        with gzip.GzipFile(fileobj=f, mode="rb") as g:
            yield g, None


def _seek(f: io.BufferedIOBase, size: int, time_of: TimeOf, target: float) -> None:
    """Leave ``f`` at the start of a line at or shortly before the first line of time
    ``target`` or later (lines are in time order, give or take :data:`_SLACK`)."""
    lo, hi = 0, size
    while hi - lo > _PROBE:
        mid = (lo + hi) // 2
        t = _time_after(f, mid, time_of)
        if t is None or t >= target:
            hi = mid
        else:
            lo = mid
    f.seek(lo)
    if lo:
        f.readline()  # the rest of a line cut in the middle


def _time_after(f: io.BufferedIOBase, pos: int, time_of: TimeOf) -> float | None:
    f.seek(pos)
    f.readline()
    for _ in range(_TRIES):
        line = f.readline()
        if not line:
            return None
        t = time_of(line.rstrip(b"\r\n"))
        if t is not None:
            return t
    return None


def _access(name: str, src: AccessLogSource, traffic: Traffic) -> int:
    """Count the requests and 5xx of one access source's files; the lines in the window."""
    fmt = access_format(None, src)
    if fmt is None or not fmt.has_time:
        traffic.notes.append(f"{name}: its format has no time: not charted")
        return 0
    hi = traffic.end + _SLACK

    def scan(f: io.BufferedIOBase) -> int:
        n = 0
        for batch in fmt.scan_file(f):
            n += _count(batch.runs or (), batch.codes, traffic)
            if batch.runs and batch.runs[-1][0] > hi:
                break
        return n

    return _read_each(name, src.path, traffic, fmt.time, scan, traffic.access_read)


def _read_each(
    name: str,
    path: Path,
    traffic: Traffic,
    time_of: TimeOf,
    read: Callable[[io.BufferedIOBase], int],
    read_from: list[str],
) -> int:
    """``read`` each of a source's files (from the window's start, where it can be sought);
    what each counted, summed. A file that counted is named in ``read_from``; one that
    cannot be read, in the notes."""
    lo = traffic.start - _SLACK
    counted = 0
    for file in _files(name, path, lo, traffic.notes):
        try:
            with _open(file) as (f, size):
                if size is not None:
                    _seek(f, size, time_of, lo)
                n = read(f)
        except (_Unreadable, OSError, EOFError) as exc:
            traffic.notes.append(str(exc) if isinstance(exc, _Unreadable) else f"{file}: {exc}")
            continue
        counted += n
        if n:
            read_from.append(f"{name}: {file}")
    return counted


def _count(runs: Iterable[tuple[float, int]], codes: list[Any], traffic: Traffic) -> int:
    """Add runs of lines sharing a time; ``codes`` are their statuses as the scanner leaves
    them (None for a 200, else three bytes)."""
    i = n = 0
    for t, many in runs:
        k = traffic.slot(t)
        if k is not None:
            traffic.requests[k] += many
            traffic.errors[k] += sum(
                1 for c in codes[i : i + many] if c is not None and c[:1] == b"5"
            )
            n += many
        i += many
    return n


def _access_evidence(name: str, src: AccessLogSource, lines: Any, traffic: Traffic) -> bool:
    """Count an access source's evidence lines (its newest 5xx when the incident opened)."""
    fmt = access_format(None, src)
    if fmt is None or not isinstance(lines, list):
        return False
    found = False
    for text in lines:
        line = str(text).encode("utf-8", "surrogateescape")
        t, status = fmt.time(line), fmt.status(line)
        k = traffic.slot(t) if t is not None else None
        if k is None or status is None:
            continue
        traffic.requests[k] += 1
        traffic.errors[k] += status >= 500
        found = True
    if found:
        traffic.access_read.append(f"{name}: the incident's evidence lines only")
    return found


def _errors(name: str, src: ErrorLogSource, traffic: Traffic, tz: dt.tzinfo | None) -> int:
    """Classify one error source's lines in the window; how many had a cause."""
    efmt = error_format(src.format)
    if efmt is None:
        return 0
    hi = traffic.end + _SLACK
    return _read_each(
        name,
        src.path,
        traffic,
        lambda line: efmt.time(line, tz),
        lambda f: _classify(f, efmt, traffic, tz, hi),
        traffic.errors_read,
    )


def _classify(
    lines: Iterable[bytes], efmt: ErrorFormat, traffic: Traffic, tz: dt.tzinfo | None, hi: float
) -> int:
    n = 0
    last: float | None = None
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        t = efmt.time(line, tz)
        if t is None:
            t = last  # a continuation takes the time of the line it continues
        elif t > hi:
            break
        last = t
        cause = efmt.classify(line) if t is not None else None
        if cause is not None and t is not None and traffic.add_cause(str(cause), t):
            n += 1
    return n


def _errors_evidence(
    name: str, src: ErrorLogSource, lines: Any, traffic: Traffic, tz: dt.tzinfo | None
) -> bool:
    efmt = error_format(src.format)
    if efmt is None or not isinstance(lines, list):
        return False
    raw = [str(x).encode("utf-8", "surrogateescape") for x in lines]
    found = _classify(raw, efmt, traffic, tz, math.inf) > 0
    if found:
        traffic.errors_read.append(f"{name}: the incident's evidence lines only")
    return found
