"""Time zones: naming one (``--tz``), printing a time with its zone, and noticing a wrong one.

nginx, PHP-FPM and Apache write their error logs in the server's local time with no UTC offset;
access logs carry one. Replaying a host's logs on a machine in another zone shifts every error
line by whole hours, and an incident whose 502s and error causes must coincide disappears.
:func:`parse_zone` reads the zone an operator names for such logs; :func:`hour_skews` notices
when two sources of one replay are apart by whole hours, so the operator is told instead of
being shown a quiet day. ``None`` stands for this machine's own zone (its ``TZ``, summer time
included) throughout.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["Span", "describe", "hour_skews", "offset_text", "parse_zone", "stamp"]

_OFFSET: Final = re.compile(r"(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d\d))?")
_UTC_NAMES: Final = frozenset({"utc", "z", "gmt", "zulu", "universal"})
EXAMPLES: Final = "an IANA name like Europe/Paris, or an offset like +01:00, -0530 or UTC"


def parse_zone(text: str) -> dt.tzinfo:
    """``Europe/Paris``, ``+01:00``, ``-0530``, ``+1``, ``UTC+02:00``, ``UTC`` or ``Z``.

    Raises ValueError with a message for the operator.
    """
    s = text.strip()
    if s.lower() in _UTC_NAMES:
        return dt.UTC
    m = _OFFSET.fullmatch(s)
    if m is not None:
        hours, minutes = int(m.group(2)), int(m.group(3) or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"'{text}' is not a UTC offset: use e.g. +01:00 or -05:30")
        delta = dt.timedelta(hours=hours, minutes=minutes)
        return dt.timezone(-delta if m.group(1) == "-" else delta) if delta else dt.UTC
    try:
        return zoneinfo.ZoneInfo(s)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"'{text}' is not a time zone: use {EXAMPLES}") from None


def describe(tz: dt.tzinfo | None) -> str:
    """How a zone is named back to the operator: ``Europe/Paris``, ``+01:00``, or this machine's."""
    if tz is None:
        here = dt.datetime.now().astimezone()
        return f"this machine's zone ({here.tzname()}, {offset_text(here.utcoffset())})"
    if isinstance(tz, zoneinfo.ZoneInfo):
        return tz.key
    return offset_text(tz.utcoffset(None))


def offset_text(offset: dt.timedelta | None) -> str:
    """``+01:00``, ``-05:30``, ``+00:00``."""
    minutes = round((offset or dt.timedelta()).total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def stamp(t: float, tz: dt.tzinfo | None = None, *, millis: bool = False, date: bool = True) -> str:
    """``2026-11-24 10:26:03 +01:00``: a time in ``tz`` (None: this machine's) with its offset.

    ``millis`` adds ``.281``; ``date=False`` leaves the day out (timeline lines under a header).
    """
    when = dt.datetime.fromtimestamp(t, tz) if tz is not None else dt.datetime.fromtimestamp(t)
    when = when.astimezone() if tz is None else when
    clock = when.strftime("%H:%M:%S") + (f".{when.microsecond // 1000:03d}" if millis else "")
    day = when.strftime("%Y-%m-%d ") if date else ""
    return f"{day}{clock} {offset_text(when.utcoffset())}"


# --- two sources apart by a zone's difference ----------------------------------------------------

HOUR: Final = 3600.0
QUARTER: Final = 900.0
TOLERANCE: Final = 300.0  # how far from a zone difference two starts (and two ends) may be
MAX_HOURS: Final = 26  # UTC-12 to UTC+14: no two zones are further apart
# Zones differ by whole hours, or by a half or three quarters of an hour more (India +05:30,
# Nepal +05:45, central Australia +09:30, Newfoundland -03:30): in quarter hours, every
# difference of at least an hour whose remainder is 0, 2 or 3 quarters.
SKEWS: Final = tuple(
    sorted(
        (sign * q for q in range(4, 4 * MAX_HOURS + 1) if q % 4 in (0, 2, 3) for sign in (1, -1)),
        key=abs,
    )
)


@dataclass(frozen=True)
class Span:
    """The first and last time read from one source of a replay. ``zoned``: its lines carry
    their own UTC offset (an access log); otherwise they were read in the replay's zone."""

    name: str
    first: float
    last: float
    zoned: bool


def hour_skews(spans: Iterable[Span], tz: dt.tzinfo | None = None) -> list[str]:
    """Warnings for pairs of sources (at least one without its own offset) whose times are
    apart by what two zones differ by (:data:`SKEWS`): their starts and their ends both are
    (within :data:`TOLERANCE`), or they do not overlap at all and such a shift would make
    them. ``tz`` is the zone the unzoned ones were read in (None: this machine's)."""
    spans = sorted(spans, key=lambda s: (not s.zoned, s.name))
    out = []
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            if a.zoned and b.zoned:
                continue  # both carry their offset: a zone cannot be what is wrong
            quarters = _apart(a, b)
            if quarters is not None:
                out.append(_warning(a, b, quarters, tz))
    return out


def _skew(d: float) -> int | None:
    """``d`` seconds as a zone difference in quarter hours, or None if it is none."""
    n = round(d / QUARTER)
    return n if n in _SKEW_SET and abs(d - n * QUARTER) <= TOLERANCE else None


_SKEW_SET: Final = frozenset(SKEWS)


def _apart(a: Span, b: Span) -> int | None:
    """How many quarter hours ``b`` is after ``a`` (negative: before), or None if they agree."""
    starts, ends = _skew(b.first - a.first), _skew(b.last - a.last)
    if starts is not None and starts == ends:
        return starts
    if b.first > a.last or b.last < a.first:  # no overlap at all: would a shift make one?
        for n in SKEWS:
            if b.first - n * QUARTER <= a.last and b.last - n * QUARTER >= a.first:
                return n
    return None


def _duration(quarters: int) -> str:
    hours, rest = divmod(abs(quarters), 4)
    return f"{hours} h" + (f" {rest * 15} min" if rest else "")


def _warning(a: Span, b: Span, quarters: int, tz: dt.tzinfo | None) -> str:
    """``a`` is zoned or both are not (the order :func:`hour_skews` gives)."""
    after = "after" if quarters > 0 else "before"
    said = (
        f"{b.name} ({stamp(b.first, tz)} to {stamp(b.last, tz)}) is {_duration(quarters)} {after} "
        f"{a.name} ({stamp(a.first, tz)} to {stamp(a.last, tz)}): "
    )
    if not a.zoned:
        return said + (
            f"neither has a UTC offset and both were read as {describe(tz)}; "
            "were they written by hosts in different zones? replay them one at a time with --tz"
        )
    # b's local clock read in zone o lands (o_true - o) after the truth: its zone is o + hours
    here = dt.datetime.fromtimestamp(b.first, tz) if tz else dt.datetime.fromtimestamp(b.first)
    zone = (here if tz else here.astimezone()).utcoffset() or dt.timedelta()
    guess = offset_text(zone + dt.timedelta(minutes=15 * quarters))
    return said + (
        f"{b.name}'s times have no UTC offset and were read as {describe(tz)}; if its host's "
        f"zone is another, say which with --tz (here perhaps --tz {guess})"
    )
