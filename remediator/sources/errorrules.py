"""The error-log rules, as data: which server message names which :class:`Cause`.

Like fail2ban's ``filter.d``, every rule carries the messages it is for (``samples``: the
message after the server's own header, with the cause it must give); ``tests/test_errorrules.py``
checks each sample against its rule, and ``tests/samples/error/`` holds whole real lines.

The message texts come from the servers' sources: nginx ``src/http/ngx_http_upstream.c``
(``ngx_connection_error`` and ``c->log->action``: "connecting to upstream", "reading response
header from upstream"...), ``src/event/ngx_event_openssl.c``, ``src/core/ngx_resolver.c``;
Apache httpd ``modules/proxy/proxy_util.c``, ``mod_proxy_http.c``, ``mod_proxy_fcgi.c``
(``APLOGNO`` codes) and ``server/mpm_unix.c`` (child exits), plus Apache 2.2's wording of the
same messages (no codes); PHP-FPM ``sapi/fpm/fpm/fpm_children.c``, ``fpm_process_ctl.c``,
``fpm_conf.c``.

A rule is matched at the *start* of the message (never inside text a client chose). Its cause
is fixed, or, for a failed system call, read from the errno the server printed (``ERRNO``):
the same ``connect()`` failure is a dead backend (111), a missing socket (2), a permission
problem (13) or a firewall or route (113, 101). Errnos are known by their text first (portable:
FreeBSD's numbers differ) and by their Linux number second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from remediator.causes import Cause

__all__ = ["APACHE", "ERRNO_CAUSE", "NGINX", "PHP_FPM", "Rule", "errno_name"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One message the classifier knows: its pattern, its cause, and sample messages."""

    name: str
    pattern: bytes  # a regex matched at the start of the message
    cause: Cause | None = None  # fixed; None: read from the errno (``by_errno``)
    by_errno: bool = False
    default: Cause | None = None  # by_errno, and the line carries no errno (or an unknown one)
    samples: tuple[tuple[str, Cause | None], ...] = field(default=())


# errno: its Linux number and its strerror texts (lowercase), by symbolic name. APR's own
# codes (Apache) are here too: 70007 APR_TIMEUP, 70014 APR_EOF.
_ERRNO: Final[dict[str, tuple[int, tuple[str, ...]]]] = {
    "EPERM": (1, ("operation not permitted",)),
    "ENOENT": (2, ("no such file or directory",)),
    "EAGAIN": (11, ("resource temporarily unavailable",)),
    "EACCES": (13, ("permission denied",)),
    "EMFILE": (24, ("too many open files",)),
    "EPIPE": (32, ("broken pipe",)),
    "ENETUNREACH": (101, ("network is unreachable",)),
    "ECONNABORTED": (103, ("software caused connection abort",)),
    "ECONNRESET": (104, ("connection reset by peer",)),
    "ENOTCONN": (107, ("transport endpoint is not connected",)),
    "ETIMEDOUT": (110, ("connection timed out", "operation timed out")),
    "ECONNREFUSED": (111, ("connection refused",)),
    "EHOSTDOWN": (112, ("host is down",)),
    "EHOSTUNREACH": (113, ("no route to host",)),
    "WSAECONNRESET": (10054, ()),  # nginx for Windows: WSA codes, texts localised
    "WSAETIMEDOUT": (10060, ()),
    "WSAECONNREFUSED": (10061, ()),
    "WSAEHOSTUNREACH": (10065, ()),
    "WSAENETUNREACH": (10051, ()),
    "APR_TIMEUP": (70007, ("the timeout specified has expired",)),
    "APR_EOF": (70014, ("end of file found",)),
}
_BY_TEXT: Final = {t: name for name, (_, texts) in _ERRNO.items() for t in texts}
_BY_NUMBER: Final = {str(n).encode(): name for name, (n, _) in _ERRNO.items()}

