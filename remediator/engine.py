"""The playbook engine: incidents, guarded steps, verification, escalation, the action log.

A synchronous state machine driven by ``tick(now)``: the daemon calls it after each batch of
events (and on a timer while an incident is open), ``replay`` calls it with log time. Actions
run through an executor (a worker thread live, inline in replay), so log processing never
waits for a restart. One incident at a time on the host.

Life of an incident::

    trigger holds -> guards allow -> incident_opened (evidence) -> for each step:
        service guards -> action_intent (fsynced) -> action -> action_result
        -> verify within the deadline (probe healthy, 5xx rate back under the trigger's)
        -> resolved: incident_closed  |  not: rollback edits, next step
    no step helped -> on_exhausted (notify, open the breaker) -> incident_closed

Nothing happens without its record: if the action log cannot be written, the engine does not
act (fail closed).
"""

from __future__ import annotations

import collections
import enum
import itertools
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from remediator.actionlog import ActionLog, ActionLogError
from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import ACTIONS, NotifyArgs
from remediator.config import Config
from remediator.detect import Reading, Signals, evaluate, holds
from remediator.guards import Guards, Verdict
from remediator.playbook import (
    Condition,
    ErrorCause,
    Playbook,
    ProbeFailing,
    ServiceDown,
    StatusRate,
    StatusSpike,
    Step,
    Verify,
    walk_conditions,
)
from remediator.state import HostLock
from remediator.system import DryRunSystem, System

log = structlog.get_logger(__name__)

DEFAULT_VERIFY = Verify()
MIN_VERIFY_SAMPLE = 3  # requests after an action before a 5xx ratio says anything


class Phase(enum.StrEnum):
    ACTING = "acting"
    VERIFYING = "verifying"


class Executor(Protocol):
    def submit(self, fn: Callable[[], ActionResult]) -> Future[ActionResult]: ...


class InlineExecutor:
    """Runs the action at once (replay, tests): the future is already done."""

    def submit(self, fn: Callable[[], ActionResult]) -> Future[ActionResult]:
        fut: Future[ActionResult] = Future()
        try:
            fut.set_result(fn())
        except Exception as exc:  # an action bug must not kill the engine: it is a failure
            fut.set_exception(exc)
        return fut


@dataclass
class Incident:
    id: str
    playbook: Playbook
    opened: float
    step: int = -1
    phase: Phase = Phase.ACTING
    future: Future[ActionResult] | None = None
    acted_at: float = 0.0
    deadline: float = 0.0
    result: ActionResult | None = None
    started_step: float = 0.0
    outcomes: list[str] = field(default_factory=list)
    dry_run: bool = False  # changes nothing, counts in no budget (`trigger --dry-run`)


def new_incident_id(now_wall: float | None = None) -> str:
    t = time.gmtime(now_wall if now_wall is not None else time.time())
    return time.strftime("%Y%m%dT%H%M%SZ", t) + "-" + os.urandom(3).hex()


