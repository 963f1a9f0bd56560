"""Access-log formats: the status and time of every line, at C speed.

A format (nginx ``log_format`` or Apache ``LogFormat``) compiles into byte regexes:

* an *exact* one for a whole line, a group per field: :meth:`AccessFormat.fields` (evidence);
* a *fast* one reading only the time and the status, which :meth:`AccessFormat.scan` runs with
  ``Pattern.split`` over a whole buffer so the per-line work happens in C. Eight lines go in one
  match: the time is captured on the first and checked on the others by backreference, so a
  line costs one 3-byte object and no time conversion. Whatever a match leaves (a change of
  second, an odd line) is read line by line, and a line the fast regex rejects (a user name
  with a space) is retried with the exact one: odd but legal lines are slower, never lost.

nginx writes ``"``, ``\\`` and non-printable bytes of values as ``\\xHH``, so a ``"`` in one of
its lines is always the format's own: a request, a user agent or TLS bytes cannot move the
status. Apache writes ``\\"``, which its classes allow. A line that fits neither regex is
*malformed*: counted, never raised. All of it works on bytes.
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
import functools
import io
import itertools
import math
import mmap
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, cast

__all__ = [
    "ACCESS_FORMATS",
    "AccessFormat",
    "Batch",
    "Escaping",
    "FormatError",
    "compile_apache_format",
    "compile_nginx_format",
]


class FormatError(ValueError):
    """A custom format that cannot be used; ``column`` is 1-based in the format string."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column


class Escaping(enum.StrEnum):
    """How the server escapes values, which decides what a value may contain."""

    NGINX = "default"
    """nginx's default: ``"``, ``\\`` and non-printable bytes become ``\\xHH``."""
    BACKSLASH = "json"
    """Apache, and nginx ``escape=json``: ``\\"`` and ``\\\\`` inside values."""
    NONE = "none"
    """nginx ``escape=none``: anything; fields are told apart by their neighbours only."""


class _Kind(enum.Enum):
    TEXT = enum.auto()
    TOKEN = enum.auto()
    INT = enum.auto()
    INT_OR_DASH = enum.auto()
    DECIMAL = enum.auto()
    LIST = enum.auto()
    STATUS = enum.auto()
    TIME_CLF = enum.auto()
    TIME_ISO = enum.auto()
    TIME_EPOCH = enum.auto()
    TIME_STRF = enum.auto()


_TIMES: Final = frozenset({_Kind.TIME_CLF, _Kind.TIME_ISO, _Kind.TIME_EPOCH, _Kind.TIME_STRF})
_EXACT: Final[dict[_Kind, bytes]] = {
    _Kind.TOKEN: rb'[^\s"]+',
    _Kind.INT: rb"\d+",
    _Kind.INT_OR_DASH: rb"(?:\d+|-)",
    _Kind.DECIMAL: rb"(?:\d+(?:\.\d+)?|-)",
    _Kind.LIST: rb"[-\d.]+(?:(?:, | : )[-\d.]+)*",
    _Kind.STATUS: rb"\d{3}",
    _Kind.TIME_CLF: rb"\d\d/[A-Za-z]{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}",
    _Kind.TIME_ISO: rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d\d:\d\d|Z)",
    _Kind.TIME_EPOCH: rb"\d+(?:\.\d+)?",
}
_STATUS: Final = {b"%03d" % i: i for i in range(1000)}
_BLOCK: Final = 8  # lines per match of the block regex
_WINDOW: Final = 1 << 20  # bytes scanned at once


@dataclass(frozen=True, slots=True, eq=False)  # identity: a format may repeat a field
class _Field:
    name: str
    kind: _Kind
    scale: float = 1.0  # TIME_EPOCH: seconds per unit
    strf: str = ""  # TIME_STRF: the strftime format


_Token = bytes | _Field


