"""The main configuration file: settings, sources, services, notifiers, guards.

Declarations only; loading (with playbook files and cross-references) is in ``remediator.load``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from remediator.actions.declare import HOSTNAME
from remediator.flap import Flap
from remediator.fleet.options import Fleet
from remediator.playbook import PLAYBOOK, Playbook
from remediator.schema import (
    Argv,
    Bool,
    Choice,
    Duration,
    Int,
    ListOf,
    MapOf,
    PathSpec,
    Record,
    Ref,
    Str,
    Tagged,
    Url,
    opt,
)
from remediator.sources.access.guess import AUTO
from remediator.sources.fastcgi import address
from remediator.sources.formats import ACCESS_FORMATS, ERROR_FORMATS, check_custom_format

DEFAULT_CONFIG = Path("/etc/remediator/remediator.yaml")
DEFAULT_ACCESS_FORMAT = "nginx-combined"

UNIT = Str(
    pattern=r"[A-Za-z0-9:_.@\\-]+\.(service|socket|target)",
    pattern_help=" (a full unit name like php8.2-fpm.service)",
    what="systemd unit name",
)
STATUS = Int(min=100, max=599)


# --- sources ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessLogSource:
    """An access log (nginx or Apache): which statuses users got, and when."""

    kind: ClassVar[str] = "access_log"
    path: Path = opt(PathSpec(), "The log file to follow; rotation and truncation are handled.")
    format: str | None = opt(
        Choice([*ACCESS_FORMATS, AUTO], what="access log format"),
        "A built-in format (see the table of formats below), or `auto`: the one that reads "
        "most of the log's last lines when the daemon starts (or reloads; `nginx-combined` "
        "if the log is empty or missing then); `nginx-combined` when neither this nor "
        "`log_format` / `apache_format` is given.",
        None,
    )
    log_format: str | None = opt(
        Str(what="nginx log_format"),
        "Your nginx `log_format`, used instead of `format`: the format string, or the whole "
        "directive pasted from nginx.conf (`log_format main escape=json '...' '...';`).",
        None,
    )
    apache_format: str | None = opt(
        Str(what="Apache LogFormat"),
        "Your Apache `LogFormat`, used instead of `format`: the format string, or the whole "
        'directive pasted from the server\'s config (`LogFormat "..." nickname`).',
        None,
    )

    @property
    def format_name(self) -> str:
        """The built-in format read, or ``custom`` for the source's own."""
        if self.log_format is not None or self.apache_format is not None:
            return "custom"
        return self.format or DEFAULT_ACCESS_FORMAT

    def check(self) -> list[tuple[str, str]]:
        if self.log_format is not None and self.apache_format is not None:
            return [
                ("apache_format", "give log_format (nginx) or apache_format (Apache), not both")
            ]
        own = "log_format" if self.log_format is not None else "apache_format"
        if self.format is not None and (self.log_format or self.apache_format) is not None:
            return [("format", f"give format (a built-in) or {own} (your own), not both")]
        for key, flavour, text in (
            ("log_format", "nginx", self.log_format),
            ("apache_format", "apache", self.apache_format),
        ):
            if text is not None:
                problem = check_custom_format(flavour, text)
                if problem:
                    return [(key, problem)]
        return []


@dataclass(frozen=True)
class ErrorLogSource:
    """An error log (nginx, Apache or PHP-FPM), classified into causes."""

    kind: ClassVar[str] = "error_log"
    path: Path = opt(PathSpec(), "The log file to follow.")
    format: str = opt(Choice(ERROR_FORMATS, what="error log format"), "Which server wrote it.")


@dataclass(frozen=True)
class JournalSource:
    """A systemd unit's messages in the journal, classified like an error log.

    With `format: php-fpm` only the master's messages count: sent as root by a process systemd
    named the unit's main one (`_UID`, `_PID`, set by journald). The PHP code runs in the same
    cgroup; its `syslog()` calls do not count, whatever identifier they use.
    """

    kind: ClassVar[str] = "journal"
    unit: str = opt(UNIT, "The unit whose messages to read.")
    format: str = opt(
        Choice(ERROR_FORMATS, what="error log format"), "Which server's messages these are."
    )


