"""Error-log classifiers: which :class:`Cause` a server's error line reports, and when.

A line is split into the server's own header (time, level, pid, ...) and its message; rules
are matched at the *start* of the message, never anywhere in the line, because the rest holds
text a client chose (a request line, a path, a PHP script's stderr): ``GET /no live upstreams``
must not page anyone. The header is optional, so the same :meth:`ErrorFormat.classify` reads a
log file's line, a journal ``MESSAGE`` and a server's stderr (``nginx: [emerg] ...``).

Most lines are irrelevant: a substring gate rejects them before any regex runs. Times are the
server's local time; :meth:`ErrorFormat.time` takes a ``tz`` (None: this host's zone).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from remediator.causes import Cause

__all__ = ["ERROR_FORMATS", "ErrorFormat"]

_MONTHS: Final = {m.encode(): i for i, m in enumerate(calendar.month_abbr) if m}
_Rule = tuple[Cause, re.Pattern[bytes]]


@dataclass(frozen=True, slots=True)
class _Parsed:
    head: dict[str, bytes]  # the header's named groups that matched
    message: bytes


class ErrorFormat:
    """One server's error-log dialect: classify a line, read its time, pick evidence fields."""

    def __init__(
        self,
        name: str,
        description: str,
        *,
        gate: tuple[bytes, ...],
        header: bytes,
        rules: list[tuple[Cause, bytes]],
        time_re: bytes,
        time_fields: Callable[[re.Match[bytes]], tuple[int, int, int, int, int, int, float]],
        context: bytes = b"",
        evidence: bytes = b"",
    ) -> None:
        self.name = name
        self.description = description
        self._gate = gate
        self._header = re.compile(header)
        self._rules: list[_Rule] = [(c, re.compile(p)) for c, p in rules]
        self._time_re = re.compile(time_re)
        self._time_fields = time_fields
        self._context = re.compile(context) if context else None
        self._evidence = re.compile(evidence) if evidence else None
        self._minutes: dict[tuple[int, int, int, int, int, object], float] = {}

    def __repr__(self) -> str:
        return f"<ErrorFormat {self.name}>"

    def classify(self, line: bytes) -> Cause | None:
        """The cause a line reports, or None. Works with or without the timestamp prefix."""
        if not any(g in line for g in self._gate):
            return None
        p = self._parse(line)
        for cause, rule in self._rules:
            m = rule.match(p.message)
            if m is not None:
                return self._refine(cause, m, p)
        return self._fallback(p)

    def time(self, line: bytes, tz: dt.tzinfo | None = None) -> float | None:
        """Epoch seconds of the line's local timestamp read in ``tz`` (None: this host's)."""
        m = self._time_re.match(line)
        if m is None:
            return None
        try:
            y, mo, d, hh, mm, ss, frac = self._time_fields(m)
            key = (y, mo, d, hh, mm, tz or _time.tzname)  # tzname: TZ may change (tests)
            base = self._minutes.get(key)
            if base is None:  # naive (tz None) is this host's local time, DST included
                base = dt.datetime(y, mo, d, hh, mm, tzinfo=tz).timestamp()
                if len(self._minutes) > 10_000:
                    self._minutes.clear()
                self._minutes[key] = base
        except (ValueError, OverflowError):
            return None
        return None if ss > 59 else base + ss + frac

    def fields(self, line: bytes) -> dict[str, str]:
        """Evidence: the header's fields, the message and what it names (client, upstream...)."""
        p = self._parse(line)
        out = dict(p.head)
        msg = p.message
        if self._context is not None and (c := self._context.search(msg)) is not None:
            out.update({k: v for k, v in c.groupdict().items() if v is not None})
            msg = msg[: c.start()]
        if self._evidence is not None and (e := self._evidence.search(msg)) is not None:
            out.update({k: v for k, v in e.groupdict().items() if v is not None})
        out["message"] = msg
        return {k: v.decode("utf-8", "backslashreplace") for k, v in out.items()}

    def _parse(self, line: bytes) -> _Parsed:
        line = line.rstrip(b"\r\n")
        m = self._header.match(line)  # every part of a header is optional: it always matches
        assert m is not None  # noqa: S101
        head = {k: v for k, v in m.groupdict().items() if v is not None}
        return _Parsed(head, line[m.end() :])

    def _refine(self, cause: Cause, m: re.Match[bytes], p: _Parsed) -> Cause | None:
        return cause

    def _fallback(self, p: _Parsed) -> Cause | None:
        return None