class Engine:
    """Turns held triggers into guarded, verified, logged steps."""

    def __init__(
        self,
        config: Config,
        playbooks: list[Playbook],
        signals: Signals,
        guards: Guards,
        actionlog: ActionLog,
        system: System,
        actions: Mapping[str, ActionFn],
        *,
        executor: Executor | None = None,
        snapshot: Callable[[], dict[str, Any]] | None = None,
        wall: Callable[[], float] = time.time,
        request_probe: Callable[[str], None] | None = None,
        lock: HostLock | None = None,
    ) -> None:
        self.config = config
        self.playbooks = sorted(
            (p for p in playbooks if p.enabled), key=lambda p: (p.priority, p.name)
        )
        self.signals = signals
        self.guards = guards
        self.actionlog = actionlog
        self.system = system
        self.actions = actions
        self.executor = executor or InlineExecutor()
        self.snapshot = snapshot
        self.wall = wall
        self.request_probe = request_probe
        self.lock = lock  # one remediation at a time on the host, across processes
        self.incident: Incident | None = None
        # When the last incident ended: log evidence from before it was acted on already.
        self._acted_until: float | None = None
        self._held: dict[str, str] = {}  # playbook -> last guard reason logged (log once)
        self.closed: list[dict[str, Any]] = []  # summaries of closed incidents (replay, status)
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=10)

    @property
    def dry_run(self) -> bool:
        return self.system.dry_run

    def close_interrupted(self) -> None:
        """Give incidents a daemon died in their closing record (found in the guard book)."""
        for playbook, incident in self.guards.interrupted:
            self._record(
                {
                    "event": "incident_closed",
                    "incident": incident,
                    "playbook": playbook,
                    "outcome": "interrupted",
                    "reason": "the daemon stopped during this incident; it counts as failed",
                },
                must=False,
            )
        self.guards.interrupted.clear()

    # --- the clock ---

    def tick(self, now: float) -> None:
        """Advance: start an incident if a trigger holds, or move the open one along."""
        if self.incident is None:
            self._consider(now)
        # Several phases may complete within one tick (inline executor, refused steps).
        for _ in range(64):
            inc = self.incident
            if inc is None or not self._advance(inc, now):
                break

    def _consider(self, now: float) -> None:
        since = self._acted_until
        for pb in self.playbooks:
            if not holds(pb.when, self.signals, now, since=since):
                self._held.pop(pb.name, None)
                continue
            readings = evaluate(pb.when, self.signals, now, since=since)[1]
            verdict = self.guards.may_run(pb, now)
            if verdict.allowed:
                verdict = self._steps_held(pb, now) or verdict
            if not verdict.allowed:
                self._log_held(pb, verdict, readings)
                continue
            self._open(pb, readings, now)
            return

    def _steps_held(self, pb: Playbook, now: float) -> Verdict | None:
        """The guard that would hold back every step of ``pb`` (each changes a service in its
        start-up grace or out of budget), or None when some step could run. Such an incident
        would only record held steps and then count as exhausted."""
        held: Verdict | None = None
        for step in pb.steps:
            svc_name = _service_of(step)
            if svc_name is None or not ACTIONS[step.action].changes_host:
                return None
            svc = self.config.services[svc_name]
            for verdict in (
                self.guards.may_act(svc_name, svc, now),
                self.guards.in_grace(svc_name, svc, now),
            ):
                if not verdict.allowed:
                    held = held or verdict
                    break
            else:
                return None
        return held

    def _log_held(self, pb: Playbook, verdict: Verdict, readings: list[Reading]) -> None:
        key = f"{verdict.guard}"
        if self._held.get(pb.name) == key:
            return
        self._held[pb.name] = key
        self._record(
            {
                "event": "trigger_held_back",
                "playbook": pb.name,
                "outcome": Outcome.HELD,
                "reason": verdict.reason,
                "guard": verdict.guard,
                "readings": [_reading(r) for r in readings],
            },
            must=False,
        )

    # --- opening ---

    def trigger(
        self,
        pb: Playbook,
        now: float,
        *,
        force: bool = False,
        who: str = "",
        dry_run: bool = False,
    ) -> Verdict:
        """Start ``pb`` by hand (``remediator trigger``), through the same guards unless
        ``force`` (which is itself logged). Its trigger need not hold. ``dry_run``: this
        incident only says what it would do."""
        if self.incident is not None:
            return Verdict(False, None, f"incident {self.incident.id} is in progress")
        verdict = self.guards.may_run(pb, now)
        if not verdict.allowed and not force:
            self._log_held(pb, verdict, [])
            return verdict
        readings = evaluate(pb.when, self.signals, now)[1]
        why = f"triggered by hand{f' by {who}' if who else ''}"
        if force and not verdict.allowed:
            why += f", forced past: {verdict.reason}"
        self._open(pb, readings, now, manual=why, dry_run=dry_run)
        return Verdict.ok()

    def _open(
        self,
        pb: Playbook,
        readings: list[Reading],
        now: float,
        *,
        manual: str = "",
        dry_run: bool = False,
    ) -> None:
        if self.lock is not None and not self.lock.acquire():
            self._log_held(pb, Verdict(False, None, "another remediator process is acting"), [])
            return
        inc = Incident(new_incident_id(self.wall()), pb, now, dry_run=dry_run or self.dry_run)
        evidence: dict[str, Any] = {
            "readings": [_reading(r) for r in readings],
            "causes": _causes(pb.when),
            "lines": {
                src: list(self.signals.samples.get(src, ()))
                for src in _sources(pb.when)
                if self.signals.samples.get(src)
            },
            "probes": {
                name: {
                    "ok": st.last_ok,
                    "detail": st.last_detail,
                    "consecutive_failures": st.consecutive_failures,
                }
                for name, st in self.signals.probes.items()
            },
        }
        if self.snapshot is not None:
            try:
                evidence["host"] = self.snapshot()
            except Exception as exc:  # evidence is best effort; acting does not depend on it
                evidence["host"] = {"error": str(exc)}
        summary = "; ".join(_describe(r) for r in readings if r.holds)
        if manual:
            summary = f"{manual}" + (f"; {summary}" if summary else "")
        ok = self._record(
            {
                "event": "incident_opened",
                "incident": inc.id,
                "playbook": pb.name,
                "reason": summary or "trigger held",
                "manual": bool(manual),
                "dry_run": inc.dry_run,
                "evidence": evidence,
            }
        )
        if not ok:
            if self.lock is not None:
                self.lock.release()
            return
        if self._budgeted(inc):
            self.guards.run_started(pb, now, inc.id)
            self.guards.save(now)
        self.incident = inc
        self._held.pop(pb.name, None)
        log.warning("incident_opened", incident=inc.id, playbook=pb.name, reason=summary)
        self._next_step(inc, now)

    # --- steps ---

    def _next_step(self, inc: Incident, now: float) -> None:
        inc.step += 1
        inc.result = None
        inc.future = None
        if inc.step >= len(inc.playbook.steps):
            self._exhausted(inc, now)
            return
        step = inc.playbook.steps[inc.step]
        svc_name = _service_of(step)
        if svc_name is not None and ACTIONS[step.action].changes_host:
            svc = self.config.services[svc_name]
            for verdict in (
                self.guards.may_act(svc_name, svc, now),
                self.guards.in_grace(svc_name, svc, now),
            ):
                if not verdict.allowed:
                    self._record(
                        self._step_record(inc, step, "action_held", Outcome.HELD, verdict.reason)
                        | {"guard": verdict.guard},
                        must=False,
                    )
                    inc.outcomes.append(Outcome.HELD)
                    self._next_step(inc, now)
                    return
        intent = self._step_record(inc, step, "action_intent", None, _step_reason(step))
        if not self._record(intent):
            self._abort(inc, now, "the action log cannot be written: not acting")
            return
        if svc_name is not None and ACTIONS[step.action].changes_host and self._budgeted(inc):
            svc = self.config.services[svc_name]
            self.guards.action_taken(svc_name, svc, now, restarted=step.action == "restart")
            self.guards.save(now)
        fn = self.actions.get(step.action)
        ctx = self._context(inc)
        inc.phase = Phase.ACTING
        inc.started_step = now
        inc.future = self.executor.submit(
            (lambda: fn(step.args, ctx))
            if fn is not None
            else (lambda: ActionResult(Outcome.FAILED, f"action '{step.action}' is not available"))
        )

    def _budgeted(self, inc: Incident) -> bool:
        """Whether ``inc`` counts in the guard book: a dry daemon keeps a book of its own, a
        dry incident in a real daemon counts in none."""
        return self.dry_run or not inc.dry_run

    def _context(self, inc: Incident) -> ActionContext:
        return ActionContext(
            system=DryRunSystem() if inc.dry_run and not self.dry_run else self.system,
            services=self.config.services,
            notifiers=self.config.notifiers,
            playbook=inc.playbook.name,
            incident=inc.id,
        )

    def _advance(self, inc: Incident, now: float) -> bool:
        """Move the incident along; True when something changed (call again)."""
        step = inc.playbook.steps[inc.step]
        if inc.phase is Phase.ACTING:
            fut = inc.future
            if fut is None or not fut.done():
                return False
            try:
                result = fut.result()
            except Exception as exc:  # a bug in an action is a failed step, never a crash
                log.exception("action_crashed", action=step.action)
                result = ActionResult(
                    Outcome.FAILED, f"action crashed: {type(exc).__name__}: {exc}"
                )
            inc.result = result
            duration = (now - inc.started_step) if not inc.dry_run else 0.0
            rec = self._step_record(inc, step, "action_result", result.outcome, result.reason)
            rec |= {
                "target": result.target or rec["target"],
                "details": result.details,
                "duration_ms": round(duration * 1000, 1),
            }
            self._record(rec, must=False)
            inc.outcomes.append(result.outcome)
            if result.restarted and result.target in self.config.services and self._budgeted(inc):
                self.guards.service_started(result.target, now)  # the grace runs from here
                self.guards.save(now)
            verifies = ACTIONS[step.action].changes_host and result.outcome in (
                Outcome.OK,
                Outcome.WOULD_RUN,
            )
            if not verifies:
                self._next_step(inc, now)
                return True
            v = step.verify or DEFAULT_VERIFY
            inc.phase = Phase.VERIFYING
            inc.acted_at = now
            inc.deadline = now + v.within
            if v.probe and self.request_probe is not None:
                self.request_probe(v.probe)
            return True
        # verifying
        v = step.verify or DEFAULT_VERIFY
        verdict = self._verified(inc.playbook, v, inc.acted_at, now)
        if verdict is True:
            self._record(
                self._step_record(
                    inc,
                    step,
                    "verify_passed",
                    Outcome.OK,
                    f"recovered {now - inc.acted_at:.2f}s after the action",
                )
                | {"duration_ms": round((now - inc.acted_at) * 1000, 1)},
                must=False,
            )
            self._close(inc, now, "resolved", success=True)
            return True
        if now < inc.deadline:
            if v.probe and self.request_probe is not None:
                self.request_probe(v.probe)
            return False
        reason = (
            "no evidence of recovery (no requests, no probe result) "
            if verdict is None
            else "still failing "
        )
        self._record(
            self._step_record(
                inc, step, "verify_failed", Outcome.FAILED, reason + f"within {v.within:g}s"
            ),
            must=False,
        )
        if inc.result is not None and inc.result.rollback is not None:
            self._rollback(inc, step, inc.result.rollback)
        self._next_step(inc, now)
        return True

    def _rollback(self, inc: Incident, step: Step, undo: Callable[[], ActionResult]) -> None:
        if not self._record(
            self._step_record(
                inc, step, "rollback_intent", None, "the edit did not help: putting it back"
            )
        ):
            return
        try:
            undone = undo()
        except Exception as exc:
            undone = ActionResult(Outcome.FAILED, f"rollback crashed: {exc}")
        self._record(
            self._step_record(inc, step, "rollback_result", undone.outcome, undone.reason)
            | {"details": undone.details},
            must=False,
        )

    # --- verification ---

    def _verified(self, pb: Playbook, v: Verify, since: float, now: float) -> bool | None:
        """True: recovered; False: still failing; None: no evidence yet."""
        verdicts: list[bool | None] = []
        if v.probe is not None:
            st = self.signals.probes.get(v.probe)
            if st is None or st.last_at is None or st.last_at < since:
                verdicts.append(None)
            else:
                verdicts.append(bool(st.last_ok))
        if v.trigger_clear:
            verdicts.append(self._symptoms_clear(pb.when, since, now))
        if any(x is False for x in verdicts):
            return False
        if verdicts and all(x is True for x in verdicts):
            return True
        return None

    def _symptoms_clear(self, when: Condition, since: float, now: float) -> bool | None:
        """Whether what users saw is gone since ``since``: every 5xx-rate and probe leaf of the
        trigger back under its threshold (cause leaves only when there is no symptom leaf)."""
        leaves = walk_conditions(when)
        symptoms: list[Condition] = [
            c
            for c in leaves
            if isinstance(c, StatusRate | StatusSpike | ProbeFailing | ServiceDown)
        ]
        judged = symptoms or [c for c in leaves if isinstance(c, ErrorCause)]
        span = max(now - since, 1e-6)
        out: list[bool | None] = []
        for c in judged:
            if isinstance(c, StatusRate | StatusSpike):
                win = self.signals.statuses.get(c.source)
                matched, total = win.count(now, span, c.status) if win else (0, 0)
                if total < MIN_VERIFY_SAMPLE:
                    out.append(None)
                    continue
                limit = c.ratio if isinstance(c, StatusRate) and c.ratio is not None else 0.05
                out.append(matched / total < limit)
            elif isinstance(c, ProbeFailing):
                st = self.signals.probes.get(c.probe)
                fresh = st is not None and st.last_at is not None and st.last_at >= since
                out.append(bool(st.last_ok) if fresh and st is not None else None)
            elif isinstance(c, ServiceDown):
                sw = self.signals.services.get(c.service)
                fresh = sw is not None and sw.last_at is not None and sw.last_at >= since
                out.append((sw.down_since is None) if fresh and sw is not None else None)
            elif isinstance(c, ErrorCause):
                win = self.signals.causes.get(c.source)
                n = win.count(now, span, frozenset(c.cause))[0] if win else 0
                out.append(False if n >= c.at_least else None)
        if any(x is False for x in out):
            return False
        if out and all(x is True for x in out):
            return True
        return None

    # --- closing ---

    def _exhausted(self, inc: Incident, now: float) -> None:
        if inc.outcomes and all(o == Outcome.HELD for o in inc.outcomes):
            # Nothing was tried (a guard held back every step), so nothing failed: no alert,
            # no breaker, no failed run; the trigger is judged again later.
            self._close(inc, now, "held", success=None)
            return
        ex = inc.playbook.on_exhausted
        for name in ex.notify:
            fn = self.actions.get("notify")
            args = NotifyArgs(notifier=name, message=f"{inc.playbook.name}: no step helped")
            rec = {
                "event": "notify",
                "incident": inc.id,
                "playbook": inc.playbook.name,
                "action": "notify",
                "target": name,
                "reason": "steps exhausted",
                "dry_run": inc.dry_run,
            }
            if fn is None:
                self._record(rec | {"outcome": Outcome.FAILED}, must=False)
                continue
            res = fn(args, self._context(inc))
            self._record(rec | {"outcome": res.outcome, "details": res.details}, must=False)
        if ex.stop:
            if self._budgeted(inc):
                self.guards.open_breaker(inc.playbook.name, now, "steps exhausted without recovery")
            self._record(
                {
                    "event": "breaker_opened",
                    "incident": inc.id,
                    "playbook": inc.playbook.name,
                    "dry_run": inc.dry_run,
                    "reason": f"steps exhausted; `remediator reset {inc.playbook.name}` closes it",
                },
                must=False,
            )
        self._close(inc, now, "exhausted", success=False)

    def _abort(self, inc: Incident, now: float, reason: str) -> None:
        log.critical("incident_aborted", incident=inc.id, reason=reason)
        self._close(inc, now, "aborted", success=False)

    def _close(self, inc: Incident, now: float, outcome: str, *, success: bool | None) -> None:
        """``success`` None: nothing was tried; the run counts neither way."""
        opened_breaker = False
        if self._budgeted(inc):
            opened_breaker = self.guards.run_finished(inc.playbook, now, success=success)
            if success is not None:
                self._acted_until = now
            self.guards.save(now)
        rec = {
            "event": "incident_closed",
            "incident": inc.id,
            "playbook": inc.playbook.name,
            "dry_run": inc.dry_run,
            "outcome": outcome,
            "reason": f"{outcome} after {len(inc.outcomes)} step(s)",
            "duration_ms": round((now - inc.opened) * 1000, 1),
        }
        self._record(rec, must=False)
        if opened_breaker:
            self._record(
                {
                    "event": "breaker_opened",
                    "incident": inc.id,
                    "playbook": inc.playbook.name,
                    "reason": "remediation kept failing",
                },
                must=False,
            )
        log.warning("incident_closed", incident=inc.id, playbook=inc.playbook.name, outcome=outcome)
        if self.lock is not None:
            self.lock.release()  # one remediation at a time: this one is over
        self.closed.append(
            {
                "incident": inc.id,
                "playbook": inc.playbook.name,
                "outcome": outcome,
                "opened": inc.opened,
                "closed": now,
            }
        )
        self.incident = None

    # --- records ---

    def _step_record(
        self, inc: Incident, step: Step, event: str, outcome: str | None, reason: str
    ) -> dict[str, Any]:
        return {
            "event": event,
            "incident": inc.id,
            "playbook": inc.playbook.name,
            "step": inc.step + 1,
            "action": step.action,
            "target": _target_of(step),
            "dry_run": inc.dry_run,
            "outcome": outcome,
            "reason": reason,
        }

    def _record(self, rec: dict[str, Any], *, must: bool = True) -> bool:
        rec.setdefault("dry_run", self.dry_run)
        try:
            written = self.actionlog.write(rec)
            self.recent.append({k: v for k, v in written.items() if k != "evidence"})
        except ActionLogError:
            if must:
                return False
        return True


