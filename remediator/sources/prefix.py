"""Platform prefixes in front of a server's own error line, found and taken off.

A line read from somewhere else than the server's own file carries what that somewhere added:

* Docker ``docker logs --timestamps`` and Kubernetes ``kubectl logs --timestamps``: an RFC 3339
  time (``2026-11-25T11:33:13.146849412Z ``); CRI log files add the stream and a tag
  (``... stderr F ``); ``docker compose logs`` puts the service first (``web-1  | ``);
* syslog and ``journalctl -o short``/``short-precise``: ``Nov 25 11:33:13 host prog[pid]: ``;
  ``journalctl -o short-iso``/``short-iso-precise``: ``2026-11-25T11:33:13+0000 host prog[pid]: ``;
  without a time (fail2ban's samples, some relays): ``host prog[pid]: ``;
* ``journalctl -o export``: the ``MESSAGE=`` field (its other fields are not error lines);
* a PaaS router (``2026-11-25T11:33:13.125436+00:00 app[web.1]: ``).

:func:`strip` says where the server's own line starts and what time the prefix gave: an RFC 3339
time is absolute; a syslog time has no year and no zone (local time, the year that puts it
closest before ``now``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from typing import Final

__all__ = ["Prefix", "strip"]

_MONTHS: Final = {m.encode(): i for i, m in enumerate(calendar.month_abbr) if m}
# host and program (``host nginx[42]: ``, ``host nginx: ``), or a program with its [id] alone
# (``app[web.1]: ``); never a bare ``WORD: `` (that is the server's own ``ERROR: ``, ``AH00526: ``)
_HOSTPROG: Final = rb"(?:[\w.-]+ [\w./@-]+(?:\[[\w.]+\])?|[\w./@-]+\[[\w.]+\]): "

_RE: Final = re.compile(
    rb"(?:[\w.-]+ +\| )?"  # docker compose: the service
    rb"(?:"  # (the whole alternation is optional: a service name alone is a prefix too)
    rb"(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?) "
    rb"(?:(?:stdout|stderr) [FP] |" + _HOSTPROG + rb")?"
    rb"|(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(?P<day>\d\d?) "
    rb"(?P<hms>\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,9}))? " + _HOSTPROG + rb""
    rb"|[\w.-]+ [\w./@-]+\[\d+\]: "  # host prog[pid]: with no time
    rb"|MESSAGE="
    rb")?"
)


@dataclass(frozen=True, slots=True)
class Prefix:
    """Where the server's own line starts in a line, and the time its prefix gave (or None)."""

    start: int
    time: float | None
    zoned: bool  # the time carries its zone (RFC 3339): it wins over the server's local time


_NONE: Final = Prefix(0, None, zoned=False)


def strip(line: bytes, tz: dt.tzinfo | None = None, now: float | None = None) -> Prefix:
    """The platform prefix of ``line``, if any. ``tz``: the zone of a syslog time (None: this
    host's); ``now``: the time a syslog date is nearest before (None: the wall clock)."""
    m = _RE.match(line)
    if m is None or m.end() == 0:
        return _NONE
    iso = m.group("iso")
    if iso is not None:
        return Prefix(m.end(), *_iso(iso, tz))
    mon = m.group("mon")
    if mon is not None:
        return Prefix(m.end(), _syslog(m, tz, now), zoned=False)
    return Prefix(m.end(), None, zoned=False)


def _iso(text: bytes, tz: dt.tzinfo | None) -> tuple[float | None, bool]:
    s = text.decode("ascii").replace(",", ".")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        head, dot, rest = s.partition(".")
        if dot:  # nanoseconds (Docker) are more than datetime takes: keep microseconds
            digits = len(rest) - len(rest.lstrip("0123456789"))
            s = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        return None, False
    if t.tzinfo is None:
        return t.replace(tzinfo=tz).timestamp(), False
    return t.timestamp(), True


def _syslog(m: re.Match[bytes], tz: dt.tzinfo | None, now: float | None) -> float | None:
    ref = dt.datetime.fromtimestamp(now if now is not None else dt.datetime.now().timestamp(), tz)
    hh, mm, ss = (int(x) for x in m.group("hms").split(b":"))
    frac = m.group("frac")
    usec = int(frac.ljust(6, b"0")[:6]) if frac else 0
    for year in (ref.year, ref.year - 1):  # a date after now (plus a day of slack) is last year's
        try:
            t = dt.datetime(year, _MONTHS[m.group("mon")], int(m.group("day")), hh, mm, ss, usec,
                            tzinfo=tz)  # fmt: skip
        except ValueError:
            continue
        if t.timestamp() <= ref.timestamp() + 86400:
            return t.timestamp()
    return None