ERRNO_CAUSE: Final[dict[str, Cause]] = {
    "ECONNREFUSED": Cause.UPSTREAM_REFUSED,
    "ENOENT": Cause.UPSTREAM_MISSING,  # a unix socket's file is gone: the pool is stopped
    "EAGAIN": Cause.UPSTREAM_OVERLOADED,  # a unix socket's listen backlog is full
    "EACCES": Cause.UPSTREAM_FORBIDDEN,  # listen.owner/mode, SELinux
    "EPERM": Cause.UPSTREAM_UNREACHABLE,  # a local firewall rule drops the packet
    "ENETUNREACH": Cause.UPSTREAM_UNREACHABLE,
    "EHOSTUNREACH": Cause.UPSTREAM_UNREACHABLE,
    "EHOSTDOWN": Cause.UPSTREAM_UNREACHABLE,
    "ETIMEDOUT": Cause.UPSTREAM_TIMEOUT,
    "WSAETIMEDOUT": Cause.UPSTREAM_TIMEOUT,
    "WSAECONNREFUSED": Cause.UPSTREAM_REFUSED,
    "WSAECONNRESET": Cause.UPSTREAM_RESET,
    "WSAEHOSTUNREACH": Cause.UPSTREAM_UNREACHABLE,
    "WSAENETUNREACH": Cause.UPSTREAM_UNREACHABLE,
    "APR_TIMEUP": Cause.UPSTREAM_TIMEOUT,
    "ECONNRESET": Cause.UPSTREAM_RESET,
    "ECONNABORTED": Cause.UPSTREAM_RESET,
    "EPIPE": Cause.UPSTREAM_CLOSED,  # it closed its end while the request was being sent
    "ENOTCONN": Cause.UPSTREAM_CLOSED,
    "APR_EOF": Cause.UPSTREAM_CLOSED,
    "EMFILE": Cause.SERVER_SATURATED,  # the web server's own descriptors ran out
}
"""The cause an errno names, on a connection to an upstream."""


def errno_name(number: bytes | None, text: bytes | None) -> str | None:
    """The symbolic name of an errno printed as ``(number: text)`` or ``(number)text``."""
    if text:
        name = _BY_TEXT.get(text.strip().decode("ascii", "replace").lower())
        if name is not None:
            return name
    return _BY_NUMBER.get(number) if number else None


_ERRNO_RE: Final = rb"\((?P<errno>\d+): (?P<strerror>[^()]*(?:\([^()]*\)[^()]*)*)\)"
# nginx's c->log->action for a connection to an upstream (ngx_http_upstream.c, ngx_event_pipe.c)
_UP_ACTION: Final = (
    rb" while (?:connecting to|SSL handshaking to|sending request to"
    rb"|reading response header from|reading) upstream"
)

