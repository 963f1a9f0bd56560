"""Which built-in format a log is in: the one that reads most of its lines."""

from __future__ import annotations

from dataclasses import dataclass

from remediator.sources.access.builtin import ACCESS_FORMATS
from remediator.sources.access.compiled import AccessFormat

AUTO = "auto"
"""The format name that asks for a guess."""


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
    out), the first in the registry's order on a tie; None when none reads a single line."""
    lines = [line for line in lines if line.strip()]
    scores = [(f.scan_lines(lines).malformed, i, f) for i, f in enumerate(ACCESS_FORMATS.values())]
    bad, _, best = min(scores, key=lambda s: (s[0], s[1]))
    if not lines or bad == len(lines):
        return None
    also = tuple(f.name for b, _, f in scores if b == bad and f is not best)
    return Guess(best, len(lines) - bad, len(lines), also)