@dataclass(slots=True)
class Batch:
    """What a scan read: the status of each well-formed line in file order, and when."""

    statuses: list[int]
    runs: list[tuple[float, int]] | None
    """(epoch seconds, how many consecutive statuses have that time); None without a time
    field. Lines share their second, so this stays short where a time per line would not."""
    malformed: int

    @property
    def lines(self) -> int:
        return len(self.statuses) + self.malformed

    @property
    def times(self) -> list[float] | None:
        """One time per status, expanded from :attr:`runs`."""
        if self.runs is None:
            return None
        return list(itertools.chain.from_iterable(itertools.repeat(t, n) for t, n in self.runs))

    @classmethod
    def join(cls, batches: Iterable[Batch]) -> Batch:
        """One batch of several read one after the other."""
        statuses: list[int] = []
        runs: _Runs | None = None
        bad = 0
        for b in batches:
            statuses += b.statuses
            bad += b.malformed
            if b.runs is not None:
                runs = runs if runs is not None else _Runs()
                for t, n in b.runs:
                    runs.add(t, n)
        return cls(statuses, runs, bad)

    def by_time(self) -> list[tuple[float, Counter[int]]]:
        """Status counts per run of lines sharing a time, in order: what a detector window eats."""
        if self.runs is None:
            raise ValueError("the format has no time field")
        out, i = [], 0
        for t, n in self.runs:
            out.append((t, Counter(self.statuses[i : i + n])))
            i += n
        return out


class _Runs(list[tuple[float, int]]):
    def add(self, t: float, n: int) -> None:
        if self and self[-1][0] == t:
            self[-1] = (t, self[-1][1] + n)
        else:
            self.append((t, n))