NGINX: Final[tuple[Rule, ...]] = (
    Rule(
        "resolve_failed",
        rb"\S+ could not be resolved \(",
        Cause.DNS_FAILURE,
        samples=(
            ("backend.internal could not be resolved (3: Host not found)", Cause.DNS_FAILURE),
            ("api.example.com could not be resolved (110: Operation timed out)", Cause.DNS_FAILURE),
            ("www.example.org could not be resolved (2: Server failure)", Cause.DNS_FAILURE),
        ),
    ),
    Rule(
        "host_not_found",
        rb"host not found in (?:upstream|resolver) ",
        Cause.DNS_FAILURE,
        samples=(('host not found in upstream "app" in /etc/nginx/conf.d/a.conf:26', Cause.DNS_FAILURE),),
    ),
    Rule(
        "resolver_io",
        rb"\w+\(\) failed " + _ERRNO_RE + rb" while resolving",
        Cause.DNS_FAILURE,
        samples=(("recv() failed (111: Connection refused) while resolving, resolver: 127.0.0.11:53", Cause.DNS_FAILURE),),
    ),
    Rule(
        "resolver_response",
        rb"(?:unexpected (?:DNS )?response for |DNS error \(\d+: |wrong ident \d+ in DNS response )",
        Cause.DNS_FAILURE,
        samples=(
            ("unexpected response for www.example.com", Cause.DNS_FAILURE),
            ('DNS error (2: Server failure), query id:4211, name:"db.internal"', Cause.DNS_FAILURE),
        ),
    ),
    Rule(
        "no_resolver",
        rb"no resolver defined to resolve ",
        Cause.CONFIG_ERROR,
        samples=(("no resolver defined to resolve backend.example.com", Cause.CONFIG_ERROR),),
    ),
    Rule(
        "no_live_upstreams",
        rb"no live upstreams while",
        Cause.NO_LIVE_UPSTREAMS,
        samples=(("no live upstreams while connecting to upstream", Cause.NO_LIVE_UPSTREAMS),),
    ),
    Rule(
        "upstream_timed_out",
        rb"upstream timed out " + _ERRNO_RE + _UP_ACTION,
        Cause.UPSTREAM_TIMEOUT,
        samples=(
            ("upstream timed out (110: Connection timed out) while reading response header from upstream", Cause.UPSTREAM_TIMEOUT),
            ("upstream timed out (60: Operation timed out) while connecting to upstream", Cause.UPSTREAM_TIMEOUT),
            ("upstream timed out (10060: FormatMessage() error:(15105)) while connecting to upstream", Cause.UPSTREAM_TIMEOUT),
        ),
    ),
    Rule(
        "upstream_syscall",
        rb"\w+\(\)(?: to \S+)? failed " + _ERRNO_RE + rb"(?: \(SSL:[^)]*\))?" + _UP_ACTION,
        by_errno=True,
        samples=(
            ("connect() to unix:/run/php/php8.2-fpm.sock failed (111: Connection refused) while connecting to upstream", Cause.UPSTREAM_REFUSED),
            ("connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream", Cause.UPSTREAM_MISSING),
            ("connect() to unix:/run/php/php8.2-fpm.sock failed (11: Resource temporarily unavailable) while connecting to upstream", Cause.UPSTREAM_OVERLOADED),
            ("connect() to unix:/var/run/php5-fpm.sock failed (13: Permission denied) while connecting to upstream", Cause.UPSTREAM_FORBIDDEN),
            ("connect() failed (113: No route to host) while connecting to upstream", Cause.UPSTREAM_UNREACHABLE),
            ("connect() to [2606:4700::1]:8080 failed (101: Network is unreachable) while connecting to upstream", Cause.UPSTREAM_UNREACHABLE),
            ("connect() failed (61: Connection refused) while connecting to upstream", Cause.UPSTREAM_REFUSED),
            ("recv() failed (104: Connection reset by peer) while reading response header from upstream", Cause.UPSTREAM_RESET),
            ("readv() failed (104: Connection reset by peer) while reading upstream", Cause.UPSTREAM_RESET),
            ("writev() failed (32: Broken pipe) while sending request to upstream", Cause.UPSTREAM_CLOSED),
            ("send() failed (104: Connection reset by peer) while sending request to upstream", Cause.UPSTREAM_RESET),
            ("SSL_do_handshake() failed (104: Connection reset by peer) while SSL handshaking to upstream", Cause.UPSTREAM_RESET),
            ("socket() failed (24: Too many open files) while connecting to upstream", Cause.SERVER_SATURATED),
            ("recv() failed (111: Connection refused) while sending to client", None),
        ),
    ),
    Rule(
        "ssl_peer_closed",
        rb"peer closed connection in SSL handshake(?: " + _ERRNO_RE + rb")? while SSL handshaking to upstream",
        by_errno=True,
        default=Cause.UPSTREAM_CLOSED,
        samples=(
            ("peer closed connection in SSL handshake (104: Connection reset by peer) while SSL handshaking to upstream", Cause.UPSTREAM_RESET),
            ("peer closed connection in SSL handshake while SSL handshaking to upstream", Cause.UPSTREAM_CLOSED),
            ("peer closed connection in SSL handshake while SSL handshaking", None),
        ),
    ),
    Rule(
        "upstream_tls",
        rb"(?:\w+\(\) failed \(SSL: .*\) while SSL handshaking to upstream"
        rb"|upstream SSL certificate (?:verify error|does not match))",
        Cause.UPSTREAM_TLS,
        samples=(
            ("SSL_do_handshake() failed (SSL: error:1408F10B:SSL routines:ssl3_get_record:wrong version number) while SSL handshaking to upstream", Cause.UPSTREAM_TLS),
            ("upstream SSL certificate verify error: (10:certificate has expired) while SSL handshaking to upstream", Cause.UPSTREAM_TLS),
            ("SSL_do_handshake() failed (SSL: error:0A00010B:SSL routines::wrong version number) while SSL handshaking", None),
        ),
    ),
    Rule(
        "prematurely_closed",
        rb"upstream prematurely closed (?:connection|FastCGI (?:stdout|request))",
        Cause.UPSTREAM_CLOSED,
        samples=(
            ("upstream prematurely closed connection while reading response header from upstream", Cause.UPSTREAM_CLOSED),
            ("upstream prematurely closed FastCGI stdout while reading response header from upstream", Cause.UPSTREAM_CLOSED),
            ("upstream prematurely closed FastCGI request while reading upstream", Cause.UPSTREAM_CLOSED),
        ),
    ),
    Rule(
        "bad_response",
        rb"upstream sent (?:too big header|invalid (?:header|status|chunked response)"
        rb"|no valid HTTP/1\.0 header|unexpected FastCGI (?:record|request id)"
        rb"|unsupported FastCGI protocol version|invalid FastCGI record type)",
        Cause.UPSTREAM_BAD_RESPONSE,
        samples=(
            ("upstream sent too big header while reading response header from upstream", Cause.UPSTREAM_BAD_RESPONSE),
            ("upstream sent unexpected FastCGI record: 3 while reading response header from upstream", Cause.UPSTREAM_BAD_RESPONSE),
            ('upstream sent duplicate header line: "X: 1", previous value: "X: 1", ignoring', None),
        ),
    ),
    Rule(
        "worker_connections",
        rb"\d+ worker_connections are not enough",
        Cause.SERVER_SATURATED,
        samples=(("1024 worker_connections are not enough while connecting to upstream", Cause.SERVER_SATURATED),),
    ),
    Rule(
        "worker_exited",
        rb"worker process \d+ exited on signal \d+",
        Cause.WORKER_CRASHED,
        samples=(
            ("worker process 4711 exited on signal 11 (core dumped)", Cause.WORKER_CRASHED),
            ("worker process 4711 exited with code 0", None),
        ),
    ),
)  # fmt: skip
"""nginx: every upstream call, the resolver, its own workers (``[emerg]``: config_error)."""