class _Nginx(ErrorFormat):
    def _fallback(self, p: _Parsed) -> Cause | None:
        # Every [emerg] is nginx refusing a configuration (at start, test or reload).
        return Cause.CONFIG_ERROR if p.head.get("level") == b"emerg" else None


class _PhpFpm(ErrorFormat):
    # FPM sends these itself: SIGTERM after "execution timed out", SIGQUIT on reload and stop.
    _OWN_SIGNALS: Final = (b"3", b"15")

    def _refine(self, cause: Cause, m: re.Match[bytes], p: _Parsed) -> Cause | None:
        if cause is Cause.WORKER_CRASHED and m.group("signal") in self._OWN_SIGNALS:
            return None
        return cause


class _Apache(ErrorFormat):
    _BY_ERRNO: Final = {
        (Cause.UPSTREAM_REFUSED, b"2"): Cause.UPSTREAM_MISSING,  # the socket file is gone
        (Cause.UPSTREAM_RESET, b"70007"): Cause.UPSTREAM_TIMEOUT,  # APR_TIMEUP
    }

    def _refine(self, cause: Cause, m: re.Match[bytes], p: _Parsed) -> Cause | None:
        return self._BY_ERRNO.get((cause, p.head.get("errno", b"")), cause)


def _fraction(m: re.Match[bytes]) -> float:
    f = m.group("frac")
    return float(b"0." + f) if f else 0.0


def _nginx_time(m: re.Match[bytes]) -> tuple[int, int, int, int, int, int, float]:
    return (int(m["year"]), int(m["month"]), int(m["day"]), int(m["hour"]), int(m["minute"]),
            int(m["second"]), 0.0)  # fmt: skip


def _named_month_time(m: re.Match[bytes]) -> tuple[int, int, int, int, int, int, float]:
    mo = _MONTHS.get(m["month"])
    if mo is None:
        raise ValueError("month")
    return (int(m["year"]), mo, int(m["day"]), int(m["hour"]), int(m["minute"]),
            int(m["second"]), _fraction(m))  # fmt: skip


_HMS: Final = rb"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)(?:\.(?P<frac>\d{1,9}))?"
_UPSTREAM: Final = rb" while connecting to upstream"

_NGINX_ERROR: Final = _Nginx(
    "nginx-error",
    "nginx's error log (also its stderr and journal lines, `nginx: [emerg] ...`)",
    gate=(b"upstream", b"resolv", b"[emerg]"),
    header=rb"(?:nginx: )?(?:(?P<time>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) )?(?:\[(?P<level>\w+)\] )?"
    rb"(?:(?P<pid>\d+)#(?P<tid>\d+): )?(?:\*(?P<connection>\d+) )?",
    rules=[
        (Cause.DNS_FAILURE, rb"(?:\S+ could not be resolved \(|host not found in upstream )"),
        (Cause.DNS_FAILURE, rb"\w+\(\) failed \(\d+: [^)]*\) while resolving"),
        (Cause.NO_LIVE_UPSTREAMS, rb"no live upstreams while"),
        (Cause.UPSTREAM_REFUSED, rb"connect\(\) (?:to \S+ )?failed \(111: [^)]*\)" + _UPSTREAM),
        (Cause.UPSTREAM_MISSING, rb"connect\(\) (?:to \S+ )?failed \(2: [^)]*\)" + _UPSTREAM),
        (Cause.UPSTREAM_OVERLOADED, rb"connect\(\) (?:to \S+ )?failed \(11: [^)]*\)" + _UPSTREAM),
        (Cause.UPSTREAM_TIMEOUT, rb"upstream timed out \(110: "),
        (
            Cause.UPSTREAM_RESET,
            rb"\w+\(\) failed \(104: [^)]*\) while (?:reading|sending)[^,]* upstream",
        ),
        (Cause.UPSTREAM_CLOSED, rb"upstream prematurely closed connection"),
    ],
    time_re=rb"(?P<year>\d{4})/(?P<month>\d\d)/(?P<day>\d\d) " + _HMS,
    time_fields=_nginx_time,
    context=rb", client: (?P<client>[^,]*), server: (?P<server>[^,]*)"
    rb'(?:, request: "(?P<request>.*?)")?(?:, subrequest: "(?P<subrequest>.*?)")?'
    rb'(?:, upstream: "(?P<upstream>.*?)")?(?:, host: "(?P<host>.*?)")?'
    rb'(?:, referrer: "(?P<referrer>.*?)")?\Z',
    evidence=rb"(?:connect\(\) to (?P<upstream_addr>\S+) |(?P<name>\S+) could not be resolved)",
)

