"""A moment as an operator types it: ``14:41``, ``yesterday 14:00``, ``2h`` (ago), ISO 8601, epoch.

Used by ``log --since/--until`` and ``replay --from/--to``. The present and the zone are
parameters (``now``, ``tz``; ``tz`` None is this machine's zone), so the same text always means
the same moment in a test. A time of day means today in ``tz``; ISO 8601 without an offset is
read in ``tz`` too.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from remediator.schema import parse_duration

__all__ = ["EXAMPLES", "parse_when"]

EXAMPLES: Final = "14:41, yesterday 14:00, 2h (ago), 2026-11-24T09:26:00Z, or epoch 1764000000"
_DAY_CLOCK: Final = re.compile(
    r"(?:(?P<day>today|yesterday)(?:\s+|$))?(?:(?P<h>\d{1,2}):(?P<m>\d\d)(?::(?P<s>\d\d))?)?",
    re.IGNORECASE,
)
_EPOCH: Final = re.compile(r"\d{9,11}(?:\.\d+)?")


def parse_when(text: str, now: float, tz: dt.tzinfo | None = None) -> float:
    """Epoch seconds of ``text``; ValueError (with examples) for anything else."""
    s = " ".join(text.split())
    if s.lower() == "now":
        return now
    if _EPOCH.fullmatch(s):
        return float(s)
    ago = parse_duration(s.lower().removesuffix(" ago").replace(" ", ""))
    if ago is not None and s[:1].isdigit():
        return now - ago
    m = _DAY_CLOCK.fullmatch(s)
    if m is not None and (m["day"] or m["h"]):
        return _day_clock(m, now, tz)
    try:
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"'{text}' is not a time: use e.g. {EXAMPLES}") from None
    if when.tzinfo is None and tz is not None:
        when = when.replace(tzinfo=tz)
    return when.timestamp()  # naive and tz None: this machine's zone


def _day_clock(m: re.Match[str], now: float, tz: dt.tzinfo | None) -> float:
    hour, minute, second = int(m["h"] or 0), int(m["m"] or 0), int(m["s"] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"'{m.group(0)}' is not a time of day: use e.g. 14:41 or 09:05:30")
    today = dt.datetime.fromtimestamp(now, tz).date()
    day = today - dt.timedelta(days=1) if (m["day"] or "").lower() == "yesterday" else today
    return dt.datetime.combine(day, dt.time(hour, minute, second), tzinfo=tz).timestamp()