# Apache: the code (2.4) or the 2.2 wording (``proxy: HTTP: ...``) starts the message; the errno
# was taken out by the header (``(111)Connection refused: ``) and decides ``by_errno`` rules.
_PROXY22: Final = rb"proxy: (?:[\w-]+: )?"


def _ah(*codes: str, also: bytes = b"") -> bytes:
    """A group matching ``AHnnnnn: `` for these codes (or ``also``, Apache 2.2's wording).
    The classifier reads the codes back (:data:`APACHE_CODE`) for its quick first test."""
    alts = rb"AH(?:" + "|".join(codes).encode() + rb"): "
    return rb"(?:" + alts + (rb"|" + also if also else b"") + rb")"


APACHE_CODE: Final = re.compile(rb"AH\(\?:([\d|]+)\)")
"""Where :func:`_ah` wrote its codes in a pattern."""

APACHE: Final[tuple[Rule, ...]] = (
    Rule(
        "dns_lookup",
        _ah("00898", also=_PROXY22) + rb"DNS lookup failure for: ",
        Cause.DNS_FAILURE,
        samples=(("AH00898: DNS lookup failure for: backend returned by /app", Cause.DNS_FAILURE),
                 ("proxy: DNS lookup failure for: backend returned by /", Cause.DNS_FAILURE)),
    ),
    Rule(
        "ssl_handshake",
        _ah("00898", also=_PROXY22) + rb"Error during SSL Handshake with remote server",
        Cause.UPSTREAM_TLS,
        samples=(("AH00898: Error during SSL Handshake with remote server returned by /", Cause.UPSTREAM_TLS),),
    ),
    Rule(
        "connect_failed",
        _ah("00957", "00939", "02454", "00958", also=_PROXY22) + rb"[\w-]+: attempt to connect ",
        by_errno=True,
        default=Cause.UPSTREAM_REFUSED,
        samples=(
            ("AH00957: HTTP: attempt to connect to 127.0.0.1:8080 (localhost) failed", Cause.UPSTREAM_REFUSED),
            ("AH02454: FCGI: attempt to connect to Unix domain socket /run/php/php8.2-fpm.sock (localhost:8000) failed", Cause.UPSTREAM_REFUSED),
            ("proxy: HTTP: attempt to connect to 10.0.0.5:80 (10.0.0.5) failed", Cause.UPSTREAM_REFUSED),
        ),
    ),
    Rule(
        "no_backend",
        _ah("01079", "01114", "00896", also=_PROXY22) + rb"(?:[\w-]+: )?failed to make connection to backend",
        by_errno=True,
        default=Cause.UPSTREAM_REFUSED,
        samples=(
            ("AH01079: failed to make connection to backend: localhost", Cause.UPSTREAM_REFUSED),
            ("AH01114: HTTP: failed to make connection to backend: 127.0.0.1", Cause.UPSTREAM_REFUSED),
            ("proxy: AJP: failed to make connection to backend: 127.0.0.1", Cause.UPSTREAM_REFUSED),
        ),
    ),
    Rule(
        "worker_disabled",
        _ah("00940", "00959", also=_PROXY22) + rb"?(?:[\w-]+: disabled connection for"
        rb"|ap_proxy_connect_backend disabling worker for)",
        Cause.NO_LIVE_UPSTREAMS,
        samples=(
            ("AH00940: HTTP: disabled connection for (127.0.0.1:8080)", Cause.NO_LIVE_UPSTREAMS),
            ("AH00959: ap_proxy_connect_backend disabling worker for (127.0.0.1:8080) for 60s", Cause.NO_LIVE_UPSTREAMS),
            ("proxy: HTTP: disabled connection for (localhost)", Cause.NO_LIVE_UPSTREAMS),
            ("ap_proxy_connect_backend disabling worker for (localhost)", Cause.NO_LIVE_UPSTREAMS),
        ),
    ),
    Rule(
        "fcgi_header",
        _ah("01067"),
        by_errno=True,
        default=Cause.UPSTREAM_RESET,
        samples=(("AH01067: Failed to read FastCGI header", Cause.UPSTREAM_RESET),),
    ),
    Rule(
        "fcgi_dispatch",
        _ah("01075"),
        by_errno=True,
        default=Cause.UPSTREAM_RESET,
        samples=(("AH01075: Error dispatching request to : ", Cause.UPSTREAM_RESET),),
    ),
    Rule(
        "fcgi_bogus",
        _ah("01068"),
        Cause.UPSTREAM_BAD_RESPONSE,
        samples=(("AH01068: Got bogus version 60", Cause.UPSTREAM_BAD_RESPONSE),),
    ),
    Rule(
        "status_line",
        _ah("01102", also=_PROXY22) + rb"error reading status line from remote server",
        by_errno=True,
        default=Cause.UPSTREAM_CLOSED,
        samples=(("AH01102: error reading status line from remote server 127.0.0.1:8080", Cause.UPSTREAM_CLOSED),
                 ("proxy: error reading status line from remote server 127.0.0.1", Cause.UPSTREAM_CLOSED)),
    ),
    Rule(
        "read_remote",
        _ah("00898", also=_PROXY22) + rb"Error reading from remote server",
        by_errno=True,
        default=Cause.UPSTREAM_CLOSED,
        samples=(("AH00898: Error reading from remote server returned by /index.php", Cause.UPSTREAM_CLOSED),),
    ),
    Rule(
        "pass_body",
        _ah("01084", "01097", "10154", also=_PROXY22) + rb"pass request body failed to ",
        by_errno=True,
        samples=(("(32)Broken pipe: [client 1.2.3.4:5] AH01097: pass request body failed to 127.0.0.1:8080 (127.0.0.1) from 1.2.3.4 ()", Cause.UPSTREAM_CLOSED),
                 ("AH01097: pass request body failed to 127.0.0.1:8080 (127.0.0.1) from 1.2.3.4 ()", None)),
    ),
    Rule(
        "ajp_backend",
        _ah("00868", "00876", "00877", "00878", "00889", "00893", "00897", "00992", "01029",
            "01030", "01032", also=_PROXY22)
        + rb"?(?:(?:read response|send|request) failed (?:to|from) |read zero bytes|dialog to "
        rb"|cping/cpong failed|ajp_read_header failed"
        rb"|ajp_\w+(?:\(\))?:? (?:ajp_ilink_\w+ failed|can't receive header|send failed|error))",
        by_errno=True,
        default=Cause.UPSTREAM_CLOSED,
        samples=(
            ("(70007)The timeout specified has expired: AH01030: ajp_ilink_receive() can't receive header", Cause.UPSTREAM_TIMEOUT),
            ("AH00992: ajp_read_header: ajp_ilink_receive failed", Cause.UPSTREAM_CLOSED),
            ("(104)Connection reset by peer: ajp_ilink_receive() can't receive header", Cause.UPSTREAM_RESET),
            ("proxy: read response failed from 127.0.0.1:8009 (localhost)", Cause.UPSTREAM_CLOSED),
        ),
    ),
    Rule(
        "ajp_bad_header",
        _ah("01031") + rb"|ajp_ilink_receive\(\) received bad header",
        Cause.UPSTREAM_BAD_RESPONSE,
        samples=(("AH01031: ajp_ilink_receive() received bad header", Cause.UPSTREAM_BAD_RESPONSE),),
    ),
    Rule(
        "no_handler",
        _ah("01144", also=_PROXY22) + rb"No protocol handler was valid for the URL",
        Cause.CONFIG_ERROR,
        samples=(("AH01144: No protocol handler was valid for the URL /x (scheme 'fcgi').", Cause.CONFIG_ERROR),),
    ),
    Rule(
        "child_crashed",
        _ah("00051", "00052") + rb"?child pid \d+ exit signal |" + _ah("00060"),
        Cause.WORKER_CRASHED,
        samples=(
            ("AH00051: child pid 21356 exit signal Segmentation fault (11), possible coredump in /etc/apache2", Cause.WORKER_CRASHED),
            ("AH00052: child pid 1818 exit signal Aborted (6)", Cause.WORKER_CRASHED),
            ("child pid 6279 exit signal Segmentation fault (11)", Cause.WORKER_CRASHED),
            ("AH00060: seg fault or similar nasty error detected in the parent process", Cause.WORKER_CRASHED),
        ),
    ),
    Rule(
        "max_workers",
        _ah("00161", "00286", "00484") + rb"?server reached (?:MaxRequestWorkers|MaxClients) setting|"
        + _ah("03490", "00288")
        + rb"scoreboard is full",
        Cause.SERVER_SATURATED,
        samples=(
            ("AH00161: server reached MaxRequestWorkers setting, consider raising the MaxRequestWorkers setting", Cause.SERVER_SATURATED),
            ("server reached MaxClients setting, consider raising the MaxClients setting", Cause.SERVER_SATURATED),
        ),
    ),
    Rule(
        "fastcgi22_timeout",
        rb'FastCGI: comm with (?:server|client) ".*" aborted: idle timeout',
        Cause.UPSTREAM_TIMEOUT,
        samples=(('FastCGI: comm with server "/usr/lib/cgi-bin/php5-fcgi" aborted: idle timeout (30 sec)', Cause.UPSTREAM_TIMEOUT),),
    ),
    Rule(
        "fastcgi22_connect",
        rb'FastCGI: failed to connect to server ".*": connect\(\) failed',
        by_errno=True,
        default=Cause.UPSTREAM_REFUSED,
        samples=(('FastCGI: failed to connect to server "/usr/lib/cgi-bin/php5-fcgi": connect() failed', Cause.UPSTREAM_REFUSED),),
    ),
    Rule(
        "fastcgi22_headers",
        rb"FastCGI: incomplete headers \(\d+ bytes\) received from server",
        Cause.UPSTREAM_CLOSED,
        samples=(('FastCGI: incomplete headers (0 bytes) received from server "/var/www/php5.fcgi"', Cause.UPSTREAM_CLOSED),),
    ),
    Rule(
        "fastcgi22_read",
        rb'FastCGI: comm with server ".*" aborted: read failed',
        by_errno=True,
        default=Cause.UPSTREAM_CLOSED,
        samples=(('FastCGI: comm with server "/usr/lib/cgi-bin/php5-fcgi" aborted: read failed', Cause.UPSTREAM_CLOSED),),
    ),
    Rule(
        "fcgid_timeout",
        rb"mod_fcgid: read data timeout in \d+ seconds",
        Cause.UPSTREAM_TIMEOUT,
        samples=(("mod_fcgid: read data timeout in 40 seconds", Cause.UPSTREAM_TIMEOUT),),
    ),
    Rule(
        "fcgid_read",
        rb"mod_fcgid: error reading data from FastCGI server",
        by_errno=True,
        default=Cause.UPSTREAM_RESET,
        samples=(("mod_fcgid: error reading data from FastCGI server", Cause.UPSTREAM_RESET),),
    ),
    Rule(
        "fcgid_slot",
        rb"mod_fcgid: can't apply process slot for ",
        Cause.UPSTREAM_OVERLOADED,
        samples=(("mod_fcgid: can't apply process slot for /var/www/cgi-bin/php.fcgi", Cause.UPSTREAM_OVERLOADED),),
    ),
    Rule(
        "syntax_error",
        _ah("00526") + rb"?Syntax error on line \d+ of ",
        Cause.CONFIG_ERROR,
        samples=(("AH00526: Syntax error on line 37 of /etc/apache2/sites-enabled/a.conf:", Cause.CONFIG_ERROR),),
    ),
)  # fmt: skip
"""Apache 2.2 and 2.4: mod_proxy, proxy_http, proxy_fcgi, mod_fastcgi, mod_fcgid, the MPMs."""