_PHP_FPM: Final = _PhpFpm(
    "php-fpm",
    "PHP-FPM's master log (also its journal and syslog lines)",
    gate=(b"child ", b"max_children", b"configuration", b"unable to parse"),
    header=rb"(?:\[(?P<time>\d\d-\w{3}-\d{4} \d\d:\d\d:\d\d(?:\.\d+)?)\] )?"
    rb"(?:(?P<level>[A-Z]+): |\[(?P<level_>[A-Z]+)\] )?(?:\[pool (?P<pool>[^\]]+)\] )?",
    rules=[
        (Cause.FPM_MAX_CHILDREN, rb"server reached (?:pm\.)?max_children setting"),
        (Cause.WORKER_CRASHED, rb"child (?P<child>\d+) exited on signal (?P<signal>\d+)"),
        # The request line sits inside these two: anchor the verdict at the end of the line.
        (
            Cause.FPM_EXEC_TIMEOUT,
            rb"child \d+, script .* execution timed out \([\d.]+ sec\), terminating\Z",
        ),
        (Cause.FPM_SLOW, rb"child \d+, script .* executing too slow \([\d.]+ sec\), logging\Z"),
        (Cause.CONFIG_ERROR, rb"\[[^\]]*:\d+\] unable to parse "),
        (Cause.CONFIG_ERROR, rb"failed to (?:load|post process|parse)\b[^\n]*configuration"),
    ],
    time_re=rb"\[(?P<day>\d\d)-(?P<month>\w{3})-(?P<year>\d{4}) " + _HMS + rb"\]",
    time_fields=_named_month_time,
    evidence=rb"child (?P<child>\d+)(?: exited on signal (?P<signal>\d+)(?: \((?P<signal_name>\w+))?"
    rb"|, script '(?P<script>.*)' \(request: \"(?P<request>.*)\"\) \w+ (?:\w+ )?\w+ "
    rb"\((?P<duration>[\d.]+) sec\))?",
)

_APACHE_ERROR: Final = _Apache(
    "apache-error",
    "Apache's error log, mod_proxy and proxy_fcgi messages (also its stderr)",
    gate=(b"AH0",),
    header=rb"(?:\[(?P<time>\w{3} \w{3} \d\d \d\d:\d\d:\d\d(?:\.\d+)? \d{4})\] )?"
    rb"(?:\[(?P<module>[\w-]*):(?P<level>\w+)\] )?(?:\[pid (?P<pid>\d+)(?::tid (?P<tid>\d+))?\] )?"
    rb"(?:\((?P<errno>-?\d+)\)(?P<error>[^:\[]*): )?(?:\[(?:client|remote) (?P<client>[^\]]*)\] )?",
    rules=[
        (Cause.UPSTREAM_RESET, rb"AH0(?:1067|1075): "),
        (Cause.UPSTREAM_REFUSED, rb"AH0(?:1079|2454|0957|1114): "),
        (Cause.CONFIG_ERROR, rb"AH00526: "),
    ],
    time_re=rb"\[\w{3} (?P<month>\w{3}) (?P<day>\d\d) " + _HMS + rb" (?P<year>\d{4})\]",
    time_fields=_named_month_time,
    evidence=rb"(?P<code>AH\d{5}): (?:.*?(?P<socket>(?:unix:)?/\S+))?",
)

ERROR_FORMATS: Final[dict[str, ErrorFormat]] = {
    f.name: f for f in (_NGINX_ERROR, _APACHE_ERROR, _PHP_FPM)
}
"""The error-log dialects by name; a config's ``format:`` names one of these."""
