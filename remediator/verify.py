"""Verification: did a step help? Judged on what users got *after* the action.

The evidence, each only from after the action (or after the last time the site was seen
failing since):

- the probe the step names (live only: replay has no probes, and judges on the log's future);
- requests users made: the 5xx share of the trigger's status conditions (at least
  ``MIN_SAMPLE`` requests, or it says nothing: a quiet site is judged by the rest). Where the
  format logs a request's duration, a request logged after the action that had started
  before it (a slow request the old workers timed out) is left out;
- the service's own state, where the trigger watches it (``service_down``);
- error-log causes of the trigger, which can only say "still failing";
- PHP-FPM's own status, where the trigger reads it (``fpm_saturated``, ``fpm_hung``,
  ``fpm_stuck``, ``fpm_slow``): the newest read after the action (live only).

Any evidence of failure is a failure; otherwise any evidence of health is health; otherwise
nothing is known yet. A step passes when the site is healthy before the deadline and still
healthy ``settle`` seconds later. The same code judges live, in dry run and in replay.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from remediator import fpmdetect
from remediator.detect import Signals
from remediator.events import JudgedOn
from remediator.playbook import (
    Condition,
    DnsMismatch,
    ErrorCause,
    FpmHung,
    FpmSaturated,
    FpmSlow,
    FpmStuck,
    ProbeFailing,
    ServiceDown,
    StatusRate,
    StatusSpike,
    Verify,
    positive_conditions,
)

MIN_SAMPLE = 3  # requests after an action before a 5xx share says anything
DEFAULT_RATIO = 0.05  # a status condition without a ratio of its own


class Health(enum.Enum):
    HEALTHY = "healthy"
    FAILING = "failing"
    UNKNOWN = "unknown"


class Verdict(enum.Enum):
    PENDING = "pending"  # keep watching
    PASSED = "passed"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the deadline passed with no evidence either way (replay only)


@dataclass(frozen=True)
class Judgement:
    health: Health
    judged_on: tuple[JudgedOn, ...]
    detail: str


@dataclass
class Verification:
    """One step's verification in progress."""

    verify: Verify
    acted_at: float
    deadline: float
    clean_from: float  # evidence counts from here: the action, or the last failure seen
    healthy_since: float | None = None
    last: Judgement | None = None
    failing: Judgement | None = None  # the last failing judgement
    judged_on: list[JudgedOn] = field(default_factory=list)


