"""The hot path: the status and time of every line of a buffer, at C speed.

A format's *fast* regex reads only the time and the status. :meth:`Scanner.scan` runs it with
``Pattern.split`` over a whole buffer so the per-line work happens in C. Eight lines go in one
match: the time is captured on the first and checked on the others by backreference, so a line
costs no time conversion, and a 200 (most lines) no object at all: its status group is left
unset, so the scan's statuses are *codes*, None for a 200 and the 3 bytes of any other,
counted in C (:func:`tally`) and turned into ints only when asked. Whatever a match leaves
(a change of second, an odd line) is read line by line, and a line the fast regex rejects (a
user name with a space) is retried with the exact one: odd but legal lines are slower, never
lost. A line that fits neither regex is *malformed*: counted, never raised. All of it works
on bytes.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import mmap
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, cast, overload

from remediator.sources.access.regex import INNER_END, LINE_END
from remediator.sources.access.timeparse import TimeCache

Code = bytes | None
"""A line's status as the fast regex leaves it: None for a 200, else its three digits."""
COMMON: Final = 200
STATUS: Final[dict[Code, int]] = {None: COMMON, **{b"%03d" % i: i for i in range(1000)}}
CODE: Final[dict[int, Code]] = {i: None if i == COMMON else b"%03d" % i for i in range(1000)}
BLOCK: Final = 8  # lines per match of the block regex
WINDOW: Final = 1 << 20  # bytes scanned at once


def tally(codes: list[Code]) -> Counter[int]:
    """Counts per status of ``codes``: the 200s counted by identity, the rest hashed, in C."""
    counts: Counter[int] = Counter()
    common = codes.count(None)
    if common:
        counts[COMMON] = common
    if common < len(codes):
        for code, n in Counter(filter(None, codes)).items():
            counts[STATUS[code]] += n
    return counts


@functools.cache
def _at_least(status: int) -> frozenset[Code]:
    return frozenset(CODE[i] for i in range(status, 1000))


class Statuses(Sequence[int]):
    """The statuses of consecutive well-formed lines, kept as codes: read as ints, counted and
    searched at C speed."""

    __slots__ = ("_codes",)

    def __init__(self, codes: list[Code]) -> None:
        self._codes = codes

    def __len__(self) -> int:
        return len(self._codes)

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Statuses: ...
    def __getitem__(self, i: int | slice) -> int | Statuses:
        if isinstance(i, slice):
            return Statuses(self._codes[i])
        return STATUS[self._codes[i]]

    def __repr__(self) -> str:
        return f"Statuses({list(self)!r})"

    def counts(self) -> Counter[int]:
        return tally(self._codes)

    def newest(self, at_least: int, want: int) -> list[int]:
        """Where the last ``want`` lines with a status of ``at_least`` or more are, in order."""
        codes = self._codes
        hits = map(_at_least(at_least).__contains__, reversed(codes))
        found = itertools.compress(range(len(codes) - 1, -1, -1), hits)
        return list(itertools.islice(found, want))[::-1]