PHP_FPM: Final[tuple[Rule, ...]] = (
    Rule(
        "max_children",
        rb"server reached (?:pm\.)?max_children setting",
        Cause.FPM_MAX_CHILDREN,
        samples=(("server reached pm.max_children setting (5), consider raising it", Cause.FPM_MAX_CHILDREN),
                 ("server reached max_children setting (50), consider raising it", Cause.FPM_MAX_CHILDREN)),
    ),
    Rule(
        "child_signal",
        rb"(?:child (?P<child>\d+)|oops, unknown child \(\d+\)) exited on signal (?P<signal>\d+)",
        Cause.WORKER_CRASHED,
        samples=(
            ("child 2049 exited on signal 11 (SIGSEGV - core dumped) after 3.1 seconds from start", Cause.WORKER_CRASHED),
            ("child 2049 exited on signal 15 (SIGTERM) after 30.2 seconds from start", None),
            ("oops, unknown child (2312) exited on signal 9 (SIGKILL). Please open a bug report (https://bugs.php.net).", Cause.WORKER_CRASHED),
        ),
    ),
    Rule(
        "emergency_restart",
        rb"failed processes threshold \(\d+ in \d+ sec\) is reached",
        Cause.WORKER_CRASHED,
        samples=(("failed processes threshold (10 in 60 sec) is reached, initiating reload", Cause.WORKER_CRASHED),),
    ),
    # The request line sits inside these two: anchor the verdict at the end of the line.
    Rule(
        "exec_timeout",
        rb"child \d+, script .* execution timed out \([\d.]+ sec\), terminating\Z",
        Cause.FPM_EXEC_TIMEOUT,
        samples=(("child 31, script '/var/www/a.php' (request: \"GET /a.php\") execution timed out (30.011 sec), terminating", Cause.FPM_EXEC_TIMEOUT),),
    ),
    Rule(
        "slow",
        rb"child \d+, script .* executing too slow \([\d.]+ sec\), logging\Z",
        Cause.FPM_SLOW,
        samples=(("child 31, script '/var/www/a.php' (request: \"GET /a.php\") executing too slow (5.012 sec), logging", Cause.FPM_SLOW),),
    ),
    Rule(
        "config_parse",
        rb"\[[^\]]*:\d+\] (?:unable to parse |value is NULL for a )",
        Cause.CONFIG_ERROR,
        samples=(("[/etc/php/8.2/fpm/pool.d/www.conf:12] unable to parse value for entry 'pm': invalid process manager (static, dynamic or ondemand)", Cause.CONFIG_ERROR),),
    ),
    Rule(
        "config_failed",
        rb"failed to (?:load|post process|parse|open)\b[^\n]*configuration",
        Cause.CONFIG_ERROR,
        samples=(("failed to post process the configuration", Cause.CONFIG_ERROR),
                 ("failed to open configuration file '/etc/php-fpm.conf': No such file or directory (2)", Cause.CONFIG_ERROR)),
    ),
)  # fmt: skip
"""PHP-FPM's master: children, pool limits, request timeouts, its configuration."""