class Verifier:
    """Judges steps of playbooks over ``signals``; ``probes`` False in replay."""

    def __init__(self, signals: Signals, *, probes: bool = True) -> None:
        self.signals = signals
        self.probes = probes

    def start(self, v: Verify, now: float) -> Verification:
        self.signals.verifying(now)
        return Verification(v, now, now + v.within, now)

    def end(self) -> None:
        """The verification is over (judged, or its incident ended): stop the extra count."""
        self.signals.verifying(None)

    def step(self, ver: Verification, when: Condition, now: float) -> Verdict:
        """Judge once more at ``now``."""
        j = self.judge(ver.verify, when, ver.clean_from, now)
        ver.last = j
        for on in j.judged_on:
            if on not in ver.judged_on:
                ver.judged_on.append(on)
        if j.health is Health.FAILING:
            ver.failing = j
            ver.healthy_since = None
            ver.clean_from = now
        elif j.health is Health.HEALTHY:
            if ver.healthy_since is None and now <= ver.deadline:
                ver.healthy_since = now
            if ver.healthy_since is not None and now - ver.healthy_since >= ver.verify.settle:
                self.end()
                return Verdict.PASSED
        if ver.healthy_since is not None or now < ver.deadline:
            return Verdict.PENDING
        self.end()
        if ver.failing is None and not self.probes:
            return Verdict.UNKNOWN
        return Verdict.FAILED

    def said(
        self, ver: Verification, verdict: Verdict, now: float, *, dry_run: bool
    ) -> tuple[str, dict[str, Any]]:
        """What the record of ``verdict`` says: why, in words, and how it was judged."""
        v = ver.verify
        on_logs = v.probe is not None and not self.probes  # replay: the log's own future
        judged_on = JudgedOn.LOGS if on_logs else "+".join(ver.judged_on) or None
        extra = {"judged_on": judged_on, "duration_ms": round((now - ver.acted_at) * 1000, 1)}
        last = ver.last.detail if ver.last is not None else "no evidence"
        by_itself = "dry run, nothing was done: " if dry_run else ""
        if verdict is Verdict.PASSED:
            since = ver.healthy_since if ver.healthy_since is not None else now
            held = f", still healthy {now - since:.2f}s later" if now > since else ""
            after = since - ver.acted_at
            return f"{by_itself}recovered {after:.2f}s after the action{held} ({last})", extra
        if verdict is Verdict.UNKNOWN:
            return f"no evidence either way within {v.within:g}s ({last})", extra
        if ver.failing is not None:
            why = f"still failing within {v.within:g}s ({ver.failing.detail})"
        else:
            why = f"no evidence of recovery within {v.within:g}s ({last})"
        return by_itself + why, extra

    def judge(self, v: Verify, when: Condition, since: float, now: float) -> Judgement:
        """The site's health from the evidence that came after ``since``."""
        parts: list[tuple[Health, JudgedOn, str]] = []
        probe_named = v.probe is not None and self.probes
        if v.probe is not None and self.probes:
            parts.append(self._probe(v.probe, since))
        if v.trigger_clear or (v.probe is not None and not self.probes):
            parts += self._symptoms(when, since, now)
        failing = [p for p in parts if p[0] is Health.FAILING]
        healthy = [p for p in parts if p[0] is Health.HEALTHY]
        if failing:
            return _judgement(Health.FAILING, failing)
        if probe_named and parts[0][0] is Health.UNKNOWN:
            return _judgement(Health.UNKNOWN, parts[:1])  # the named probe must answer
        if healthy:
            return _judgement(Health.HEALTHY, healthy)
        return _judgement(Health.UNKNOWN, parts)

    # --- evidence ---

    def _probe(self, name: str, since: float) -> tuple[Health, JudgedOn, str]:
        st = self.signals.probes.get(name)
        if st is None or st.last_at is None or st.last_at < since:
            return Health.UNKNOWN, JudgedOn.PROBE, f"probe {name}: no answer yet"
        health = Health.HEALTHY if st.last_ok else Health.FAILING
        return health, JudgedOn.PROBE, f"probe {name}: {st.last_detail or st.last_ok}"

    def _symptoms(
        self, when: Condition, since: float, now: float
    ) -> list[tuple[Health, JudgedOn, str]]:
        leaves = positive_conditions(when)  # a negated leaf says what works: not a symptom
        out: list[tuple[Health, JudgedOn, str]] = []
        span = max(now - since, 1e-6)
        for c in leaves:
            if isinstance(c, StatusRate | StatusSpike):
                win = self.signals.statuses.get(c.source)
                matched, total = win.count(now, span, c.status) if win else (0, 0)
                early = self.signals.early.get(c.source)
                before = early.count(now, span, c.status) if early else (0, 0)
                matched, total = matched - before[0], total - before[1]
                what = f"{matched} of {total} requests on {c.source} were {_statuses(c)}"
                if before[1]:
                    what += f" ({before[1]} that started before the action left out)"
                if total < MIN_SAMPLE:
                    out.append((Health.UNKNOWN, JudgedOn.REQUESTS, what))
                    continue
                limit = c.ratio if isinstance(c, StatusRate) and c.ratio is not None else None
                limit = DEFAULT_RATIO if limit is None else limit
                ok = matched / total < limit
                # a count forged 200s cannot dilute: as many failures as trip the trigger
                alone = c.count_alone if isinstance(c, StatusRate) else None
                if alone is not None and matched >= alone:
                    ok = False
                out.append((Health.HEALTHY if ok else Health.FAILING, JudgedOn.REQUESTS, what))
            elif isinstance(c, ProbeFailing):
                if self.probes:
                    out.append(self._probe(c.probe, since))
            elif isinstance(c, ServiceDown):
                sw = self.signals.services.get(c.service)
                if sw is None or sw.last_at is None or sw.last_at < since:
                    out.append((Health.UNKNOWN, JudgedOn.SERVICE, f"{c.service}: not seen yet"))
                elif sw.down_since is None:
                    out.append((Health.HEALTHY, JudgedOn.SERVICE, f"{c.service} is up"))
                else:
                    out.append((Health.FAILING, JudgedOn.SERVICE, f"{c.service}: {sw.detail}"))
            elif isinstance(c, DnsMismatch):
                dw = self.signals.dns.get(c.source)
                if dw is None or dw.last_at is None or dw.last_at < since:
                    out.append((Health.UNKNOWN, JudgedOn.DNS, f"{c.source}: no lookup yet"))
                elif dw.mismatch_since is None:
                    out.append((Health.HEALTHY, JudgedOn.DNS, f"{c.source}: {dw.detail}"))
                else:
                    out.append((Health.FAILING, JudgedOn.DNS, f"{c.source}: {dw.detail}"))
            elif isinstance(c, FpmSaturated | FpmHung | FpmStuck | FpmSlow):
                out.append(self._pool(c, since))
            elif isinstance(c, ErrorCause):
                win = self.signals.causes.get(c.source)
                n = win.count(now, span, frozenset(c.cause))[0] if win else 0
                if n >= c.at_least:
                    what = f"{n} x {'/'.join(c.cause)} on {c.source}"
                    out.append((Health.FAILING, JudgedOn.ERRORS, what))
        return out

    def _pool(
        self, c: FpmSaturated | FpmHung | FpmStuck | FpmSlow, since: float
    ) -> tuple[Health, JudgedOn, str]:
        st = self.signals.fpm.get(c.source)
        shows = fpmdetect.after(c, st, since)
        what = type(c).__name__.removeprefix("Fpm").lower()
        if shows is None:
            last = st.last_detail if st and st.last_at is not None else "no read yet"
            return Health.UNKNOWN, JudgedOn.POOL, f"pool status {c.source}: {last}"
        detail = st.last_detail if st else ""
        if shows:
            return Health.FAILING, JudgedOn.POOL, f"pool {c.source} still {what} ({detail})"
        return Health.HEALTHY, JudgedOn.POOL, f"pool {c.source} not {what} ({detail})"


def _statuses(c: StatusRate | StatusSpike) -> str:
    codes = sorted(c.status)
    if len(codes) > 3:
        return f"{codes[0]}-{codes[-1]}"
    return "/".join(str(s) for s in codes)


def _judgement(health: Health, parts: list[tuple[Health, JudgedOn, str]]) -> Judgement:
    on = tuple(dict.fromkeys(p[1] for p in parts))
    return Judgement(health, on, "; ".join(p[2] for p in parts) or "no evidence")