@dataclass(slots=True)
class Batch:
    """What a scan read: the status of each well-formed line in file order, and when."""

    codes: list[Code]
    """The status of each well-formed line as a :data:`Code`; :attr:`statuses` as ints."""
    runs: list[tuple[float, int]] | None
    """(epoch seconds, how many consecutive statuses have that time); None without a time
    field. Lines share their second, so this stays short where a time per line would not."""
    malformed: int
    bad: list[int] = field(default_factory=list)
    """Where the malformed lines are: their indices among the lines scanned (0-based)."""

    @property
    def lines(self) -> int:
        return len(self.codes) + self.malformed

    @property
    def statuses(self) -> list[int]:
        """The status of each well-formed line in file order."""
        return list(map(STATUS.__getitem__, self.codes))

    def status_run(self, start: int, n: int) -> Statuses:
        """The statuses of well-formed lines ``start`` to ``start + n``."""
        return Statuses(self.codes[start : start + n])

    @property
    def times(self) -> list[float] | None:
        """One time per status, expanded from :attr:`runs`."""
        if self.runs is None:
            return None
        return list(itertools.chain.from_iterable(itertools.repeat(t, n) for t, n in self.runs))

    @classmethod
    def join(cls, batches: Iterable[Batch]) -> Batch:
        """One batch of several read one after the other."""
        codes: list[Code] = []
        runs: Runs | None = None
        bad: list[int] = []
        for b in batches:
            at = len(codes) + len(bad)
            bad += (at + i for i in b.bad)
            codes += b.codes
            if b.runs is not None:
                runs = runs if runs is not None else Runs()
                for t, n in b.runs:
                    runs.add(t, n)
        return cls(codes, runs, len(bad), bad)

    def by_time(self) -> list[tuple[float, Counter[int]]]:
        """Status counts per run of lines sharing a time, in order: what a detector window eats."""
        if self.runs is None:
            raise ValueError("the format has no time field")
        out, i = [], 0
        for t, n in self.runs:
            out.append((t, tally(self.codes[i : i + n])))
            i += n
        return out


class Runs(list[tuple[float, int]]):
    """(time, count) pairs; adding the time of the last pair lengthens it."""

    def add(self, t: float, n: int) -> None:
        if self and self[-1][0] == t:
            self[-1] = (t, self[-1][1] + n)
        else:
            self.append((t, n))


Pair = tuple[float | None, int]


