"""Cause classes: what an error-log line says went wrong, in words a playbook can name.

One enum shared by the classifiers (sources), the detectors and the playbook language, so a
playbook's ``error_cause`` can only name a cause some classifier can produce.
"""

from __future__ import annotations

import enum


class Cause(enum.StrEnum):
    """A classified reason behind a failed request, from error logs or the journal."""

    UPSTREAM_REFUSED = "upstream_refused"
    """Nothing listens on the upstream socket (nginx 111, Apache AH02454/AH01079): PHP-FPM down."""
    UPSTREAM_MISSING = "upstream_missing"
    """The upstream unix socket file does not exist (nginx ``2: No such file``): PHP-FPM stopped."""
    UPSTREAM_OVERLOADED = "upstream_overloaded"
    """The upstream's listen backlog is full (nginx ``11: Resource temporarily unavailable``)."""
    UPSTREAM_TIMEOUT = "upstream_timeout"
    """The upstream accepted but did not answer in time (nginx ``110``): hung or saturated workers."""
    UPSTREAM_RESET = "upstream_reset"
    """The upstream connection was reset mid-request (nginx ``104``, Apache AH01067/AH01075)."""
    UPSTREAM_CLOSED = "upstream_closed"
    """The upstream closed the connection before a full response header."""
    NO_LIVE_UPSTREAMS = "no_live_upstreams"
    """Every server of an nginx upstream block is marked down."""
    DNS_FAILURE = "dns_failure"
    """An upstream host name could not be resolved."""
    FPM_MAX_CHILDREN = "fpm_max_children"
    """PHP-FPM reached ``pm.max_children``: saturated."""
    WORKER_CRASHED = "worker_crashed"
    """A PHP-FPM child exited on a signal (SIGSEGV, SIGKILL, ...)."""
    FPM_EXEC_TIMEOUT = "fpm_exec_timeout"
    """PHP-FPM killed a request at ``request_terminate_timeout``."""
    FPM_SLOW = "fpm_slow"
    """PHP-FPM's slowlog reports a request executing too slowly."""
    CONFIG_ERROR = "config_error"
    """The server reports a broken configuration (nginx ``[emerg]``, PHP-FPM ``ERROR: [file:N]``)."""


def describe(cause: Cause) -> str:
    """The one-line explanation of a cause, taken from its docstring-like comment table."""
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
