"""Cause classes: what an error-log line says went wrong, in words a playbook can name.

One enum shared by the classifiers (sources), the detectors and the playbook language, so a
playbook's ``error_cause`` can only name a cause some classifier can produce.
"""

from __future__ import annotations

import enum


class Cause(enum.StrEnum):
    """A classified reason behind failed requests, from error logs or the journal."""

    UPSTREAM_REFUSED = "upstream_refused"
    UPSTREAM_MISSING = "upstream_missing"
    UPSTREAM_OVERLOADED = "upstream_overloaded"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_RESET = "upstream_reset"
    UPSTREAM_CLOSED = "upstream_closed"
    UPSTREAM_FORBIDDEN = "upstream_forbidden"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TLS = "upstream_tls"
    UPSTREAM_BAD_RESPONSE = "upstream_bad_response"
    NO_LIVE_UPSTREAMS = "no_live_upstreams"
    DNS_FAILURE = "dns_failure"
    FPM_MAX_CHILDREN = "fpm_max_children"
    WORKER_CRASHED = "worker_crashed"
    FPM_EXEC_TIMEOUT = "fpm_exec_timeout"
    FPM_SLOW = "fpm_slow"
    SERVER_SATURATED = "server_saturated"
    CONFIG_ERROR = "config_error"


def describe(cause: Cause) -> str:
    """The one-line explanation of a cause, for docs and the incident timeline."""
    return _DESCRIPTIONS[cause]


_DESCRIPTIONS: dict[Cause, str] = {
    Cause.UPSTREAM_REFUSED: "nothing listens on the upstream socket: PHP-FPM (or the backend) is down",
    Cause.UPSTREAM_MISSING: "the upstream unix socket file does not exist: PHP-FPM stopped",
    Cause.UPSTREAM_OVERLOADED: "the upstream's listen backlog is full: saturated",
    Cause.UPSTREAM_TIMEOUT: "the upstream did not answer in time: hung or saturated workers",
    Cause.UPSTREAM_RESET: "the upstream reset the connection mid-request: workers crashing",
    Cause.UPSTREAM_CLOSED: "the upstream closed the connection before a full response header",
    Cause.UPSTREAM_FORBIDDEN: "the upstream socket refuses this server's user (13: Permission denied): "
    "a pool's listen.owner/listen.mode or SELinux",
    Cause.UPSTREAM_UNREACHABLE: "no route to the upstream (113, 101): a firewall rule or the network",
    Cause.UPSTREAM_TLS: "the TLS handshake with the upstream failed: certificate or protocol mismatch",
    Cause.UPSTREAM_BAD_RESPONSE: "the upstream's answer was malformed or too big for the buffers "
    "(upstream sent too big header, invalid header or FastCGI record)",
    Cause.NO_LIVE_UPSTREAMS: "every server of an upstream group is marked down (nginx), "
    "the proxy worker is disabled after failures (Apache)",
    Cause.DNS_FAILURE: "an upstream host name could not be resolved",
    Cause.FPM_MAX_CHILDREN: "PHP-FPM reached pm.max_children: saturated",
    Cause.WORKER_CRASHED: "a worker exited on a signal: a PHP-FPM child, an Apache child "
    "(mod_php: exit signal Segmentation fault), an nginx worker",
    Cause.FPM_EXEC_TIMEOUT: "PHP-FPM killed a request at request_terminate_timeout",
    Cause.FPM_SLOW: "PHP-FPM reports a request executing too slowly",
    Cause.SERVER_SATURATED: "the web server ran out of workers or connections: Apache "
    "MaxRequestWorkers (MaxClients), nginx worker_connections, open files",
    Cause.CONFIG_ERROR: "the server reports a broken configuration",
}