class AccessFormat:
    """A compiled access-log format: fast status and time, every field on demand, batch scans."""

    def __init__(
        self, name: str, description: str, source: str, tokens: list[_Token], esc: Escaping
    ) -> None:
        self.name, self.description, self.source, self.escaping = name, description, source, esc
        fields = [t for t in tokens if isinstance(t, _Field)]
        statuses = [f for f in fields if f.kind is _Kind.STATUS]
        if not statuses:
            raise FormatError("the format has no status field: nothing to count", 1)
        status = next((f for f in statuses if f.name == "status"), statuses[0])
        tfield = next((f for f in fields if f.kind in _TIMES), None)
        self.field_names = _unique([f.name for f in fields])
        self._picks = tuple(fields.index(f) + 1 for f in (tfield, status) if f)
        self._upstream = next(
            (i + 1 for i, f in enumerate(fields) if f.name == "upstream_status"), 0
        )
        # (group, seconds per unit) of the request's duration, if the format logs it
        self._duration = next(
            ((i + 1, _DURATION[f.name]) for i, f in enumerate(fields) if f.name in _DURATION),
            None,
        )
        self._exact = re.compile(b"".join(_exact_piece(tokens, i, esc) for i in range(len(tokens))))
        line, same = _fast_line(tokens, esc, status, tfield)
        self._line = re.compile(line)
        self._split = re.compile(b"\n" + line).split
        self._tpos = int(bool(tfield) and tokens.index(status) < tokens.index(cast(_Field, tfield)))
        self._scale = tfield.scale if tfield and tfield.kind is _Kind.TIME_EPOCH else 0.0
        self._tcache = _TimeCache(_converter(tfield)) if tfield else None
        # Times with sub-second resolution differ on every line: no blocks for them.
        self._block_src = None if self._scale else b"\n" + line + (b"\n" + same) * (_BLOCK - 1)

    def __repr__(self) -> str:
        return f"<AccessFormat {self.name} {self.source!r}>"

    @property
    def has_time(self) -> bool:
        return self._tcache is not None

    @property
    def has_upstream_status(self) -> bool:
        return bool(self._upstream)

    @property
    def has_duration(self) -> bool:
        """Whether lines say how long their request took (``$request_time``, ``%D``, ``%T``)."""
        return self._duration is not None

    def duration(self, line: bytes) -> float | None:
        """How long the line's request took, in seconds; None when not logged or malformed."""
        if self._duration is None:
            return None
        m = self._exact.fullmatch(line.removesuffix(b"\n"))
        if m is None:
            return None
        group, scale = self._duration
        try:
            return float(m.group(group)) * scale
        except ValueError:  # "-"
            return None

    @functools.cached_property
    def _block(self) -> Callable[[bytes | memoryview], list[bytes]] | None:
        return None if self._block_src is None else re.compile(self._block_src).split

    # ---- one line: the live tail, evidence ------------------------------------------------
    def status(self, line: bytes) -> int | None:
        """The status of one line (its newline optional); None when the line is malformed."""
        r = self._one(line)
        return None if r is None else r[1]

    def time(self, line: bytes) -> float | None:
        """The line's time in epoch seconds; None when malformed or the format has no time."""
        r = self._one(line)
        return None if r is None else r[0]

    def upstream_status(self, line: bytes) -> int | None:
        """The last upstream's status (``502, 200`` gives 200); None when absent or ``-``."""
        m = self._exact.fullmatch(line.removesuffix(b"\n")) if self._upstream else None
        codes = re.findall(rb"\d{3}", m.group(self._upstream)) if m else []
        return int(codes[-1]) if codes else None

    def fields(self, line: bytes) -> dict[str, str] | None:
        """Every field of a well-formed line as logged (escapes kept, bad UTF-8 backslashed)."""
        m = self._exact.fullmatch(line.removesuffix(b"\n"))
        if m is None:
            return None
        values = (v.decode("utf-8", "backslashreplace") for v in m.groups())
        return dict(zip(self.field_names, values, strict=True))

    def _one(self, line: bytes) -> tuple[float | None, int] | None:
        line = line.removesuffix(b"\n")
        m = self._line.match(line)
        r = self._pair(m.groups()[:: -1 if self._tpos else 1]) if m else None
        if r is None and (e := self._exact.fullmatch(line)) is not None:
            r = self._pair(e.group(*self._picks) if len(self._picks) > 1 else (e[self._picks[0]],))
        return r

    def _pair(self, g: tuple[bytes, ...]) -> tuple[float | None, int] | None:
        if self._tcache is None:
            return None, _STATUS[g[0]]
        t = float(g[0]) * self._scale if self._scale else self._tcache[g[0]]
        return None if math.isnan(t) else (t, _STATUS[g[1]])

    # ---- many lines: replay, bursts --------------------------------------------------------
    def scan(self, buf: bytes) -> Batch:
        """Read a buffer of whole lines (the last may lack its newline)."""
        if len(buf) > _WINDOW:  # a megabyte at a time keeps lists and copies in the cache
            return Batch.join(self.scan_file(io.BytesIO(buf), _WINDOW))
        return self._scan_nl(b"\n" + buf.removesuffix(b"\n") if buf else b"")

    def scan_lines(self, lines: list[bytes]) -> Batch:
        """Read lines without their newlines (what a tailer hands over)."""
        return self._scan_nl(b"\n" + b"\n".join(lines) if lines else b"")

    def scan_file(self, f: io.BufferedIOBase, block_size: int = _WINDOW) -> Iterator[Batch]:
        """Read a binary file to its end, a :class:`Batch` per block; a last partial line counts.

        A plain file is mapped into memory and read in place; anything else (gzip, a pipe) is
        read into one reused buffer.
        """
        mapped = _map(f)
        if mapped is not None:
            with mapped:
                yield from self._scan_map(mapped, f.tell(), block_size)
                f.seek(len(mapped))
            return
        buf = bytearray(block_size + 1)
        buf[0] = 0x0A  # each region handed to _scan_nl starts at a newline
        filled = 1
        while True:
            if filled == len(buf):  # a line longer than the buffer
                buf += bytes(len(buf))
            with memoryview(buf) as mv:
                n = f.readinto(mv[filled:])
            if not n:
                break
            filled += n
            cut = buf.rfind(b"\n", 0, filled)
            if cut > 0:
                with memoryview(buf) as mv, mv[:cut] as region:
                    yield self._scan_nl(region)
                buf[: filled - cut] = buf[cut:filled]
                filled -= cut
        if filled > 1:
            with memoryview(buf) as mv, mv[:filled] as region:
                yield self._scan_nl(region)

    def _scan_map(self, mm: mmap.mmap, pos: int, block: int) -> Iterator[Batch]:
        size = len(mm)
        end = _cut(mm, pos, block)
        yield self._scan_nl(b"\n" + mm[pos:end])  # the first region is copied, to lead with \n
        with memoryview(mm) as mv:
            while end < size - 1:  # at a newline with a line after it
                pos, end = end, _cut(mm, end + 1, block)
                with mv[pos:end] as region:
                    yield self._scan_nl(region)

    def _scan_nl(self, view: bytes | memoryview) -> Batch:
        """The hot path: ``view`` is ``\\nLINE\\nLINE...`` with no final newline."""
        runs, out = _Runs(), list[int]()
        if self._block is None:
            bad = self._rest(view, out, runs)
            return Batch(out, runs if self._tcache is not None else None, bad)
        parts = self._block(view)
        timed = self._tcache is not None
        stride = 1 + _BLOCK + timed
        gaps = parts[0::stride]
        last = len(gaps) - 1
        btimes, unread = (
            self._times(parts[1 + self._tpos :: stride]) if timed else ([0.0] * last, 0)
        )
        del parts[0::stride]
        if timed:
            del parts[self._tpos :: stride - 1]
        statuses = list(map(_STATUS.__getitem__, parts))
        holes = list(itertools.compress(range(last), gaps))  # few: new seconds, odd lines
        if not holes and not unread:  # the common case: no copy
            for t, group in itertools.groupby(btimes):
                runs.add(t, len(list(group)) * _BLOCK)
            bad = self._rest(gaps[last], statuses, runs)
            return Batch(statuses, runs if timed else None, bad)
        bad = lo = 0
        for hi in [*holes, last]:  # blocks lo..hi-1, then what lies between blocks hi-1 and hi
            for t, group in itertools.groupby(btimes[lo:hi]):
                n = len(list(group))
                if math.isnan(t):
                    bad += n * _BLOCK
                else:
                    out += statuses[lo * _BLOCK : (lo + n) * _BLOCK]
                    runs.add(t, n * _BLOCK)
                lo += n
            bad += self._rest(gaps[hi], out, runs)
        return Batch(out, runs if timed else None, bad)

    def _rest(self, view: bytes | memoryview, out: list[int], runs: _Runs) -> int:
        """Read ``\\nLINE...`` a match per line into ``out`` and ``runs``; count the malformed."""
        if not view:
            return 0
        parts = self._split(view)
        timed = self._tcache is not None
        step = 2 + timed
        gaps = parts[0::step]
        statuses = list(map(_STATUS.__getitem__, parts[step - 1 - self._tpos :: step]))
        times, unread = (
            self._times(parts[1 + self._tpos :: step]) if timed else ([0.0] * len(statuses), 0)
        )
        if not any(gaps) and not unread:
            out += statuses
            for t, group in itertools.groupby(times):
                runs.add(t, len(list(group)))
            return 0
        bad = 0
        for i, gap in enumerate(gaps):
            pairs = [self._one(line) for line in gap.split(b"\n")[1:]]
            if i < len(statuses):
                pairs.append((times[i], statuses[i]))
            for r in pairs:
                if r is None or (timed and math.isnan(r[0] or 0.0)):
                    bad += 1
                else:
                    out.append(r[1])
                    runs.add(r[0] or 0.0, 1)
        return bad

    def _times(self, raw: list[bytes]) -> tuple[list[float], int]:
        """Epoch seconds (NaN where unreadable) and how many were unreadable."""
        if self._scale:
            return [float(r) * self._scale for r in raw], 0
        tc = cast(_TimeCache, self._tcache)
        before = tc.invalid
        return list(map(tc.__getitem__, raw)), tc.invalid - before


