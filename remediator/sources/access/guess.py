"""Which built-in format a log is in: the one that reads most of its lines."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from remediator.sources.access.builtin import ACCESS_FORMATS
from remediator.sources.access.compiled import AccessFormat
from remediator.sources.planted import open_log

AUTO = "auto"
"""The format name that asks for a guess."""
_TAIL_BYTES: Final = 4 << 20  # at most this much of a file's end is read


@dataclass(frozen=True)
class Guess:
    """The best format for some lines, how many of them it read, and the others that read
    as many (``nginx-combined`` and ``apache-combined`` lines look alike)."""

    format: AccessFormat
    parsed: int
    lines: int
    also: tuple[str, ...] = ()

    def describe(self) -> str:
        also = f" (as well: {', '.join(self.also)})" if self.also else ""
        return f"{self.format.name}: {self.parsed} of {self.lines} lines read{also}"


def guess(lines: list[bytes]) -> Guess | None:
    """The built-in that reads most of ``lines`` (without their newlines; blank ones are left
    out); on a tie, the one that reads most without stretching a field (``vhost:port ip - -``
    reads as Apache's combined only with a user name ``- -``), then the first in the
    registry's order. None when none reads a single line."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return None
    scores = []
    for i, f in enumerate(ACCESS_FORMATS.values()):
        parsed = len(lines) - f.scan_lines(lines).malformed
        scores.append(((parsed, f.natural(lines) if parsed else 0, -i), f))
    (parsed, natural, _), best = max(scores, key=lambda s: s[0])
    if not parsed:
        return None
    also = tuple(f.name for s, f in scores if s[:2] == (parsed, natural) and f is not best)
    return Guess(best, parsed, len(lines), also)


def last_lines(path: Path, n: int = 1000) -> list[bytes]:
    """The last ``n`` complete lines of ``path`` (without newlines; blank ones left out);
    OSError when it cannot be read."""
    with os.fdopen(open_log(path), "rb") as f:  # no FIFO, device or planted symlink
        size = os.fstat(f.fileno()).st_size
        start = max(0, size - _TAIL_BYTES)
        f.seek(start)
        data = f.read(_TAIL_BYTES)
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # begun mid-line
    return [line.removesuffix(b"\r") for line in lines if line.strip()][-n:]