class Scanner:
    """A format's regexes at work: one line, a list of lines, a buffer, a file."""

    def __init__(
        self,
        *,
        line: bytes,
        same: bytes,
        exact: re.Pattern[bytes],
        picks: tuple[int, ...],
        tpos: int,
        scale: float,
        tcache: TimeCache | None,
    ) -> None:
        self._line = re.compile(line + LINE_END)
        self._split = re.compile(b"\n" + line + LINE_END).split
        self._exact = exact
        self._picks = picks  # exact-regex groups of (time, status), or (status,)
        self._tpos = tpos  # 1 when the status comes before the time in a line
        self._scale = scale  # epoch times: seconds per unit; 0.0 otherwise
        self._tc = tcache
        # Times with sub-second resolution differ on every line: no blocks for them.
        self._block_src = (
            None if scale else b"\n" + line + (INNER_END + b"\n" + same) * (BLOCK - 1) + LINE_END
        )

    @functools.cached_property
    def _block(self) -> Callable[[bytes | memoryview], list[bytes]] | None:
        return None if self._block_src is None else re.compile(self._block_src).split

    # ---- one line ------------------------------------------------------------------------
    def one(self, line: bytes) -> Pair | None:
        """(time or None, status) of one line without its newline; None when malformed."""
        m = self._line.match(line)
        r = self._pair(m.groups()[:: -1 if self._tpos else 1]) if m else None
        if r is None and (e := self._exact.fullmatch(line)) is not None:
            r = self._pair(e.group(*self._picks) if len(self._picks) > 1 else (e[self._picks[0]],))
        return r

    def fast(self, line: bytes) -> bool:
        """Whether the fast regex alone reads ``line`` (no newline)."""
        return self._line.match(line) is not None

    def _pair(self, g: tuple[bytes, ...]) -> Pair | None:
        if self._tc is None:
            return None, STATUS[g[0]]
        t = float(g[0]) * self._scale if self._scale else self._tc[g[0]]
        return None if math.isnan(t) else (t, STATUS[g[1]])

    # ---- many lines ----------------------------------------------------------------------
    def scan(self, buf: bytes) -> Batch:
        """Read a buffer of whole lines (the last may lack its newline)."""
        if len(buf) > WINDOW:  # a megabyte at a time keeps lists and copies in the cache
            return Batch.join(self.scan_file(io.BytesIO(buf), WINDOW))
        return self._scan_nl(b"\n" + buf.removesuffix(b"\n") if buf else b"")

    def scan_region(self, view: bytes | memoryview) -> Batch:
        """Read ``\\nLINE\\nLINE...`` in place (no final newline)."""
        return self._scan_nl(view)

    def scan_lines(self, lines: list[bytes]) -> Batch:
        """Read lines without their newlines (what a tailer hands over)."""
        return self._scan_nl(b"\n" + b"\n".join(lines) if lines else b"")

    def scan_file(self, f: io.BufferedIOBase, block_size: int = WINDOW) -> Iterator[Batch]:
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
        runs, out, bad = Runs(), list[Code](), list[int]()
        if self._block is None:
            self._rest(view, out, runs, bad)
            return Batch(out, runs if self._tc is not None else None, len(bad), bad)
        parts = self._block(view)
        timed = self._tc is not None
        stride = 1 + BLOCK + timed
        gaps = parts[0::stride]
        last = len(gaps) - 1
        btimes, unread = (
            self._times(parts[1 + self._tpos :: stride]) if timed else ([0.0] * last, 0)
        )
        del parts[0::stride]
        if timed:
            del parts[self._tpos :: stride - 1]
        codes = cast(list[Code], parts)  # what is left: the statuses
        holes = list(itertools.compress(range(last), gaps))  # few: new seconds, odd lines
        if not holes and not unread:  # the common case: no copy
            for t, group in itertools.groupby(btimes):
                runs.add(t, len(list(group)) * BLOCK)
            self._rest(gaps[last], codes, runs, bad)
            return Batch(codes, runs if timed else None, len(bad), bad)
        lo = 0
        for hi in [*holes, last]:  # blocks lo..hi-1, then what lies between blocks hi-1 and hi
            for t, group in itertools.groupby(btimes[lo:hi]):
                n = len(list(group))
                if math.isnan(t):
                    at = len(out) + len(bad)
                    bad += range(at, at + n * BLOCK)
                else:
                    out += codes[lo * BLOCK : (lo + n) * BLOCK]
                    runs.add(t, n * BLOCK)
                lo += n
            self._rest(gaps[hi], out, runs, bad)
        return Batch(out, runs if timed else None, len(bad), bad)

    def _rest(self, view: bytes | memoryview, out: list[Code], runs: Runs, bad: list[int]) -> None:
        """Read ``\\nLINE...`` a match per line into ``out`` and ``runs``; the malformed lines'
        indices (counting every line scanned so far: ``len(out) + len(bad)``) into ``bad``."""
        if not view:
            return
        parts = self._split(view)
        timed = self._tc is not None
        step = 2 + timed
        gaps = parts[0::step]
        codes: list[Code] = parts[step - 1 - self._tpos :: step]
        times, unread = (
            self._times(parts[1 + self._tpos :: step]) if timed else ([0.0] * len(codes), 0)
        )
        if not any(gaps) and not unread:
            out += codes
            for t, group in itertools.groupby(times):
                runs.add(t, len(list(group)))
            return
        for i, gap in enumerate(gaps):
            pairs: list[tuple[float | None, Code] | None] = []
            for line in gap.split(b"\n")[1:]:
                r = self.one(line)
                pairs.append(None if r is None else (r[0], CODE[r[1]]))
            if i < len(codes):
                pairs.append((times[i], codes[i]))
            for p in pairs:
                if p is None or (timed and math.isnan(p[0] or 0.0)):
                    bad.append(len(out) + len(bad))
                else:
                    out.append(p[1])
                    runs.add(p[0] or 0.0, 1)

    def _times(self, raw: list[bytes]) -> tuple[list[float], int]:
        """Epoch seconds (NaN where unreadable) and how many were unreadable."""
        if self._scale:
            return [float(r) * self._scale for r in raw], 0
        tc = cast(TimeCache, self._tc)
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