def _cut(mm: mmap.mmap, pos: int, block: int) -> int:
    """Where a region from ``pos`` ends: the last newline within ``block`` bytes (the end of
    the file if there is none after it)."""
    end = mm.rfind(b"\n", pos, pos + block)
    if end < 0:
        end = mm.find(b"\n", pos + block)
    return len(mm) if end < 0 else end


def _map(f: io.BufferedIOBase) -> mmap.mmap | None:
    """A read-only map of a plain, non-empty file opened with ``open(path, "rb")``, or None."""
    if type(f) is not io.BufferedReader:  # not GzipFile: its fileno() is the compressed file
        return None
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size <= f.tell():
            return None
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


class _TimeCache(dict[bytes, float]):
    """Raw timestamp to epoch seconds: lines share their second, so lookups are mostly hits.
    An unreadable one is not kept: each lookup of it counts in ``invalid``, which a caller
    compares before and after a batch of lookups instead of searching the results."""

    __slots__ = ("_conv", "invalid")

    def __init__(self, conv: Callable[[bytes], float | None]) -> None:
        super().__init__()
        self._conv = conv
        self.invalid = 0

    def __missing__(self, key: bytes) -> float:
        v = self._conv(key)
        if v is None:
            self.invalid += 1
            return math.nan
        if len(self) >= 100_000:
            self.clear()
        self[key] = v
        return v


