"""The times access logs carry, to epoch seconds; a cache, since lines share their second."""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Final

from remediator.sources.access.model import Field, FormatError, Kind

CLF: Final = rb"\d\d/[A-Za-z]{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}"
ISO: Final = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d\d:\d\d|Z)"
EPOCH: Final = rb"\d+(?:\.\d+)?"

_MONTHS: Final = {m.encode(): i for i, m in enumerate(calendar.month_abbr) if m}
_CLF: Final = re.compile(CLF)


def clf_time(raw: bytes) -> float | None:
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


def iso_time(raw: bytes) -> float | None:
    """``2026-11-24T09:26:03+00:00`` to epoch seconds; None without a UTC offset."""
    try:
        d = dt.datetime.fromisoformat(raw.decode("ascii"))
    except ValueError:
        return None
    return d.timestamp() if d.tzinfo is not None else None


def converter(f: Field) -> Callable[[bytes], float | None]:
    """How a time field's raw bytes become epoch seconds (None: not a time)."""
    if f.kind is Kind.TIME_CLF:
        return clf_time
    if f.kind is Kind.TIME_ISO:
        return iso_time
    if f.kind is Kind.TIME_EPOCH:
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


def expand_strf(fmt: str, column: int) -> str:
    """A strftime format with its shorthands spelled out; FormatError for what cannot be read."""
    out = re.sub("%([TFDRh])", lambda m: _STRF_ALIASES[m.group(1)], fmt)
    for m in re.finditer("%(.?)", out):
        if m.group(1) not in _STRF:
            raise FormatError(f"unsupported strftime directive '%{m.group(1)}' in a time", column)
    return out


def strf_regex(fmt: str) -> bytes:
    """The byte regex of what an (expanded) strftime format writes."""
    parts = re.split("(%.)", fmt)
    return b"".join(_STRF[p[1]] if i % 2 else re.escape(p.encode()) for i, p in enumerate(parts))


class TimeCache(dict[bytes, float]):
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