# --- helpers ---------------------------------------------------------------------------------


def _service_of(step: Step) -> str | None:
    return getattr(step.args, "service", None)


def _target_of(step: Step) -> str | None:
    for attr in ("service", "notifier"):
        value = getattr(step.args, attr, None)
        if value:
            return str(value)
    return None


def _step_reason(step: Step) -> str:
    return step.name or f"{step.action} {_target_of(step) or ''}".strip()


def _reading(r: Reading) -> dict[str, Any]:
    return {"condition": r.condition, "holds": r.holds, **r.detail}


def _describe(r: Reading) -> str:
    d = r.detail
    if r.condition == "status_rate":
        return (
            f"{d['count']} x {d['statuses']} of {d['total']} requests "
            f"({d['ratio'] * 100:.1f}%) in {d['window_s']:g}s on {d['source']}"
        )
    if r.condition == "status_spike":
        return f"{d['statuses']} at {d['rate_per_s']}/s vs baseline {d['baseline_per_s']}/s"
    if r.condition == "error_cause":
        return f"{d['count']} x {'/'.join(d['causes'])} in {d['window_s']:g}s on {d['source']}"
    if r.condition == "service_down":
        return f"{d['service']} down for {d['down_for_s']:g}s ({d['detail']})"
    if r.condition == "probe_failing":
        return f"probe {d['probe']} failed {d['consecutive_failures']} times ({d['last']})"
    return f"{r.condition}: {d}"


def _sources(when: Condition) -> list[str]:
    out = []
    for c in walk_conditions(when):
        src = getattr(c, "source", None)
        if src and src not in out:
            out.append(src)
    return out


def _causes(when: Condition) -> list[str]:
    return list(
        dict.fromkeys(
            itertools.chain.from_iterable(
                c.cause for c in walk_conditions(when) if isinstance(c, ErrorCause)
            )
        )
    )