@dataclass(frozen=True)
class ProbeSource:
    """An HTTP health probe of the site, as users would reach it."""

    kind: ClassVar[str] = "probe"
    url: str = opt(Url(), "The URL to fetch (plain GET, no redirects followed).")
    interval: float = opt(Duration(min=0.1, max=3600), "Time between probes.", 2.0)
    timeout: float = opt(
        Duration(min=0.05, max=600),
        "A probe that takes longer counts as failed (a hang is a failure, never a wait).",
        1.0,
    )
    expect_status: tuple[int, ...] = opt(
        ListOf(STATUS, min_len=1, single=True), "Statuses that mean healthy.", (200,)
    )
    expect_body: str | None = opt(
        Str(what="text"), "Healthy only if the body contains this text.", None
    )
    host: str | None = opt(
        Str(what="host name"), "Host header to send (for name-based virtual hosts).", None
    )

    def check(self) -> list[tuple[str, str]]:
        if self.timeout > self.interval:
            return [("timeout", "must not be longer than interval")]
        return []


def _check_fpm_socket(text: str) -> str | None:
    try:
        address(text)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class FpmStatusSource:
    """PHP-FPM's own status page (`pm.status_path`, read as `?json&full`): busy and idle
    workers, the listen queue, "max children reached", slow requests. Read straight from the
    pool's socket over FastCGI (`socket` and `path`: no web server needed, so it works when
    the web server is the broken part), or through the web server (`url`). The conditions
    `fpm_saturated`, `fpm_hung`, `fpm_stuck` and `fpm_slow` judge it. The status is served by a worker:
    a pool whose every worker is busy or stopped does not answer it in time, and that is
    read as the pool taking no new request. The answer is not trusted: capped at 1 MiB,
    parsed strictly, numbers only kept."""

    kind: ClassVar[str] = "fpm_status"
    socket: str | None = opt(
        Str(check=_check_fpm_socket, what="socket"),
        "The pool's `listen` address: a unix socket path (`/run/php/php8.2-fpm.sock`) or "
        "`host:port`.",
        None,
    )
    path: str | None = opt(
        Str(pattern=r"/[A-Za-z0-9._~/-]*", pattern_help=" (like /status)", what="status path"),
        "The pool's `pm.status_path` (with `socket`; with `url`, the URL's path is used).",
        None,
    )
    url: str | None = opt(
        Url(),
        "The status page through the web server, instead of `socket` (the query is set to "
        "`json&full`).",
        None,
    )
    interval: float = opt(Duration(min=0.1, max=3600), "Time between reads.", 1.0)
    timeout: float | None = opt(
        Duration(min=0.05, max=600),
        "A read that takes longer counts as unanswered: the pool took no new request. "
        "Unset: 0.5 s, or the interval if that is shorter.",
        None,
    )
    quiet_interval: float | None = opt(
        Duration(min=0.1, max=3600),
        "Time between reads while the pool is quiet (no request in progress but the status's, "
        "nothing queued, for 10 s): a quiet pool is read less often, and as soon as a read "
        "finds a request in progress, a queue or no answer, every `interval` again. Unset: "
        "1 s, or the interval if that is longer.",
        None,
    )
    service: str | None = opt(
        Ref("service", ("php-fpm",), "an fpm_status source"),
        "The php-fpm service this pool belongs to. Its workers are then looked at in `/proc` "
        "when the status goes unanswered: every worker stopped (SIGSTOP) is said at once, "
        "and whether any finished a request tells a stuck pool from a busy one "
        "(`fpm_stuck` needs it).",
        None,
    )

    @property
    def read_timeout(self) -> float:
        return self.timeout if self.timeout is not None else min(0.5, self.interval)

    @property
    def read_quiet_every(self) -> float:
        return self.quiet_interval if self.quiet_interval is not None else max(1.0, self.interval)

    @property
    def status_path(self) -> str:
        """The pool's status path, as the worker serving the read reports its request."""
        if self.url is not None:
            return urlsplit(self.url).path or "/"
        return self.path or "/status"

    def check(self) -> list[tuple[str, str]]:
        if (self.socket is None) == (self.url is None):
            return [("socket", "give the pool's 'socket' (and 'path'), or a 'url' (one of them)")]
        if self.socket is not None and self.path is None:
            return [("path", "with 'socket', give the pool's pm.status_path")]
        if self.url is not None and self.path is not None:
            return [("path", "only with 'socket' (with 'url', the URL's path is the status path)")]
        if self.timeout is not None and self.timeout > self.interval:
            return [("timeout", "must not be longer than interval")]
        if self.quiet_interval is not None and self.quiet_interval < self.interval:
            return [("quiet_interval", "must not be shorter than interval")]
        return []


