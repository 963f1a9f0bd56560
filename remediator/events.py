"""The names of action-log records and of how incidents end: one vocabulary for the engine,
replay, review and the CLI (and for the scripts that read the JSON action log)."""

from __future__ import annotations

import enum


class Event(enum.StrEnum):
    """The ``event`` of an action-log record."""

    INCIDENT_OPENED = "incident_opened"
    TRIGGER_HELD_BACK = "trigger_held_back"
    ACTION_INTENT = "action_intent"
    ACTION_HELD = "action_held"
    ACTION_RESULT = "action_result"
    VERIFY_PASSED = "verify_passed"
    VERIFY_FAILED = "verify_failed"
    VERIFY_UNKNOWN = "verify_unknown"  # replay: neither the logs nor anything else could tell
    ROLLBACK_INTENT = "rollback_intent"
    ROLLBACK_RESULT = "rollback_result"
    NOTIFY = "notify"
    BREAKER_OPENED = "breaker_opened"
    INCIDENT_CLOSED = "incident_closed"
    INCIDENT_ABANDONED = "incident_abandoned"
    OPERATOR_PAUSE = "operator_pause"
    OPERATOR_RESUME = "operator_resume"
    OPERATOR_RESET = "operator_reset"
    OPERATOR_TRIGGER = "operator_trigger"
    FLEET_SLOT_ACQUIRED = "fleet_slot_acquired"  # one of the pool's K slots, for this incident
    FLEET_SLOT_RELEASED = "fleet_slot_released"  # given back when the incident closed
    FLEET_ACTING_ALONE = "fleet_acting_alone"  # etcd unreachable, `on_unreachable: act`
    FLEET_SLOT_LOST = "fleet_slot_lost"  # its lease expired or was revoked mid-incident


class Outcome(enum.StrEnum):
    """The ``outcome`` of a step's records (action, verification, notification)."""

    OK = "ok"  # done (not yet verified: verification is the engine's)
    FAILED = "failed"  # tried, did not work
    REFUSED = "refused"  # would make things worse (config test failed, unit stopped on purpose)
    WOULD_RUN = "would_run"  # dry run: what it would have done is in details (see control.py)
    HELD = "held"  # a guard held it back
    # The target could not be acted on safely (an untrusted pid file, a master that is not the
    # service's): nothing was tried, so it is no failed run, no breaker food and no budget used.
    CANNOT_ACT = "cannot_act"
    # Not repeated: it kept resolving incidents whose trigger came straight back (flapping,
    # remediator.flap); the incident escalated past it.
    SKIPPED = "skipped"


class IncidentOutcome(enum.StrEnum):
    """The ``outcome`` of an ``incident_closed`` record."""

    RESOLVED = "resolved"  # a changing step was verified: the site is back
    COMPLETED = "completed"  # a playbook that changes nothing (alert, diagnose) ran its steps
    INCOMPLETE = "incomplete"  # such a playbook, but a step of it failed (a webhook down, say)
    EXHAUSTED = "exhausted"  # every step was tried, none helped
    HELD = "held"  # every step was held back by a guard: nothing was tried
    CANNOT_ACT = "cannot_act"  # no step could act safely (held or cannot_act): nothing was tried
    UNVERIFIED = "unverified"  # replay: no evidence either way after the last step
    ABORTED = "aborted"  # the action log could not be written: not acting
    INTERRUPTED = "interrupted"  # the daemon died during the incident
    SUPERSEDED = "superseded"  # a dry-run trigger in a live daemon gave way to a real incident


class JudgedOn(enum.StrEnum):
    """What a verification verdict was based on (``judged_on`` in its record)."""

    PROBE = "probe"
    REQUESTS = "requests"  # requests users made after the action (the access log)
    SERVICE = "service"  # the service's own state
    DNS = "dns"  # a dns source's lookups of the site's names
    ERRORS = "errors"  # error-log causes after the action
    POOL = "pool"  # PHP-FPM's own status (an fpm_status source) read after the action
    LOGS = "logs"  # replay: the log's own future stood in for a probe
