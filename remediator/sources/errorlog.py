"""Error-log classifiers: which :class:`Cause` a server's error line reports, and when.

A line is split into a platform's prefix (Docker, syslog, the journal: :mod:`.prefix`), the
server's own header (time, level, pid, ...) and its message; rules (:mod:`.errorrules`, data
with their samples) are matched at the *start* of the message, never anywhere in the line,
because the rest holds text a client chose (a request line, a path, a PHP script's stderr):
``GET /no live upstreams`` must not page anyone. The header is optional, so the same
:meth:`ErrorFormat.classify` reads a log file's line, a journal ``MESSAGE`` and a server's
stderr (``nginx: [emerg] ...``).

Most lines are irrelevant: a substring gate rejects them before any regex runs, and one
combined pattern of every rule's start rejects most of the rest in a single match. Times are
the server's local time; :meth:`ErrorFormat.time` takes a ``tz`` (None: this host's zone).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

from remediator.causes import Cause
from remediator.sources import errorrules, prefix
from remediator.sources.errorrules import ERRNO_CAUSE, Rule, errno_name

__all__ = ["ERROR_FORMATS", "ErrorFormat", "Verdict"]

_MONTHS: Final = {m.encode(): i for i, m in enumerate(calendar.month_abbr) if m}
_NAMED_GROUP: Final = re.compile(rb"\(\?P<\w+>")


class Verdict(NamedTuple):
    """What a line says: its cause (or None) and the rule that said so (``format/rule``)."""

    cause: Cause | None
    rule: str | None


_NOTHING: Final = Verdict(None, None)


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
        gate_in_one_scan: bool = False,
        header: bytes,
        rules: tuple[Rule, ...],
        time_re: bytes,
        time_fields: Callable[[re.Match[bytes]], tuple[int, int, int, int, int, int, float]],
        context: bytes = b"",
        evidence: bytes = b"",
    ) -> None:
        self.name = name
        self.description = description
        self.rules = rules
        self._gate = gate
        # many substrings that most lines hold none of: one regex scan beats one scan each
        self._gate_re = (
            re.compile(b"|".join(re.escape(g) for g in gate)) if gate_in_one_scan else None
        )
        self._header = re.compile(header)
        self._rules = [(r, re.compile(r.pattern), f"{name}/{r.name}") for r in rules]
        self._codes = frozenset(  # Apache's AHnnnnn codes that some rule names
            c
            for r in rules
            for m in errorrules.APACHE_CODE.findall(r.pattern)
            for c in m.split(b"|")
        )
        # every rule's start at once, as a cheap first test (groups unnamed: names repeat)
        self._any = re.compile(
            b"|".join(b"(?:" + _NAMED_GROUP.sub(b"(?:", r.pattern) + b")" for r in rules)
        )
        self._time_re = re.compile(time_re)
        self._time_fields = time_fields
        self._context = re.compile(context) if context else None
        self._evidence = re.compile(evidence) if evidence else None
        self._minutes: dict[tuple[int, int, int, int, int, object], float] = {}

    def __repr__(self) -> str:
        return f"<ErrorFormat {self.name}>"

    def classify(self, line: bytes) -> Cause | None:
        """The cause a line reports, or None. Works with or without the timestamp prefix."""
        return self._verdict(line).cause if self._passes(line) else None

    def verdict(self, line: bytes) -> Verdict:
        """The cause a line reports and the rule that matched (both None: nothing known)."""
        return self._verdict(line) if self._passes(line) else _NOTHING

    def _passes(self, line: bytes) -> bool:
        """The quick first test: could a rule match this line at all?"""
        if self._codes:  # Apache 2.4: the message's code says it (AH01630: no, AH00957: yes)
            i = line.find(b"AH")
            if i >= 0 and line[i + 7 : i + 9] == b": " and line[i + 2 : i + 7].isdigit():
                return line[i + 2 : i + 7] in self._codes
        if self._gate_re is not None:
            return self._gate_re.search(line) is not None
        for g in self._gate:  # noqa: SIM110 - a loop of `in` is the fastest form here
            if g in line:
                return True
        return False

    def time(
        self, line: bytes, tz: dt.tzinfo | None = None, now: float | None = None
    ) -> float | None:
        """Epoch seconds of the line's local timestamp read in ``tz`` (None: this host's).
        Behind a platform prefix, an RFC 3339 prefix time wins (it has its zone); a syslog
        prefix time (no year: the one nearest before ``now``) serves when the line has none."""
        m = self._time_re.match(line)
        if m is not None:
            return self._local(m, tz)
        pre = prefix.strip(line, tz, now)
        if pre.start == 0 or pre.zoned:
            return pre.time
        m = self._time_re.match(line, pre.start)
        return self._local(m, tz) if m is not None else pre.time

    def _local(self, m: re.Match[bytes], tz: dt.tzinfo | None) -> float | None:
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

    def _verdict(self, line: bytes) -> Verdict:
        p = self._parse(line)
        if self._any.match(p.message) is not None:
            for rule, rx, label in self._rules:
                m = rx.match(p.message)
                if m is not None:  # the first rule that matches decides, even "nothing"
                    cause = self._cause(rule, m, p)
                    return Verdict(cause, label) if cause is not None else _NOTHING
        return self._fallback(p)

    def _cause(self, rule: Rule, m: re.Match[bytes], p: _Parsed) -> Cause | None:
        if not rule.by_errno:
            return self._refine(rule, m, p)
        groups = m.groupdict()
        if "errno" in groups:  # the message prints it (nginx)
            name = errno_name(groups["errno"], groups.get("strerror"))
        else:  # the header took it (Apache's "(111)Connection refused: ")
            name = errno_name(p.head.get("errno"), p.head.get("error"))
        return ERRNO_CAUSE.get(name, rule.default) if name else rule.default

    def _parse(self, line: bytes) -> _Parsed:
        line = line.rstrip(b"\r\n")
        pre = prefix.strip(line)
        m = self._header.match(line, pre.start)  # every part of a header is optional
        assert m is not None  # noqa: S101
        # a field the header may hold in two places is named ``x`` and ``x_``: one key here
        head = {k.rstrip("_"): v for k, v in m.groupdict().items() if v is not None}
        return _Parsed(head, line[m.end() :])

    def _refine(self, rule: Rule, m: re.Match[bytes], p: _Parsed) -> Cause | None:
        return rule.cause

    def _fallback(self, p: _Parsed) -> Verdict:
        return _NOTHING


class _Nginx(ErrorFormat):
    _EMERG: Final = Verdict(Cause.CONFIG_ERROR, "nginx-error/emerg")

    def _fallback(self, p: _Parsed) -> Verdict:
        # Every [emerg] is nginx refusing a configuration (at start, test or reload).
        return self._EMERG if p.head.get("level") == b"emerg" else _NOTHING


class _PhpFpm(ErrorFormat):
    # FPM sends these itself: SIGTERM after "execution timed out", SIGQUIT on reload and stop.
    _OWN_SIGNALS: Final = (b"3", b"15")

    def _refine(self, rule: Rule, m: re.Match[bytes], p: _Parsed) -> Cause | None:
        if "signal" in rule.pattern.decode() and m.group("signal") in self._OWN_SIGNALS:
            return None
        return rule.cause


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

_NGINX_ERROR: Final = _Nginx(
    "nginx-error",
    "nginx's error log (also its stderr and journal lines, `nginx: [emerg] ...`)",
    gate=(b"upstream", b"resolv", b"[emerg]", b"worker", b"DNS", b"response for"),
    header=rb"(?:nginx: )?(?:(?P<time>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) )?(?:\[(?P<level>\w+)\] )?"
    rb"(?:(?P<pid>\d+)#(?P<tid>\d+): )?(?:\*(?P<connection>\d+) )?",
    rules=errorrules.NGINX,
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
    "PHP-FPM's master log at any log_level (also its journal and syslog lines)",
    gate=(b"child", b"max_children", b"configuration", b"unable to parse", b"threshold"),
    header=rb"(?:\[(?P<time>\d\d-\w{3}-\d{4} \d\d:\d\d:\d\d(?:\.\d+)?)\] )?"
    rb"(?:(?P<level>[A-Z]+): |\[(?P<level_>[A-Z]+)\] )?"
    rb"(?:pid \d+, )?(?:\w+\(\), line \d+: )?"  # log_level = debug
    rb"(?:\[pool (?P<pool>[^\]]+)\] )?",
    rules=errorrules.PHP_FPM,
    time_re=rb"\[(?P<day>\d\d)-(?P<month>\w{3})-(?P<year>\d{4}) " + _HMS + rb"\]",
    time_fields=_named_month_time,
    evidence=rb"child (?P<child>\d+)(?: exited on signal (?P<signal>\d+)(?: \((?P<signal_name>\w+))?"
    rb"|, script '(?P<script>.*)' \(request: \"(?P<request>.*)\"\) \w+ (?:\w+ )?\w+ "
    rb"\((?P<duration>[\d.]+) sec\))?",
)

_APACHE_ERROR: Final = ErrorFormat(
    "apache-error",
    "Apache's error log, 2.2 and 2.4: mod_proxy, proxy_fcgi, mod_fastcgi, mod_fcgid, the MPMs",
    gate_in_one_scan=True,
    gate=(  # lines with no AH code (2.2, third-party modules); coded lines are told by their code
        b"proxy",
        b"child pid",
        b"FastCGI",
        b"fcgid",
        b"MaxClients",
        b"Syntax error",
        b"ajp_",
    ),
    header=rb"(?:\[(?P<time>\w{3} \w{3} \d\d \d\d:\d\d:\d\d(?:\.\d+)? \d{4})\] )?"
    rb"(?:\[(?:(?P<module>[\w-]*):)?(?P<level>\w+)\] ?)?"  # 2.2 may leave out the space
    rb"(?:\[pid (?P<pid>\d+)(?::tid (?P<tid>\d+))?\] )?"
    rb"(?:\[(?:client|remote) (?P<client>[^\]]*)\] ?)?"  # 2.2: the client, then the errno
    rb"(?:\((?P<errno>-?\d+)\)(?P<error>[^:\[]*): )?"
    rb"(?:\[(?:client|remote) (?P<client_>[^\]]*)\] )?",  # 2.4: the errno, then the client
    rules=errorrules.APACHE,
    time_re=rb"\[\w{3} (?P<month>\w{3}) (?P<day>\d\d) " + _HMS + rb" (?P<year>\d{4})\]",
    time_fields=_named_month_time,
    evidence=rb"(?P<code>AH\d{5}): (?:.*?(?P<socket>(?:unix:)?/\S+))?",
)

ERROR_FORMATS: Final[dict[str, ErrorFormat]] = {
    f.name: f for f in (_NGINX_ERROR, _APACHE_ERROR, _PHP_FPM)
}
"""The error-log dialects by name; a config's ``format:`` names one of these."""
