"""A compiled access-log format: the status and time of every line, every field on demand.

nginx writes ``"``, ``\\`` and non-printable bytes of values as ``\\xHH``, so a ``"`` in one of
its lines is always the format's own: a request, a user agent or TLS bytes cannot move the
status. Apache writes ``\\"``, which its classes allow.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

from remediator.sources.access import regex
from remediator.sources.access.model import (
    DURATION,
    TIMES,
    Escaping,
    Field,
    FormatError,
    Kind,
    Token,
    unique,
)
from remediator.sources.access.scanner import WINDOW, Batch, Scanner
from remediator.sources.access.timeparse import TimeCache, converter


class AccessFormat:
    """A compiled access-log format: fast status and time, every field on demand, batch scans."""

    def __init__(
        self, name: str, description: str, source: str, tokens: list[Token], esc: Escaping
    ) -> None:
        self.name, self.description, self.source, self.escaping = name, description, source, esc
        fields = [t for t in tokens if isinstance(t, Field)]
        statuses = [f for f in fields if f.kind is Kind.STATUS]
        if not statuses:
            raise FormatError("the format has no status field: nothing to count", 1)
        status = next((f for f in statuses if f.name == "status"), statuses[0])
        tfield = next((f for f in fields if f.kind in TIMES), None)
        self.field_names = unique([f.name for f in fields])
        self._upstream = next(
            (i + 1 for i, f in enumerate(fields) if f.name == "upstream_status"), 0
        )
        # (group, seconds per unit) of the request's duration, if the format logs it
        self._duration = next(
            ((i + 1, DURATION[f.name]) for i, f in enumerate(fields) if f.name in DURATION),
            None,
        )
        self._exact = re.compile(regex.exact_line(tokens, esc))
        line, same = regex.fast_line(tokens, esc, status, tfield)
        self._scanner = Scanner(
            line=line,
            same=same,
            exact=self._exact,
            picks=tuple(fields.index(f) + 1 for f in (tfield, status) if f),
            tpos=int(tfield is not None and tokens.index(status) < tokens.index(tfield)),
            scale=tfield.scale if tfield and tfield.kind is Kind.TIME_EPOCH else 0.0,
            tcache=TimeCache(converter(tfield)) if tfield else None,
        )
        self._has_time = tfield is not None

    def __repr__(self) -> str:
        return f"<AccessFormat {self.name} {self.source!r}>"

    @property
    def has_time(self) -> bool:
        return self._has_time

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

    # ---- one line: the live tail, evidence ------------------------------------------------
    def status(self, line: bytes) -> int | None:
        """The status of one line (its newline optional); None when the line is malformed."""
        r = self._scanner.one(line.removesuffix(b"\n"))
        return None if r is None else r[1]

    def time(self, line: bytes) -> float | None:
        """The line's time in epoch seconds; None when malformed or the format has no time."""
        r = self._scanner.one(line.removesuffix(b"\n"))
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

    def natural(self, lines: list[bytes]) -> int:
        """How many of ``lines`` the fast regex reads as they are: the lines a format was
        written for, where another one may read them only by stretching a text field."""
        return sum(1 for line in lines if self._scanner.fast(line))

    # ---- many lines: replay, bursts --------------------------------------------------------
    def scan(self, buf: bytes) -> Batch:
        """Read a buffer of whole lines (the last may lack its newline)."""
        return self._scanner.scan(buf)

    def scan_region(self, view: bytes | memoryview) -> Batch:
        """Read ``\\nLINE\\nLINE...`` (a newline before each line, none after the last) in
        place: what a caller with its own buffer hands over without a copy."""
        return self._scanner.scan_region(view)

    def scan_lines(self, lines: list[bytes]) -> Batch:
        """Read lines without their newlines (what a tailer hands over)."""
        return self._scanner.scan_lines(lines)

    def scan_file(self, f: io.BufferedIOBase, block_size: int = WINDOW) -> Iterator[Batch]:
        """Read a binary file to its end, a :class:`Batch` per block; a last partial line counts.

        A plain file is mapped into memory and read in place; anything else (gzip, a pipe) is
        read into one reused buffer.
        """
        return self._scanner.scan_file(f, block_size)
