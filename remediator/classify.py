"""``remediator classify``: what each error-log line says, like ``fail2ban-regex`` but for causes.

For every line: its cause (or none), its time, and the rule that matched (``format/rule``, the
rules of :mod:`remediator.sources.errorrules`), so an operator can test their own logs before a
playbook depends on them. A line without a time of its own takes the last known time and is
counted ``untimed`` (as ``replay`` does). Without ``--format`` or ``--source`` each line is
tried against every error format. Text output escapes what the line holds (control
characters); ``--json`` prints one object per line and a summary last.
"""

from __future__ import annotations

import collections
import datetime as dt
import errno
import gzip
import json
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO, cast

from remediator import escape
from remediator.sources.errorlog import ERROR_FORMATS, ErrorFormat, Verdict

__all__ = [
    "ERROR_FORMATS",
    "Tally",
    "classify_lines",
    "formats_for",
    "open_input",
    "print_json",
    "print_json_summary",
    "print_text",
    "print_text_summary",
]


@dataclass
class Tally:
    """What was read: lines, causes found, lines that had no time of their own."""

    lines: int = 0
    untimed: int = 0
    causes: collections.Counter[str] = field(default_factory=collections.Counter)

    def summary(self) -> dict[str, object]:
        return {
            "summary": True,
            "lines": self.lines,
            "classified": sum(self.causes.values()),
            "causes": dict(sorted(self.causes.items())),
            "untimed": self.untimed,
        }


@dataclass(frozen=True, slots=True)
class Row:
    """One line's verdict."""

    where: str  # "N", or "FILE:N" when several inputs are read
    number: int
    text: str
    verdict: Verdict
    time: float | None
    untimed: bool


def open_input(name: str, stdin: BinaryIO) -> BinaryIO:
    """A named file (gzip told by its first bytes), or ``stdin`` for ``-``. A name must be a
    regular file: a device or a FIFO (``/dev/zero`` has no line end) is refused (OSError)."""
    if name == "-":
        return stdin
    path = Path(name)
    if not stat.S_ISREG(path.stat().st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    with path.open("rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return cast(BinaryIO, gzip.GzipFile(path, "rb"))
    return path.open("rb")


def _judge(line: bytes, formats: list[ErrorFormat]) -> tuple[Verdict, ErrorFormat | None]:
    timed: ErrorFormat | None = None
    for fmt in formats:
        v = fmt.verdict(line)
        if v.cause is not None:
            return v, fmt
        if timed is None and fmt.time(line, dt.UTC) is not None:
            timed = fmt  # the dialect the line is written in, for its time
    return Verdict(None, None), timed


def classify_lines(
    lines: Iterable[bytes],
    formats: list[ErrorFormat],
    tally: Tally,
    *,
    where: str = "",
    tz: dt.tzinfo | None = None,
) -> Iterator[Row]:
    """The verdict of each line, in order; ``tally`` counts them."""
    last: float | None = None
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n")
        verdict, fmt = _judge(line, formats)
        t = (fmt or formats[0]).time(line, tz)
        untimed = t is None
        if untimed:
            tally.untimed += 1
            t = last
        last = t
        tally.lines += 1
        if verdict.cause is not None:
            tally.causes[verdict.cause.value] += 1
        text = line.decode("utf-8", "surrogateescape")
        yield Row(f"{where}{n}", n, text, verdict, t, untimed)


def formats_for(name: str | None) -> list[ErrorFormat]:
    """One named format, or every one (tried in turn) when None."""
    return [ERROR_FORMATS[name]] if name is not None else list(ERROR_FORMATS.values())


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    stamp = dt.datetime.fromtimestamp(t, dt.UTC)
    spec = "seconds" if stamp.microsecond == 0 else "microseconds"
    return stamp.isoformat(timespec=spec).replace("+00:00", "Z")


def print_text(rows: Iterable[Row], out: TextIO) -> None:
    """``WHERE  TIME  CAUSE  RULE  LINE`` for every line (``~``: the time of a line before)."""
    for r in rows:
        cause = r.verdict.cause.value if r.verdict.cause else "-"
        when = _iso(r.time) or "-"
        if r.untimed and r.time is not None:
            when += "~"
        line = f"{r.where:>6}  {when:<28} {cause:<22} {r.verdict.rule or '-':<32} {r.text}"
        out.write(escape.text(line) + "\n")


def print_text_summary(tally: Tally, out: TextIO) -> None:
    causes = ", ".join(f"{k}: {v}" for k, v in sorted(tally.causes.items())) or "none"
    out.write(
        f"\n{tally.lines} lines, {sum(tally.causes.values())} classified ({causes}), "
        f"{tally.untimed} untimed\n"
    )


def print_json(rows: Iterable[Row], out: TextIO) -> None:
    """One object per line: ``{"line", "cause", "time", "rule", "untimed"}`` (and ``file``
    when several inputs are read)."""
    for r in rows:
        rec: dict[str, object] = {
            "line": r.number,
            "cause": r.verdict.cause.value if r.verdict.cause else None,
            "time": _iso(r.time),
            "rule": r.verdict.rule,
            "untimed": r.untimed,
        }
        if r.where != str(r.number):
            rec["file"] = r.where.rsplit(":", 1)[0]
        out.write(json.dumps(rec, separators=(",", ":")) + "\n")


def print_json_summary(tally: Tally, out: TextIO) -> None:
    out.write(json.dumps(tally.summary(), separators=(",", ":")) + "\n")