def _unique(names: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


# ---- regexes -------------------------------------------------------------------------------
def _context(tokens: list[_Token], i: int) -> tuple[bytes, bool]:
    """The byte that ends field ``i`` (empty if none) and whether it sits between quotes."""
    prev = tokens[i - 1] if i else b""
    nxt = tokens[i + 1] if i + 1 < len(tokens) else b""
    stop = nxt[:1] if isinstance(nxt, bytes) else b""
    return stop, isinstance(prev, bytes) and prev.endswith(b'"') and stop == b'"'


def _text_class(quoted: bool, esc: Escaping) -> bytes:
    if esc is Escaping.NONE:
        return rb"[^\n]*?"
    if esc is Escaping.NGINX:
        return rb'[^"\n]*' if quoted else rb'[^"\n]*?'
    return rb'(?:[^"\\\n]|\\.)*' if quoted else rb'(?:[^"\\\n]|\\.)*?'


def _exact_piece(tokens: list[_Token], i: int, esc: Escaping) -> bytes:
    tok = tokens[i]
    if isinstance(tok, bytes):
        return re.escape(tok)
    if tok.kind is _Kind.TEXT:
        return b"(" + _text_class(_context(tokens, i)[1], esc) + b")"
    return b"(" + (_strf_regex(tok.strf) if tok.strf else _EXACT[tok.kind]) + b")"


def _fast_piece(tokens: list[_Token], i: int, esc: Escaping, capture: bool, guard: bytes) -> bytes:
    """Strict for the fields it reads, lenient for the fields it skips.

    A skipped field is "anything up to the byte that ends it". Between quotes (request,
    referer, user agent: most of a line) that is ``[^"]*``, one negated byte, which sre runs in
    a tight loop about five times faster than any set. ``fields()`` is the strict reader.
    """
    tok = tokens[i]
    if isinstance(tok, bytes):
        return re.escape(tok)
    stop, quoted = _context(tokens, i)
    if tok.kind is _Kind.TIME_CLF:
        body = rb".{26}"  # the time converter checks it
    elif capture or tok.strf:
        body = _strf_regex(tok.strf) if tok.strf else _EXACT[tok.kind]
    elif esc is Escaping.BACKSLASH and quoted:
        body = rb'[^"\\\n]*(?:\\.[^"\\\n]*)*'  # \" does not end it
    elif quoted and esc is Escaping.NGINX:
        body = rb'[^"]*' + guard
    elif stop and esc is not Escaping.NONE:
        body = _printable_but(stop[0])
    else:
        body = _text_class(quoted, esc) if tok.kind is _Kind.TEXT else _EXACT[tok.kind]
    return b"(" + body + b")" if capture else body


def _printable_but(stop: int) -> bytes:
    """An unquoted field: printable bytes but the one that ends it. A range, which sre tests
    nearly as fast as one negated byte (sets of single bytes are five times slower), and
    which holds no newline, so a match cannot run from a cut line into the next."""
    lo = rb"!-" + re.escape(bytes([stop - 1])) if stop > 0x21 else b""
    hi = re.escape(bytes([max(stop + 1, 0x21)])) + rb"-\xff" if stop < 0xFF else b""
    return b"[" + lo + hi + b"]*"


def _crossing_guard(tokens: list[_Token]) -> bytes:
    """A lookbehind that stops a quoted field from ending on the next line.

    ``[^"]*`` stops at a newline only because a line holds its closing quote. Should a line be
    cut inside a quoted field (a full disk: nginx writes lines whole), the field would run on
    to the next line's first quote, so it would end with the bytes the format puts before that
    quote (`` ] `` in ``combined``): a value ending so is refused by the fast regex and read
    by the exact one instead.
    """
    for i, tok in enumerate(tokens):
        if isinstance(tok, bytes) and b'"' in tok:
            before = tok[: tok.index(b'"')]
            if not before:
                return rb"(?<!\n)" if i == 0 else b""
            return b"(?<!" + re.escape(before[-2:]) + b")"
    return b""


def _fast_line(
    tokens: list[_Token], esc: Escaping, status: _Field, tfield: _Field | None
) -> tuple[bytes, bytes]:
    """The fast regex of a line (time and status captured, in line order), and that of a later
    line of a block, whose time must equal the first line's and whose status alone is captured.

    It reads up to the literal after the last field it needs; the rest of the line is ``.*``.
    """
    end = max(tokens.index(status), tokens.index(tfield) if tfield else -1) + 1
    tail = rb"(?![^\n])"
    if end < len(tokens):
        nxt = tokens[end]
        tail = (re.escape(nxt) if isinstance(nxt, bytes) else b"") + rb".*"
    ref = rb"(?:\1)" if tfield and tokens.index(tfield) < tokens.index(status) else rb"(?:\2)"
    g = _crossing_guard(tokens)
    first = [_fast_piece(tokens, i, esc, tokens[i] in (status, tfield), g) for i in range(end)]
    same = [
        ref if tokens[i] is tfield else _fast_piece(tokens, i, esc, tokens[i] is status, g)
        for i in range(end)
    ]
    return b"".join(first) + tail, b"".join(same) + tail


# ---- time ----------------------------------------------------------------------------------
_MONTHS: Final = {m.encode(): i for i, m in enumerate(calendar.month_abbr) if m}
_CLF: Final = re.compile(_EXACT[_Kind.TIME_CLF])


def _clf_time(raw: bytes) -> float | None:
    """``24/Nov/2026:09:26:03 +0000`` to epoch seconds."""
    if _CLF.fullmatch(raw) is None or raw[3:6] not in _MONTHS:
        return None
    off = dt.timedelta(hours=int(raw[22:24]), minutes=int(raw[24:26]))
    try:
        tz = dt.timezone(-off if raw[21] == 0x2D else off)
        d = dt.datetime(int(raw[7:11]), _MONTHS[raw[3:6]], int(raw[:2]), int(raw[12:14]),
                        int(raw[15:17]), int(raw[18:20]), tzinfo=tz)  # fmt: skip
    except ValueError:
        return None
    return d.timestamp()


def _iso_time(raw: bytes) -> float | None:
    try:
        d = dt.datetime.fromisoformat(raw.decode("ascii"))
    except ValueError:
        return None
    return d.timestamp() if d.tzinfo is not None else None


def _converter(f: _Field) -> Callable[[bytes], float | None]:
    if f.kind is _Kind.TIME_CLF:
        return _clf_time
    if f.kind is _Kind.TIME_ISO:
        return _iso_time
    if f.kind is _Kind.TIME_EPOCH:
        return lambda raw: float(raw) * f.scale

    def strf(raw: bytes) -> float | None:
        try:  # without %z it is the server's local time, as Apache writes it
            return dt.datetime.strptime(raw.decode("ascii"), f.strf).timestamp()
        except ValueError:
            return None

    return strf


_STRF: Final = {
    **dict.fromkeys("mdHMSyI", rb"\d\d"),
    **dict.fromkeys("ab", rb"[A-Za-z]{3}"),
    **dict.fromkeys("AB", rb"[A-Za-z]+"),
    "Y": rb"\d{4}",
    "j": rb"\d{3}",
    "z": rb"[+-]\d{4}",
    "p": rb"[AP]M",
    "%": rb"%",
}
_STRF_ALIASES: Final = {"T": "%H:%M:%S", "F": "%Y-%m-%d", "D": "%m/%d/%y", "R": "%H:%M", "h": "%b"}


def _expand_strf(fmt: str, column: int) -> str:
    out = re.sub("%([TFDRh])", lambda m: _STRF_ALIASES[m.group(1)], fmt)
    for m in re.finditer("%(.?)", out):
        if m.group(1) not in _STRF:
            raise FormatError(f"unsupported strftime directive '%{m.group(1)}' in a time", column)
    return out


def _strf_regex(fmt: str) -> bytes:
    parts = re.split("(%.)", fmt)
    return b"".join(_STRF[p[1]] if i % 2 else re.escape(p.encode()) for i, p in enumerate(parts))


# Fields that hold a request's duration, and their unit in seconds.
_DURATION: Final = {
    "request_time": 1.0,
    "request_time_s": 1.0,
    "request_time_ms": 1e-3,
    "request_time_us": 1e-6,
}

# ---- nginx ---------------------------------------------------------------------------------
_NGINX_KINDS: Final = {
    name: kind
    for kind, names in (
        (_Kind.STATUS, "status"),
        (_Kind.TIME_CLF, "time_local"),
        (_Kind.TIME_ISO, "time_iso8601"),
        (_Kind.TIME_EPOCH, "msec"),
        (_Kind.DECIMAL, "request_time"),
        (_Kind.TOKEN, "remote_addr realip_remote_addr server_addr"),
        (_Kind.INT, "body_bytes_sent bytes_sent request_length connection connection_requests"),
        (_Kind.INT, "pid remote_port server_port"),
        (_Kind.LIST, "upstream_status upstream_response_time upstream_connect_time"),
        (_Kind.LIST, "upstream_header_time upstream_response_length upstream_bytes_received"),
        (_Kind.LIST, "upstream_bytes_sent"),
    )
    for name in names.split()
}
_NGINX_VAR: Final = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_CONF_ESCAPES: Final = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def compile_nginx_format(
    fmt: str,
    *,
    escape: str = "default",
    name: str = "custom",
    description: str = "an operator's nginx log_format",
) -> AccessFormat:
    """Compile an nginx ``log_format`` string (its quoted parts joined, as nginx joins them).

    ``escape`` is the ``log_format``'s ``escape=`` parameter; config escapes (``\\"``) are undone.
    """
    try:
        esc = Escaping(escape)
    except ValueError:
        raise FormatError(f"unknown escape={escape!r} (default, json or none)", 1) from None
    return AccessFormat(name, description, fmt, _tokenize(fmt, "$", _nginx_field), esc)


def _nginx_field(fmt: str, i: int) -> tuple[list[_Token] | str, int]:
    m = _NGINX_VAR.match(fmt, i)
    if m is None:
        raise FormatError("'$' must start a variable ($name or ${name})", i + 1)
    var = m.group(1) or m.group(2)
    return [_Field(var, _NGINX_KINDS.get(var, _Kind.TEXT))], m.end()


def _tokenize(
    fmt: str, sigil: str, field: Callable[[str, int], tuple[list[_Token] | str, int]]
) -> list[_Token]:
    """Split a format into literals (bytes, config escapes undone) and fields."""
    tokens: list[_Token] = []
    lit: list[str] = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == sigil:
            got, i = field(fmt, i)
            if isinstance(got, str):
                lit.append(got)
                continue
            if lit:
                tokens.append("".join(lit).encode())
                lit.clear()
            tokens += got
            continue
        if c == "\\" and fmt[i + 1 : i + 2] in _CONF_ESCAPES:
            c = _CONF_ESCAPES[fmt[i + 1]]
            i += 1
        if c in "\n\r":
            raise FormatError("a line break would split every entry over two lines", i + 1)
        lit.append(c)
        i += 1
    if lit:
        tokens.append("".join(lit).encode())
    return tokens


# ---- Apache --------------------------------------------------------------------------------
_APACHE_DIRECTIVE: Final = re.compile(r"%(!?\d{3}(?:,\d{3})*)?([<>])?(?:\{([^}]*)\})?(\^t[io]|.?)")
# directive, field name, kind
_APACHE_TABLE: Final = """
a remote_addr TOKEN      A local_addr TOKEN     B bytes INT          b bytes INT_OR_DASH
D request_time_us INT    f filename TEXT        h remote_host TOKEN  H protocol TOKEN
k keepalive INT          l remote_logname TEXT  L log_id TOKEN       m method TOKEN
p port INT               P pid TOKEN            q query TEXT         r request TEXT
R handler TEXT           u remote_user TEXT     U url_path TEXT      v server_name TOKEN
V server_name TOKEN      X connection_status TOKEN                   I bytes_in INT
O bytes_out INT          S bytes_total INT
"""
_WORDS: Final = _APACHE_TABLE.split()
_APACHE_SIMPLE: Final = {
    d: (n, _Kind[k]) for d, n, k in zip(_WORDS[0::3], _WORDS[1::3], _WORDS[2::3], strict=True)
}
_APACHE_NAMED: Final = {
    "i": "http_",
    "o": "sent_http_",
    "e": "env_",
    "n": "note_",
    "C": "cookie_",
    "^ti": "trailer_in_",
    "^to": "trailer_out_",
}
_EPOCHS: Final = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def compile_apache_format(
    fmt: str, *, name: str = "custom", description: str = "an operator's Apache LogFormat"
) -> AccessFormat:
    """Compile an Apache ``LogFormat`` string; config escapes (``\\"``, ``\\t``) are undone."""
    return AccessFormat(
        name, description, fmt, _tokenize(fmt, "%", _apache_field), Escaping.BACKSLASH
    )


def _apache_field(fmt: str, i: int) -> tuple[list[_Token] | str, int]:
    """The tokens of the ``%`` directive at ``i`` (a plain string for ``%%``)."""
    m = cast(re.Match[str], _APACHE_DIRECTIVE.match(fmt, i))  # every part is optional
    cond, mod, arg, d = m.groups()
    col = i + 1
    if d == "%":
        return "%", m.end()
    if d == "s":  # %s and %<s: the original request's status; %>s: the final one
        return [_Field("status" if mod == ">" else "original_status", _Kind.STATUS)], m.end()
    if d == "t":
        return _apache_time(arg, col), m.end()
    if d == "T":
        unit = {None: "s", "s": "s", "ms": "ms", "us": "us"}.get(arg)
        if unit is None:
            raise FormatError(f"unknown %{{{arg}}}T unit (s, ms or us)", col)
        return [_Field(f"request_time_{unit}", _Kind.INT)], m.end()
    if d in _APACHE_NAMED:
        if not arg:
            raise FormatError(f"%{d} needs a name: %{{Name}}{d}", col)
        fname = _APACHE_NAMED[d] + re.sub(r"\W", "_", arg.lower())
        return [_Field(fname, _Kind.TEXT)], m.end()
    if d in _APACHE_SIMPLE:
        fname, kind = _APACHE_SIMPLE[d]
        if cond and kind is not _Kind.TEXT:
            kind = _Kind.TOKEN  # "-" when the status condition does not hold
        return [_Field(fname, kind)], m.end()
    raise FormatError(f"unknown directive '%{d}'" if d else "'%' ends the format", col)


def _apache_time(arg: str | None, col: int) -> list[_Token]:
    if arg is None:
        return [b"[", _Field("time", _Kind.TIME_CLF), b"]"]
    spec = arg.removeprefix("begin:").removeprefix("end:")
    if spec in _EPOCHS:
        return [_Field("time", _Kind.TIME_EPOCH, scale=_EPOCHS[spec])]
    if spec in ("msec_frac", "usec_frac"):
        return [_Field("time_frac", _Kind.INT)]
    return [_Field("time", _Kind.TIME_STRF, strf=_expand_strf(spec, col))]


# ---- the built-ins -------------------------------------------------------------------------
_COMBINED: Final = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)
_A_COMMON: Final = '%h %l %u %t "%r" %>s %b'
_A_COMBINED: Final = _A_COMMON + ' "%{Referer}i" "%{User-Agent}i"'

ACCESS_FORMATS: Final[dict[str, AccessFormat]] = {
    f.name: f
    for f in (
        compile_nginx_format(
            _COMBINED, name="nginx-combined", description="nginx's predefined `combined` format"
        ),
        compile_nginx_format(
            _COMBINED + " rt=$request_time us=$upstream_status urt=$upstream_response_time",
            name="nginx-timed",
            description="`combined` plus ` rt=$request_time us=$upstream_status "
            "urt=$upstream_response_time`",
        ),
        compile_apache_format(
            _A_COMMON, name="apache-common", description="Apache's common log format"
        ),
        compile_apache_format(
            _A_COMBINED, name="apache-combined", description="Apache's combined log format"
        ),
        compile_apache_format(
            _A_COMBINED + " %D",
            name="apache-combined-time",
            description="Apache's combined format plus ` %D` (request time in microseconds)",
        ),
    )
}
"""The built-in formats by name; a config's ``format:`` names one of these."""
