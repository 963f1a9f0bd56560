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
    NO_LIVE_UPSTREAMS = "no_live_upstreams"
    DNS_FAILURE = "dns_failure"
    FPM_MAX_CHILDREN = "fpm_max_children"
    WORKER_CRASHED = "worker_crashed"
    FPM_EXEC_TIMEOUT = "fpm_exec_timeout"
    FPM_SLOW = "fpm_slow"
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
    Cause.NO_LIVE_UPSTREAMS: "every server of an upstream group is marked down",
    Cause.DNS_FAILURE: "an upstream host name could not be resolved",
    Cause.FPM_MAX_CHILDREN: "PHP-FPM reached pm.max_children: saturated",
    Cause.WORKER_CRASHED: "a PHP-FPM child exited on a signal",
    Cause.FPM_EXEC_TIMEOUT: "PHP-FPM killed a request at request_terminate_timeout",
    Cause.FPM_SLOW: "PHP-FPM reports a request executing too slowly",
    Cause.CONFIG_ERROR: "the server reports a broken configuration",
}
