"""The playbook language: triggers (conditions over sources), ordered steps, limits.

A playbook says *when* (a condition tree over sources), *what* (steps, each one action with
its arguments and a verification), and *how often at most* (limits). Declarations here are the
single source of validation, JSON Schema and docs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from remediator.actions.declare import ACTIONS, VERIFIABLE
from remediator.causes import Cause
from remediator.flap import Flap
from remediator.schema import (
    INVALID,
    NAME_PATTERN,
    Bool,
    Choice,
    Context,
    Duration,
    Float,
    Int,
    ListOf,
    OneKey,
    Ratio,
    Record,
    Ref,
    Spec,
    Str,
    Wrap,
    _Invalid,
    did_you_mean,
    opt,
    parse_size,
)

# --- condition values -------------------------------------------------------------------------


def _parse_status(text: str) -> frozenset[int] | None:
    """``502`` -> {502}; ``5xx`` -> 500..599; ``50x`` -> 500..509."""
    text = text.strip().lower()
    if len(text) != 3 or text[0] not in "12345":
        return None
    if text.isdigit():
        return frozenset({int(text)})
    if text[1:] == "xx":
        base = int(text[0]) * 100
        return frozenset(range(base, base + 100))
    if text[1].isdigit() and text[2] == "x":
        base = int(text[:2]) * 10
        return frozenset(range(base, base + 10))
    return None


class Statuses(Spec[frozenset[int]]):
    """HTTP statuses: ``502``, ``[502, 503, 504]``, ``5xx`` or ``50x``."""

    def load(self, node: Node, ctx: Context, key: str) -> frozenset[int] | _Invalid:
        items = node.value if not isinstance(node, ScalarNode) else [node]
        if isinstance(node, MappingNode) or not items:
            return ctx.error(node, key, "expected a status like 502, a list, or a class like 5xx")
        out: set[int] = set()
        for item in items:
            codes = _parse_status(str(item.value)) if isinstance(item, ScalarNode) else None
            if codes is None:
                return ctx.error(
                    item,
                    key,
                    f"'{item.value}' is not an HTTP status (100-599, or a class like 5xx)",
                )
            out |= codes
        return frozenset(out)

    def describe(self) -> str:
        return "HTTP status, list of statuses, or class (`5xx`, `50x`)"

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        one = {"anyOf": [{"type": "integer", "minimum": 100, "maximum": 599}, {"type": "string"}]}
        return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}

    def render(self, value: Any) -> str:
        return ", ".join(str(v) for v in sorted(value))


@dataclass(frozen=True)
class Amount:
    """Memory as bytes or as a fraction of the total."""

    bytes: int | None = None
    ratio: float | None = None

    def __str__(self) -> str:
        return f"{self.ratio * 100:g}%" if self.ratio is not None else f"{self.bytes} bytes"


class MemoryAmount(Spec[Amount]):
    """``512MiB`` (absolute) or ``10%`` (of total memory)."""

    def load(self, node: Node, ctx: Context, key: str) -> Amount | _Invalid:
        text = str(node.value).strip() if isinstance(node, ScalarNode) else ""
        if text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                pct = -1
            if 0 < pct < 100:
                return Amount(ratio=pct / 100)
        elif text:
            size = parse_size(text)
            if size:
                return Amount(bytes=size)
        return ctx.error(node, key, f"'{text}' is not a memory amount: write 512MiB, 2G or 10%")

    def describe(self) -> str:
        return "memory amount (`512MiB`, `2G` or `10%` of total)"

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string"}


# --- conditions -------------------------------------------------------------------------------

WINDOW = Duration(min=1, max=24 * 3600)


@dataclass(frozen=True)
class StatusRate:
    """Holds when enough requests in the window ended with one of the statuses."""

    source: str = opt(
        Ref("source", ("access_log",), "status_rate"), "The access log to count statuses in."
    )
    status: frozenset[int] = opt(Statuses(), "Which statuses count.")
    window: float = opt(WINDOW, "The sliding window counted over.", 30.0)
    at_least: int = opt(Int(min=1), "Minimum number of matching requests in the window.", 1)
    ratio: float | None = opt(
        Ratio(), "Also require this share of all requests in the window to match.", None
    )
    min_sample: int = opt(
        Int(min=1),
        "The ratio is judged on at least this many requests: a window that holds fewer (a "
        "quiet site, a daemon just started) is judged as if the requests it lacks had "
        "succeeded, so 1 failure of 1 request is not 100%, while 12 failures of 13 are still "
        "60% of 20. A `not` of this condition holds only once the window holds this many.",
        20,
    )
    count_alone: int | None = opt(
        Int(min=1),
        "With `ratio`: this many matching requests in the window are enough on their own, "
        "whatever the ratio. Lines added by whoever can write the log (forged 200s) can "
        "dilute a ratio, never a count; set it above your worst normal window.",
        None,
    )

    def check(self) -> list[tuple[str, str]]:
        if self.count_alone is None:
            return []
        if self.ratio is None:
            return [("count_alone", "only with ratio: without one, at_least is a count already")]
        if self.count_alone < self.at_least:
            return [("count_alone", "must not be less than at_least")]
        return []


@dataclass(frozen=True)
class StatusSpike:
    """Holds when the statuses' rate is far above the source's own recent baseline."""

    source: str = opt(Ref("source", ("access_log",), "status_spike"), "The access log to watch.")
    status: frozenset[int] = opt(Statuses(), "Which statuses count.")
    window: float = opt(WINDOW, "The recent window compared with the baseline.", 30.0)
    baseline: float = opt(
        Duration(min=60, max=24 * 3600), "How far back the baseline looks.", 1800.0
    )
    factor: float = opt(Float(min=1.1), "How many times the baseline rate counts as a spike.", 4.0)
    at_least: int = opt(Int(min=1), "Minimum matching requests in the window.", 10)

    def check(self) -> list[tuple[str, str]]:
        if self.baseline <= self.window:
            return [("baseline", "must be longer than window")]
        return []


@dataclass(frozen=True)
class ErrorCause:
    """Holds when error-log lines classified as one of the causes appear in the window."""

    source: str = opt(
        Ref("source", ("error_log", "journal"), "error_cause"),
        "The error log or journal source to classify.",
    )
    cause: tuple[str, ...] = opt(
        ListOf(Choice([c.value for c in Cause], what="cause"), min_len=1, single=True),
        "One cause or a list; see the cause table in the cookbook.",
    )
    window: float = opt(WINDOW, "The sliding window counted over.", 30.0)
    at_least: int = opt(Int(min=1), "Minimum number of matching lines in the window.", 1)


@dataclass(frozen=True)
class ProbeFailing:
    """Holds when an HTTP probe has failed this many times in a row."""

    probe: str = opt(Ref("source", ("probe",), "probe_failing"), "The probe source.")
    consecutive: int = opt(Int(min=1, max=1000), "Failures in a row that count.", 3)


@dataclass(frozen=True)
class ServiceDown:
    """Holds when a service's master process is gone while it should run: killed or crashed
    (its pid file names a dead process, its unit failed) or only orphaned workers left.
    Never for a service stopped on purpose (no pid file; a unit stopped by systemctl).
    The master's death is an event (a pidfd; a unit's `cgroup.events`): a crash is seen at
    once and holds without waiting `lasting`; other ways down (a unit that hit its start
    limit, say) wait it out. The reading says how the death was seen and when."""

    service: str = opt(Ref("service"), "The service to watch.")
    lasting: float = opt(
        Duration(max=600),
        "How long it must stay down before this holds, unless it crashed (a pid file naming "
        "a dead master, orphans left, a unit failed by a signal, core dump or exit code).",
        0.5,
    )


FPM_SOURCE = ("fpm_status",)
LASTING = Duration(max=300)


@dataclass(frozen=True)
class FpmSaturated:
    """Holds when PHP-FPM's pool has had no room for a new request for `lasting`: requests in
    its listen queue, "max children reached" rising, or every worker busy (active processes
    at `pm.max_children`), which shows as the status not answered in time or the backlog
    full: the status is served by a worker, and none was free."""

    source: str = opt(Ref("source", FPM_SOURCE, "fpm_saturated"), "The fpm_status source.")
    lasting: float = opt(LASTING, "How long it must stay saturated before this holds.", 1.0)


@dataclass(frozen=True)
class FpmHung:
    """Holds when PHP-FPM's pool is stuck for `lasting`: every worker busy, each on a
    request older than `older_than`, or no worker free to answer the status for
    `older_than` (no request finishing: hung or stopped workers)."""

    source: str = opt(Ref("source", FPM_SOURCE, "fpm_hung"), "The fpm_status source.")
    older_than: float = opt(
        Duration(min=0.1, max=3600), "A request this old, or no answer this long, is stuck.", 2.0
    )
    lasting: float = opt(LASTING, "How long it must stay stuck before this holds.", 0.0)


@dataclass(frozen=True)
class FpmStuck:
    """Holds when PHP-FPM's pool is stuck, not merely busy: its status goes unanswered and its
    workers, looked at in `/proc` (the source must name its `service`), are all stopped
    (SIGSTOP: holds at once) or have not finished a single request (their read and write
    counts unchanged) for `factor` times the pool's usual longest request, and `at_least`.
    The usual longest request is the 99th percentile of the durations of the requests the
    status showed done in the last 10 minutes; until 20 were seen, it is not known and the
    span is at least 2 s. A pool whose workers keep finishing requests, however slowly and
    however full, is busy: this never holds for it."""

    source: str = opt(Ref("source", FPM_SOURCE, "fpm_stuck"), "The fpm_status source.")
    factor: float = opt(
        Float(min=1.0),
        "How many times the pool's usual longest request no worker may finish one.",
        4.0,
    )
    at_least: float = opt(
        Duration(min=0.1, max=3600), "The shortest span without a finished request.", 0.25
    )


@dataclass(frozen=True)
class FpmSlow:
    """Holds when PHP-FPM's "slow requests" count (requests past
    `request_slowlog_timeout`) rose by `at_least` within `window`, throughout `lasting`."""

    source: str = opt(Ref("source", FPM_SOURCE, "fpm_slow"), "The fpm_status source.")
    window: float = opt(WINDOW, "The sliding window the rise is counted over.", 10.0)
    at_least: int = opt(Int(min=1), "Minimum new slow requests in the window.", 1)
    lasting: float = opt(LASTING, "How long it must keep holding before this holds.", 0.0)


@dataclass(frozen=True)
class HostCondition:
    """Holds when a host resource crosses a limit (every given limit must hold)."""

    memory_available_below: Amount | None = opt(
        MemoryAmount(), "Available memory (psutil's 'available') under this.", None
    )
    swap_used_above: float | None = opt(Ratio(), "Share of swap in use above this.", None)
    load_above: float | None = opt(Float(min=0), "1-minute load average per CPU above this.", None)

    def check(self) -> list[tuple[str, str]]:
        if (self.memory_available_below, self.swap_used_above, self.load_above) == (None,) * 3:
            return [
                ("", "give at least one of memory_available_below, swap_used_above, load_above")
            ]
        return []


@dataclass(frozen=True)
class DnsMismatch:
    """Holds when a `dns` source's names have not resolved to the expected addresses for
    `lasting`: an answer with an address that is not expected, no address at all, or a failed
    lookup (NXDOMAIN, SERVFAIL, a timeout), from any of its servers."""

    source: str = opt(Ref("source", ("dns",), "dns_mismatch"), "The dns source.")
    lasting: float = opt(
        Duration(max=24 * 3600),
        "How long the names must keep resolving wrong before this holds (a lookup that times "
        "out once is not an outage of the records).",
        30.0,
    )


@dataclass(frozen=True)
class AllOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class NotOf:
    condition: Condition


Condition = (
    StatusRate
    | StatusSpike
    | ErrorCause
    | ProbeFailing
    | ServiceDown
    | FpmSaturated
    | FpmHung
    | FpmStuck
    | FpmSlow
    | HostCondition
    | DnsMismatch
    | AllOf
    | AnyOf
    | NotOf
)

CONDITION: OneKey[Condition] = OneKey(what="condition", name="condition")
CONDITION.add(
    "all", Wrap(ListOf(CONDITION, min_len=1), AllOf), "Every condition in the list holds."
)
CONDITION.add("any", Wrap(ListOf(CONDITION, min_len=1), AnyOf), "At least one condition holds.")


NOT_HELP = (
    "The condition is known not to hold: `not` of something with no evidence yet never "
    "holds. A probe or a service must have answered, a `dns` source must have resolved, the "
    "host must have had a snapshot, and an access log's window must hold at least "
    "`min_sample` requests (`status_rate`) or `at_least` requests (`status_spike`): a quiet or "
    "blind log is no evidence that requests succeed. `error_cause` cannot be negated (an "
    "error log is as quiet when the site is healthy as when it cannot be read). What is "
    "negated never corroborates a trigger and is not what verification judges."
)


class _Negation(Spec[NotOf]):
    """``not: CONDITION``, refusing what absence of lines cannot prove (``error_cause``)."""

    def load(self, node: Node, ctx: Context, key: str) -> NotOf | _Invalid:
        inner = CONDITION.load(node, ctx, key)
        if isinstance(inner, _Invalid):
            return INVALID
        if any(isinstance(c, ErrorCause) for c in walk_conditions(inner)):
            return ctx.error(
                node,
                key,
                "error_cause cannot be negated: an error log is as quiet when it cannot be "
                "read as when the site is healthy (negate a probe_failing or a status_rate "
                "instead)",
            )
        return NotOf(inner)

    def describe(self) -> str:
        return "condition"

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        return CONDITION.json_schema(defs)


CONDITION.add("not", _Negation(), NOT_HELP)
CONDITION.add("status_rate", Record(StatusRate, name="status_rate"), StatusRate.__doc__ or "")
CONDITION.add("status_spike", Record(StatusSpike, name="status_spike"), StatusSpike.__doc__ or "")
CONDITION.add("error_cause", Record(ErrorCause, name="error_cause"), ErrorCause.__doc__ or "")
CONDITION.add(
    "probe_failing",
    Record(ProbeFailing, name="probe_failing", shorthand="probe"),
    ProbeFailing.__doc__ or "",
)
CONDITION.add(
    "service_down",
    Record(ServiceDown, name="service_down", shorthand="service"),
    ServiceDown.__doc__ or "",
)
CONDITION.add(
    "fpm_saturated",
    Record(FpmSaturated, name="fpm_saturated", shorthand="source"),
    FpmSaturated.__doc__ or "",
)
CONDITION.add(
    "fpm_hung", Record(FpmHung, name="fpm_hung", shorthand="source"), FpmHung.__doc__ or ""
)
CONDITION.add(
    "fpm_stuck", Record(FpmStuck, name="fpm_stuck", shorthand="source"), FpmStuck.__doc__ or ""
)
CONDITION.add(
    "fpm_slow", Record(FpmSlow, name="fpm_slow", shorthand="source"), FpmSlow.__doc__ or ""
)
CONDITION.add("host", Record(HostCondition, name="host_condition"), HostCondition.__doc__ or "")
CONDITION.add(
    "dns_mismatch",
    Record(DnsMismatch, name="dns_mismatch", shorthand="source"),
    DnsMismatch.__doc__ or "",
)


def walk_conditions(cond: Condition) -> list[Condition]:
    """Every leaf condition of a tree, in order, negated or not (what signals to keep, which
    names it refers to)."""
    return [leaf for leaf, _ in signed_conditions(cond)]


def signed_conditions(cond: Condition, negated: bool = False) -> list[tuple[Condition, bool]]:
    """Every leaf with whether it is negated (under an odd number of ``not``)."""
    if isinstance(cond, AllOf | AnyOf):
        return [pair for c in cond.conditions for pair in signed_conditions(c, negated)]
    if isinstance(cond, NotOf):
        return signed_conditions(cond.condition, not negated)
    return [(cond, negated)]


def positive_conditions(cond: Condition) -> list[Condition]:
    """The leaves that say something is wrong when they hold (not negated): what corroborates
    a trigger and what verification judges."""
    return [leaf for leaf, negated in signed_conditions(cond) if not negated]


# --- steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verify:
    """How a step is judged to have worked: on what users got after the action (requests made
    after it, the probe when one is named, the service's state), healthy within ``within`` and
    still healthy ``settle`` later. A quiet site (no requests) is judged by the probe and the
    service's state alone. Where the access log's format logs a request's duration
    (``$request_time``, Apache's ``%D``), a request logged after the action that had started
    before it is left out."""

    within: float = opt(
        Duration(min=0.1, max=600), "Deadline for the site to be healthy again.", 10.0
    )
    settle: float = opt(
        Duration(max=300),
        "The site must then stay healthy this long (one good answer right after a restart "
        "proves little).",
        3.0,
    )
    probe: str | None = opt(
        Ref("source", ("probe",), "verify"), "This probe must answer as expected.", None
    )
    trigger_clear: bool = opt(
        Bool(),
        "The playbook's trigger must no longer hold (e.g. the 502 rate is back under).",
        True,
    )

    def check(self) -> list[tuple[str, str]]:
        if self.probe is None and not self.trigger_clear:
            return [("trigger_clear", "a verification needs a probe or trigger_clear: true")]
        return []


VERIFY = Record(Verify, name="verify")
STEP_NAME = Str(what="step name")


@dataclass(frozen=True)
class Step:
    """One action with its arguments, and how to tell it worked."""

    action: str
    args: Any
    verify: Verify | None
    name: str | None = None

    @property
    def changes_host(self) -> bool:
        """Whether the step changes the host (restart, reload, scale, command), which is
        what is verified, budgeted and corroborated; alert and diagnose do not."""
        return ACTIONS[self.action].changes_host


class StepSpec(Spec[Step]):
    """``- restart: php-fpm`` with optional ``verify:`` and ``name:`` beside the action key."""

    name = "step"
    COMMON = ("verify", "name")

    def load(self, node: Node, ctx: Context, key: str) -> Step | _Invalid:
        if not isinstance(node, MappingNode):
            return ctx.error(node, key, "expected a step: a mapping like 'restart: php-fpm'")
        found: list[tuple[Node, Node]] = []
        verify: Verify | None = None
        name: str | None = None
        ok = True
        for knode, vnode in node.value:
            k = str(knode.value)
            if k in ACTIONS:
                found.append((knode, vnode))
            elif k == "verify":
                v = VERIFY.load(vnode, ctx, f"{key}.verify")
                ok = ok and not isinstance(v, _Invalid)
                verify = None if isinstance(v, _Invalid) else v
            elif k == "name":
                n = STEP_NAME.load(vnode, ctx, f"{key}.name")
                name = None if isinstance(n, _Invalid) else n
            else:
                ctx.error(
                    knode,
                    f"{key}.{k}",
                    f"unknown action '{k}'{did_you_mean(k, [*ACTIONS, *self.COMMON])}; "
                    f"actions: {', '.join(ACTIONS)}",
                )
                ok = False
        if not found:
            if ok:  # an unknown key was most likely the action, misspelled: said already
                ctx.error(node, key, f"missing the action: one of {', '.join(ACTIONS)}")
            return INVALID
        if len(found) > 1:
            names = " and ".join(str(k.value) for k, _ in found)
            return ctx.error(
                found[1][0], key, f"a step does one action, this one has {names}: split it in two"
            )
        knode, vnode = found[0]
        action = str(knode.value)
        args = ACTIONS[action].spec.load(vnode, ctx, f"{key}.{action}")
        if isinstance(args, _Invalid) or not ok:
            return INVALID
        if verify is not None and action not in VERIFIABLE:
            return ctx.error(
                node,
                f"{key}.verify",
                f"'{action}' changes nothing on the host, so there is nothing to verify",
            )
        return Step(action, args, verify, name)

    def describe(self) -> str:
        return "step"

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        common = {"verify": VERIFY.json_schema(defs), "name": {"type": "string"}}
        return {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {
                        a: {**d.spec.json_schema(defs), "description": d.help},
                        **common,
                    },
                    "required": [a],
                    "additionalProperties": False,
                }
                for a, d in ACTIONS.items()
            ]
        }


# --- the playbook -----------------------------------------------------------------------------


class Corroborate(enum.StrEnum):
    """What must back a trigger that rests on log lines alone before a changing step runs."""

    PROBE = "probe"  # a probe failed in the trigger's window
    SERVICE = "service"  # the playbook's service was down, failed or not running in it
    ANY = "any"  # either
    NONE = "none"  # log lines alone may act (anyone who can write the logs can trigger it)


@dataclass(frozen=True)
class Limits:
    """How often a playbook may run. Global guards (back-off, breaker) apply as well."""

    cooldown: float = opt(Duration(max=24 * 3600), "Quiet time after a run ends.", 300.0)
    max_runs: int = opt(Int(min=1, max=1000), "At most this many runs ...", 3)
    per: float = opt(Duration(min=60, max=7 * 86400), "... in this sliding window.", 3600.0)
    backoff: bool = opt(
        Bool(),
        "Apply the exponential back-off between repeated incidents (of a playbook with a "
        "changing step: an alert-only or diagnose-only one repeats by cooldown and max_runs).",
        True,
    )


@dataclass(frozen=True)
class OnExhausted:
    """What happens when every step ran and the trigger still holds."""

    notify: tuple[str, ...] = opt(ListOf(Ref("notifier"), single=True), "Notifiers to alert.", ())
    stop: bool = opt(
        Bool(),
        "Open the playbook's breaker: no more runs until `remediator reset PLAYBOOK` "
        "or the breaker's own timeout.",
        True,
    )


@dataclass(frozen=True)
class Playbook:
    """A named remediation: when it triggers, what it does, and how often at most."""

    name: str = opt(
        Str(pattern=NAME_PATTERN, pattern_help=" (letters, digits, _.-)", what="playbook name"),
        "Unique name, used in the action log and by `trigger`/`reset`.",
    )
    when: Condition = opt(CONDITION, "The trigger: a condition, or `all`/`any` of several.")
    steps: tuple[Step, ...] = opt(
        ListOf(StepSpec(), min_len=1), "Steps tried in order until one is verified."
    )
    description: str = opt(Str(nonempty=False), "What this playbook is for.", "")
    enabled: bool = opt(Bool(), "A disabled playbook is checked but never runs.", True)
    priority: int = opt(
        Int(min=0, max=1000),
        "When several playbooks trigger at once, the lowest priority number runs first.",
        100,
    )
    corroborate: str | None = opt(
        Choice([c.value for c in Corroborate], what="corroboration"),
        "When the trigger rests on log lines only (which whoever can write the logs can forge), "
        "a changing step runs only if it is corroborated in the trigger's window: `probe` (a "
        "probe failed), `service` (the playbook's service was down, failed or not running), "
        "`any` (either) or `none` (log lines alone suffice). Unset: `any` when the config has "
        "a probe or the playbook acts on a service (every service can be observed), else "
        "`none` (and `check` warns). Until corroborated the trigger is held back "
        "(`uncorroborated`): no run budget is used, no breaker opens. See the cookbook.",
        None,
    )
    limits: Limits = opt(Record(Limits, name="limits"), "Run limits.", Limits())
    on_exhausted: OnExhausted = opt(
        Record(OnExhausted, name="on_exhausted"), "When no step helped.", OnExhausted()
    )
    flap: Flap | None = opt(
        Record(Flap, name="flap"),
        "Flap detection for this playbook: its remedy resolving incidents whose trigger comes "
        "straight back. Unset: `guards.flap`.",
        None,
    )
    fleet: bool = opt(
        Bool(),
        "With a `fleet:` section, this playbook's changing steps wait for one of the pool's "
        "slots (at most `max_concurrent` hosts act at once); `false`: it acts without one. "
        "A playbook that changes nothing (notify, diagnose) never takes a slot.",
        True,
    )


PLAYBOOK = Record(Playbook, name="playbook")
PLAYBOOK_FILE: Spec[tuple[Playbook, ...]] = ListOf(PLAYBOOK, min_len=1, single=True)