@dataclass(frozen=True)
class HostSource:
    """Host resources through psutil: CPU, load, memory, swap, per-service processes."""

    kind: ClassVar[str] = "host"
    interval: float = opt(Duration(min=0.5, max=3600), "Time between snapshots.", 5.0)


def _check_address(text: str) -> str | None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return f"'{text}' is not an IP address (like 192.0.2.10 or 2001:db8::10)"
    return None


def split_server(text: str) -> tuple[str, int]:
    """``192.0.2.53``, ``192.0.2.53:5353``, ``2001:db8::53`` or ``[2001:db8::53]:5353``."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        return host, int(port[1:]) if port.startswith(":") and port[1:].isdigit() else -1
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port) if port.isdigit() else -1
    return text, 53


def _check_server(text: str) -> str | None:
    host, port = split_server(text)
    if _check_address(host) is not None or not 0 < port < 65536:
        return (
            f"'{text}' is not a DNS server address: an IP address, with :port if not 53 "
            "(192.0.2.53, 127.0.0.1:5353, [2001:db8::53]:5353); names are not accepted"
        )
    return None


ADDRESS = Str(check=_check_address, what="IP address")
DNS_SERVER = Str(check=_check_server, what="DNS server address")


@dataclass(frozen=True)
class DnsSource:
    """The site's names as resolvers answer them: each name is looked up every `interval`
    (A and AAAA records by default), by the system resolver or by each of `servers`
    directly, and compared with the addresses expected (`expect`, or `this_host`). Answers
    are network input: bounded, kept as evidence, never put into a command."""

    kind: ClassVar[str] = "dns"
    names: tuple[str, ...] = opt(
        ListOf(HOSTNAME, min_len=1, single=True), "The names to resolve (the site's)."
    )
    expect: tuple[str, ...] = opt(
        ListOf(ADDRESS, min_len=1, single=True),
        "The addresses the names must resolve to: every address in an answer must be one of "
        "these (an answer with an address not listed, or with none, is a mismatch).",
        (),
    )
    this_host: bool = opt(
        Bool(),
        "Expect this host's own addresses, read from its interfaces at each lookup (not "
        "behind NAT, where the public address is not on an interface: list it in `expect`).",
        False,
    )
    servers: tuple[str, ...] = opt(
        ListOf(DNS_SERVER, single=True),
        "DNS servers to ask directly (UDP, TCP when an answer is truncated), each on its own: "
        "the site's authoritative servers, say. Unset: the system resolver (`getaddrinfo`: "
        "/etc/hosts, nsswitch and resolv.conf as every program on the host sees them).",
        (),
    )
    types: tuple[str, ...] = opt(
        ListOf(Choice(("A", "AAAA"), what="record type"), min_len=1, single=True),
        "Record types looked up; a type a name has no record of is no mismatch, but a name "
        "with no address of any of them is.",
        ("A", "AAAA"),
    )
    tcp: bool = opt(Bool(), "Ask `servers` over TCP rather than UDP.", False)
    interval: float = opt(Duration(min=1, max=86400), "Time between lookups.", 30.0)
    timeout: float = opt(
        Duration(min=0.05, max=60),
        "A lookup that takes longer counts as failed (reason: timed out).",
        2.0,
    )

    def check(self) -> list[tuple[str, str]]:
        if bool(self.expect) == self.this_host:
            return [("expect", "give the addresses expected or this_host: true (one of them)")]
        if self.timeout > self.interval:
            return [("timeout", "must not be longer than interval")]
        return []


Source = (
    AccessLogSource
    | ErrorLogSource
    | JournalSource
    | ProbeSource
    | FpmStatusSource
    | HostSource
    | DnsSource
)
SOURCE_TYPES: dict[str, type[Any]] = {
    c.kind: c
    for c in (
        AccessLogSource,
        ErrorLogSource,
        JournalSource,
        ProbeSource,
        FpmStatusSource,
        HostSource,
        DnsSource,
    )
}
SOURCE: Tagged[Source] = Tagged(
    {k: Record(c, name=f"{k}_source", ignore=("type",)) for k, c in SOURCE_TYPES.items()},
    what="source",
)


# --- services ---------------------------------------------------------------------------------

SERVICE_KINDS = ("php-fpm", "nginx", "apache")


@dataclass(frozen=True)
class Service:
    """A service remediator may act on, and how to control it.

    With `unit`, control goes through systemd (`systemctl`). Without it, through `pid_file`,
    signals and `start` (hosts or containers without systemd).
    """

    kind: str = opt(Choice(SERVICE_KINDS, what="service kind"), "What it is; sets the defaults.")
    unit: str | None = opt(UNIT, "The systemd unit, e.g. `php8.2-fpm.service`.", None)
    pid_file: Path | None = opt(PathSpec(), "Without systemd: the master's pid file.", None)
    start: tuple[str, ...] | None = opt(
        Argv(),
        "Without systemd: the command that starts it (it may daemonize). Like `reload` and "
        "`config_test`, its program is found at load time (absolute, or in the system's "
        "sbin/bin directories) and must be root's and writable by no one else.",
        None,
    )
    reload: tuple[str, ...] | None = opt(
        Argv(),
        "A graceful reload command instead of the default (systemd: `systemctl reload`; "
        "otherwise php-fpm: SIGUSR2 to the master, nginx: `nginx -s reload`, "
        "apache: `apachectl -k graceful`).",
        None,
    )
    config_test: tuple[str, ...] | None = opt(
        Argv(),
        "The test every reload must pass first. Default: `php-fpm8.2 -t`, `nginx -t`, "
        "`apachectl configtest`, with `-y`/`-c`/`-f` `config_file` when that is given.",
        None,
    )
    config_file: Path | None = opt(PathSpec(), "The main config file.", None)
    pool_file: Path | None = opt(PathSpec(), "php-fpm: the pool file `scale_workers` edits.", None)
    startup_grace: float = opt(
        Duration(max=600), "After a (re)start, the service is not judged again for this long.", 10.0
    )
    max_actions: int = opt(Int(min=1, max=1000), "At most this many actions on this service ...", 6)
    actions_window: float = opt(Duration(min=60, max=7 * 86400), "... in this window.", 3600.0)

    def check(self) -> list[tuple[str, str]]:
        out = []
        if self.unit is None and (self.pid_file is None or self.start is None):
            out.append(
                (
                    "unit",
                    "say how to control it: a systemd 'unit', or 'pid_file' and 'start' "
                    "on hosts without systemd",
                )
            )
        if self.pool_file is not None and self.kind != "php-fpm":
            out.append(("pool_file", "only a php-fpm service has a pool file"))
        return out


# --- notifiers and guards ---------------------------------------------------------------------


NOTIFIER_FORMATS = ("json", "slack", "alertmanager", "mail")
MAIL_ADDRESS = Str(
    pattern=r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?",
    pattern_help=" (a plain address like ops@example.com)",
    what="mail address",
)


def _check_smtp(text: str) -> str | None:
    host, port = split_listen(text)
    if _check_address(host) is not None or not 0 < port < 65536:
        return f"'{text}' is not an SMTP server address: an IP address and a port (127.0.0.1:25)"
    if not ipaddress.ip_address(host).is_loopback:
        return (
            f"'{text}' is not on this host: remediator submits mail in clear, without "
            "authentication, to the local MTA only (127.0.0.1:25, [::1]:25); let it relay"
        )
    return None


@dataclass(frozen=True)
class Notifier:
    """Where alerts go: a webhook that receives them as JSON (or a Slack-compatible payload),
    an Alertmanager (`format: alertmanager`, its v2 API), or mail through the host's MTA
    (`format: mail`, `sendmail -t`, as monit does). Each carries the incident's summary.

    `format: alertmanager`: `url` is the Alertmanager's address (`http://127.0.0.1:9093`);
    remediator POSTs to its `/api/v2/alerts` an alert `RemediatorIncident` labelled with the
    host, playbook and incident (and `labels`), the summary as an annotation, and a second
    time, with `endsAt`, when the incident closes (the alert resolves; a site still broken
    shows as the breaker open: see docs/monitoring.md).

    `format: mail`: a message to `to` through `sendmail` (argv only, no shell), or over SMTP
    to the local MTA (`smtp: 127.0.0.1:25`: what works under the shipped unit); no `url`.

    A URL that carries a token (Slack's do) and an `Authorization` header are secrets: keep
    them in `url_file` and `headers_file`, files only root can read (`0600 root:root`), rather
    than in the config file (`0640 root:adm`). `check` warns about secrets in a file that others
    can read; remediator never prints them.
    """

    url: str | None = opt(Url(), "Where to POST (or `url_file`); not for `mail`.", None)
    url_file: Path | None = opt(
        PathSpec(),
        "A file holding the URL on one line, instead of `url`. Owned by root, readable by root "
        "alone (mode 0600, or 0640 with group root), in directories only root can write.",
        None,
    )
    format: str = opt(Choice(NOTIFIER_FORMATS), "Payload shape, or `mail`.", "json")
    timeout: float = opt(Duration(min=0.1, max=60), "Give up after this long.", 5.0)
    headers: dict[str, str] = opt(
        MapOf(Str(what="header value"), what="header name"), "Extra HTTP headers.", {}
    )
    headers_file: Path | None = opt(
        PathSpec(),
        "A file of `Name: value` lines (`#` starts a comment), added to `headers`: for "
        "`Authorization` and API keys. Root's alone, like `url_file`.",
        None,
    )
    labels: dict[str, str] = opt(
        MapOf(
            Str(what="label value"),
            what="label name",
            pattern=r"[A-Za-z_][A-Za-z0-9_]*",
            pattern_help="letters, digits and _, not starting with a digit",
        ),
        "`alertmanager`: labels added to each alert (`team: web`, `severity: page`); the "
        "alert's own (`alertname`, `host`, `playbook`, `incident`) cannot be replaced.",
        {},
    )
    to: tuple[str, ...] = opt(
        ListOf(MAIL_ADDRESS, single=True), "`mail`: the recipients (from here only).", ()
    )
    mail_from: str | None = opt(
        MAIL_ADDRESS, "`mail`: the sender address. Unset: `remediator@` this host's name.", None
    )
    sendmail: Path = opt(
        PathSpec(),
        "`mail`: the MTA's sendmail-compatible program, run as `sendmail -t -oi` with the "
        "message on its standard input.",
        Path("/usr/sbin/sendmail"),
    )

    smtp: str | None = opt(
        Str(check=_check_smtp, what="address"),
        "`mail`: submit the message over SMTP to the local MTA at this loopback address "
        "(`127.0.0.1:25`, where Debian's exim4 and postfix listen) instead of running "
        "`sendmail`. Under the shipped unit this is the way that works: its hardening "
        "(`NoNewPrivileges=`) stops the set-user-ID or set-group-ID sendmail of exim4 and "
        "postfix.",
        None,
    )

    def check(self) -> list[tuple[str, str]]:
        if self.smtp is not None and self.format != "mail":
            return [("smtp", "only for format: mail")]
        if self.format == "mail":
            if self.url is not None or self.url_file is not None:
                return [("url", "a mail notifier sends through sendmail: give 'to', not a URL")]
            if not self.to:
                return [("to", "a mail notifier needs its recipients in 'to'")]
            return []
        if (self.url is None) == (self.url_file is None):
            return [("url", "give the webhook's 'url' or a 'url_file' that holds it (one of them)")]
        for key in ("to", "mail_from"):
            if getattr(self, key):
                return [(key, "only for format: mail")]
        if self.labels and self.format != "alertmanager":
            return [("labels", "only for format: alertmanager")]
        return []


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off between repeated incidents of a playbook."""

    initial: float = opt(Duration(min=0, max=3600), "Wait after the first incident.", 10.0)
    max: float = opt(Duration(min=0, max=86400), "The wait doubles up to this.", 300.0)
    reset_after: float = opt(
        Duration(min=0, max=86400), "Healthy this long resets the wait.", 600.0
    )

    def check(self) -> list[tuple[str, str]]:
        return [("max", "must not be less than initial")] if self.max < self.initial else []


@dataclass(frozen=True)
class Breaker:
    """A circuit breaker per playbook: it opens when remediation keeps failing."""

    failures: int = opt(Int(min=1, max=100), "Failed incidents in a row that open it.", 3)
    open_for: float = opt(
        Duration(max=30 * 86400),
        "It closes by itself after this long (0: only `remediator reset`).",
        3600.0,
    )


@dataclass(frozen=True)
class Guards:
    """Global limits on acting, on top of each playbook's own."""

    backoff: Backoff = opt(Record(Backoff, name="backoff"), "Back-off.", Backoff())
    breaker: Breaker = opt(Record(Breaker, name="breaker"), "Circuit breaker.", Breaker())
    flap: Flap = opt(
        Record(Flap, name="flap"),
        "Flap detection, for every playbook without its own `flap`.",
        Flap(),
    )


# --- metrics ----------------------------------------------------------------------------------


def split_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:9465`` or ``[::1]:9465`` as (address, port); port -1 when there is none."""
    host, port = split_server(text)
    return host, (port if text.count(":") == 1 or text.startswith("[") else -1)


def _check_listen(text: str) -> str | None:
    host, port = split_listen(text)
    if _check_address(host) is not None or not 0 < port < 65536:
        return (
            f"'{text}' is not an address to listen on: an IP address and a port "
            "(127.0.0.1:9465, [::1]:9465)"
        )
    return None


@dataclass(frozen=True)
class Reports:
    """The running daemon writes each incident it closes as a page (`remediator report`), in
    a process of its own, and every notification names the page's path: the on-call opens
    one file instead of reading forty lines of timeline."""

    write: bool = opt(Bool(), "Write a page for each closed incident.", True)
    dir: Path | None = opt(
        PathSpec(),
        "Where the pages go (`INCIDENT.html`, mode 0640); unset: `reports/` in `state_dir`.",
        None,
    )
    keep: int = opt(Int(min=1, max=100000), "Pages kept; the oldest are removed first.", 200)


@dataclass(frozen=True)
class Metrics:
    """Prometheus metrics (docs/monitoring.md lists them, with alert rules and a dashboard):
    served over HTTP at `listen` (`GET /metrics`), and/or written to `textfile` for
    node_exporter's textfile collector. Neither is on unless set. Labels are names from this
    configuration and fixed words, never text from a log line."""

    listen: str | None = opt(
        Str(check=_check_listen, what="address"),
        "Serve `/metrics` on this address and port, like `127.0.0.1:9465`. Only a loopback "
        "address unless `allow_remote` (the page names your playbooks and services; put a "
        "TLS-terminating proxy or node_exporter in front instead).",
        None,
    )
    allow_remote: bool = opt(
        Bool(), "Allow `listen` on an address other hosts can reach (no TLS, no auth).", False
    )
    textfile: Path | None = opt(
        PathSpec(),
        "Write the metrics to this file (atomically, renamed into place) for node_exporter's "
        "`--collector.textfile.directory`: a name ending in `.prom` in that directory.",
        None,
    )
    textfile_every: float = opt(
        Duration(min=1, max=3600), "How often `textfile` is rewritten.", 15.0
    )

    def check(self) -> list[tuple[str, str]]:
        if self.listen is not None and not self.allow_remote:
            host, _ = split_listen(self.listen)
            if not ipaddress.ip_address(host).is_loopback:
                return [
                    (
                        "listen",
                        f"'{host}' is not a loopback address: metrics are served without TLS "
                        "or authentication; set allow_remote: true to serve them there anyway",
                    )
                ]
        if self.textfile is not None and self.textfile.suffix != ".prom":
            return [("textfile", "node_exporter reads only files ending in .prom")]
        return []


# --- the file ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The main configuration file (`/etc/remediator/remediator.yaml`)."""

    sources: dict[str, Source] = opt(
        MapOf(SOURCE, what="source name"), "What to watch, by name.", {}
    )
    services: dict[str, Service] = opt(
        MapOf(Record(Service, name="service"), what="service name"),
        "What may be acted on, by name.",
        {},
    )
    notifiers: dict[str, Notifier] = opt(
        MapOf(Record(Notifier, name="notifier"), what="notifier name"), "Where alerts go.", {}
    )
    playbooks_dir: Path = opt(
        PathSpec(), "Directory of playbook files (`*.yaml`, `*.yml`).", Path("playbooks.d")
    )
    playbooks: tuple[Playbook, ...] = opt(
        ListOf(PLAYBOOK), "Playbooks written in this file (besides `playbooks_dir`).", ()
    )
    dry_run: bool = opt(
        Bool(), "Log what would be done (`would_run`) and change nothing on the host.", False
    )
    state_dir: Path = opt(
        PathSpec(),
        "Offsets, guards and breakers, kept across restarts.",
        Path("/var/lib/remediator"),
    )
    action_log: Path = opt(
        PathSpec(),
        "The JSON-lines action log.",
        Path("/var/log/remediator/actions.jsonl"),
    )
    log_format: str = opt(
        Choice(("auto", "json", "console")),
        "Daemon log output: `auto` is the journal under systemd, readable on a terminal, "
        "JSON otherwise.",
        "auto",
    )
    log_level: str = opt(
        Choice(("debug", "info", "warning", "error")), "Least level logged.", "info"
    )
    guards: Guards = opt(Record(Guards, name="guards"), "Global guards.", Guards())
    metrics: Metrics = opt(
        Record(Metrics, name="metrics"), "Prometheus metrics (off unless set).", Metrics()
    )
    reports: Reports = opt(
        Record(Reports, name="reports"),
        "Each closed incident as a page, for notifications to point at.",
        Reports(),
    )
    fleet: Fleet | None = opt(
        Record(Fleet, name="fleet"),
        "A pool of hosts of which at most `max_concurrent` remediate at once, coordinated "
        "through etcd (docs/fleet.md). Unset: this host acts alone and never talks to etcd.",
        None,
    )

    def report_dir(self) -> Path | None:
        """Where the daemon writes incident pages; None when it writes none."""
        if not self.reports.write:
            return None
        return self.reports.dir if self.reports.dir is not None else self.state_dir / "reports"


CONFIG = Record(Config, name="config")
