"""The playbook engine: incidents, guarded steps, verification, escalation, the action log.

A synchronous state machine driven by ``tick(now)``: the daemon calls it after each batch of
events (and on a timer while an incident is open), ``replay`` calls it with log time. Whatever
may take long (actions, rollbacks, the notifications of ``on_exhausted``) runs through an
executor (a worker thread live, inline in replay and tests), so the main loop never waits for
a restart, a config test or a webhook. One incident at a time on the host.

Life of an incident::

    trigger holds -> guards allow -> incident_opened (evidence) -> for each step:
        service guards -> action_intent (fsynced) -> action -> action_result
        -> verify (remediator.verify): healthy within the deadline, still healthy a settle later
        -> resolved: incident_closed  |  not: rollback edits, next step
    no step helped -> on_exhausted (notify, open the breaker) -> incident_closed
    a playbook that changes nothing (alert, diagnose) -> completed when its steps ran

Nothing happens without its record: if the action log cannot be written, the engine does not
act (fail closed).

The engine orchestrates; each part is its own module: which playbook may open
(:mod:`.opening`, with :mod:`.corroborate` and the fleet's :mod:`.fleet.seat`), what it opens
with (:mod:`.evidence`), what holds it back (:mod:`.holdback`), the incident and its words
(:mod:`.incident`), whether a step helped (:mod:`.verify`), and every record (:mod:`.records`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import structlog

from remediator import corroborate, evidence, resolving
from remediator.actionlog import ActionLog, rfc3339
from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import NotifyArgs
from remediator.config import Config
from remediator.detect import Reading, Signals, evaluate
from remediator.events import Event, IncidentOutcome
from remediator.executor import Executor, InlineExecutor
from remediator.flap import Flapping, seconds
from remediator.fleet import hook
from remediator.fleet.seat import Seat
from remediator.guards import Guard, Guards, Verdict
from remediator.holdback import HoldBacks
from remediator.incident import (
    Incident,
    Phase,
    closing_reason,
    could_not_act,
    describe,
    done_line,
    new_incident_id,
    service_of,
    step_reason,
    step_record,
    target_of,
    tripped,
)
from remediator.opening import Openings
from remediator.pages import page_path
from remediator.playbook import Playbook, Verify
from remediator.records import Records
from remediator.state import HostLock
from remediator.system import DryRunSystem, System
from remediator.verify import Verdict as Checked
from remediator.verify import Verifier

log = structlog.get_logger(__name__)

DEFAULT_VERIFY = Verify()


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
        verifier: Verifier | None = None,
        observed: bool = True,
    ) -> None:
        self.config = config
        self.playbooks = sorted(
            (p for p in playbooks if p.enabled), key=lambda p: (p.priority, p.name)
        )
        self.signals = signals
        self.guards = guards
        self.actionlog = actionlog
        self.records = Records(actionlog, dry_run=system.dry_run)  # `status` shows its recent
        self.holds = HoldBacks(self.records, signals)
        self.seat = Seat(config, self.records, dry_run=system.dry_run)  # the fleet's slots
        self.system = system
        self.actions = actions
        self.executor: Executor = executor or InlineExecutor()
        self.snapshot = snapshot
        self.wall = wall
        self.request_probe = request_probe
        self.request_service: Callable[[str], None] | None = None  # poll a service now
        self.lock = lock  # one remediation at a time on the host, across processes
        self.verifier = verifier or Verifier(signals)
        # Log lines alone never change the host. ``observed`` False (replay): no probe or
        # service state exists, corroboration is assumed and said so.
        self.corroboration = corroborate.Corroboration(
            config, self.playbooks, signals, observed=observed
        )
        self.incident: Incident | None = None
        # When the last incident ended: log evidence from before it was acted on already.
        self._acted_until: float | None = None
        self.closed: list[dict[str, Any]] = []  # summaries of closed incidents (replay, status)
        self.report_dir: Path | None = None  # the daemon writes incident pages there
        self.resolutions = resolving.Resolutions()  # alerts resolved as incidents closed
        self.openings = Openings(
            config,
            self.playbooks,
            signals,
            guards,
            self.corroboration,
            self.holds,
            self.seat,
            self._ask,
        )

    @property
    def dry_run(self) -> bool:
        return self.system.dry_run

    @property
    def acted_until(self) -> float | None:
        """When the last incident was acted on: triggers count only evidence after it."""
        return self._acted_until

    def close_interrupted(self) -> None:
        """Give incidents a daemon died in their closing record (found in the guard book)."""
        for playbook, incident in self.guards.interrupted:
            self.records.write(
                {
                    "event": Event.INCIDENT_CLOSED,
                    "incident": incident,
                    "playbook": playbook,
                    "outcome": IncidentOutcome.INTERRUPTED,
                    "reason": "the daemon stopped during this incident; it counts as failed",
                },
                must=False,
            )
        self.guards.interrupted.clear()

    # --- the clock ---

    def tick(self, now: float) -> None:
        """Advance: start an incident if a trigger holds, or move the open one along."""
        if self.resolutions:
            self.record_resolved()
        inc = self.incident
        if inc is not None:
            self.seat.check_lost(inc)
        if inc is None:
            self._consider(now)
        elif self._gives_way(inc):
            self._consider(now, supersede=inc)
        # Several phases may complete within one tick (inline executor, refused steps).
        for _ in range(64):
            inc = self.incident
            if inc is None or not self._advance(inc, now):
                break

    def _gives_way(self, inc: Incident) -> bool:
        """Whether ``inc`` is an operator's dry run inside a daemon that acts for real, waiting
        on its verification: it must not keep a real remediation waiting."""
        return not inc.accounted and not self.dry_run and inc.phase is Phase.VERIFYING

    def _consider(self, now: float, *, supersede: Incident | None = None) -> None:
        """Open an incident for the first playbook that may run (``supersede`` gives way)."""
        start, in_line = self.openings.choose(now, self._acted_until)
        if start is not None:
            if supersede is not None:
                self._close(supersede, now, IncidentOutcome.SUPERSEDED, success=None)
            self._open(start.pb, start.readings, now, backed=start.backed, slot=start.slot)
        if not in_line and self.incident is None:
            self.seat.leave_line(now)  # no trigger wants the fleet's slot any more

    def _ask(self, need: corroborate.Need) -> bool:
        """Ask every probe and service that could corroborate now (the live watcher answers);
        False if none can be asked (replay, tests)."""
        asked = False
        for ask, names in (
            (self.request_probe, need.probes),
            (self.request_service, need.services),
        ):
            if ask is not None:
                for name in names:
                    ask(name)
                    asked = True
        return asked

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
        incident only says what it would do, and leaves the guard book as it was."""
        if self.incident is not None:
            return Verdict(False, None, f"incident {self.incident.id} is in progress")
        verdict = self.guards.may_run(pb, now)
        slot: dict[str, Any] | None = None
        if verdict.allowed:
            verdict, slot = self.seat.ask(pb, dry_run=dry_run)
            if verdict is hook.ASKING:
                if not force:
                    self.seat.wished_by_hand(now)
                    return Verdict(False, Guard.FLEET, "asking the fleet for a slot: try again")
                verdict = Verdict(False, Guard.FLEET, "the fleet has not answered yet")
        if not verdict.allowed and not force:
            self.holds.record(pb, verdict, [])
            return verdict
        readings = evaluate(pb.when, self.signals, now)[1]
        why = f"triggered by hand{f' by {who}' if who else ''}"
        if force and not verdict.allowed:
            why += f", forced past: {verdict.reason}"
        backed = corroborate.MANUAL if self.corroboration.needs.get(pb.name) else None
        opened = self._open(
            pb, readings, now, manual=why, dry_run=dry_run, backed=backed, slot=slot
        )
        if not opened:
            return Verdict(False, None, "another remediator process is acting")
        return Verdict.ok()

    def _open(
        self,
        pb: Playbook,
        readings: list[Reading],
        now: float,
        *,
        manual: str = "",
        dry_run: bool = False,
        backed: corroborate.Judgement | None = None,
        slot: dict[str, Any] | None = None,
    ) -> bool:
        """Open an incident for ``pb``; False when it could not be (lock, action log).
        ``backed``: what corroborated the trigger (recorded when the playbook needs it)."""
        if self.lock is not None and not self.lock.acquire():
            self.holds.record(pb, Verdict(False, None, "another remediator process is acting"), [])
            return False
        wall = self.wall()
        inc = Incident(new_incident_id(wall), pb, now, self.dry_run or dry_run)
        inc.opened_at = rfc3339(wall)
        # A dry-run incident in a daemon that acts for real changes nothing: it must not
        # use the real budget (cooldowns, back-off, breakers hold back real remediation).
        inc.accounted = self.dry_run or not dry_run
        summary = "; ".join(describe(r) for r in readings if tripped(r))
        if manual:
            summary = f"{manual}" + (f"; {summary}" if summary else "")
        inc.reason, inc.manual = summary or "trigger held", manual
        if not manual and inc.accounted:  # by hand, an operator asks for the playbook as it is
            inc.flapping = self.guards.flapping(pb, pb.flap or self.config.guards.flap, now)
        flap_why = ""
        if inc.flapping is not None:
            start = inc.flapping.start
            flap_why = inc.flapping.reason(
                step_reason(pb.steps[start]) if start < len(pb.steps) else ""
            )
            inc.reason += f"; {flap_why}"  # notifications say so too
        rec: dict[str, Any] = {
            "event": Event.INCIDENT_OPENED,
            "incident": inc.id,
            "playbook": pb.name,
            "dry_run": inc.dry_run,
            "reason": inc.reason,
            "manual": bool(manual),
            "evidence": evidence.gather(pb, readings, self.signals, self.snapshot, now),
        }
        if not manual:
            rec["detection_ms"] = round((now - self.openings.detected(pb, now)) * 1000, 1)
        if inc.flapping is not None:
            rec["flapping"] = inc.flapping.record()
        need = self.corroboration.needs.get(pb.name)
        if need is not None and backed is not None:
            rec["corroboration"] = backed.record(need)
        if slot is not None:
            rec["fleet"] = slot
        ok = self.records.write(rec)
        if not ok:
            if self.lock is not None:
                self.lock.release()
            return False
        if slot is not None:
            self.seat.taken(inc, slot)
        if inc.accounted:
            self.guards.run_started(pb, now, inc.id)
            self.guards.save(now)
        self.incident = inc
        self.holds.forget(pb.name)
        log.warning("incident_opened", incident=inc.id, playbook=pb.name, reason=inc.reason)
        if inc.flapping is not None:
            log.warning("playbook_flapping", incident=inc.id, playbook=pb.name, reason=flap_why)
            self._skip_flapping(inc, inc.flapping)
        self._next_step(inc, now)
        return True

    def _skip_flapping(self, inc: Incident, flapping: Flapping) -> None:
        """Record the steps a flapping playbook does not repeat; the incident goes on from
        the first one after them (or, none left, to ``on_exhausted``)."""
        why = (
            f"flapping: it kept resolving incidents whose trigger returned within "
            f"{seconds(max(r.after for r in flapping.returns))}: not repeating it"
        )
        for _ in range(flapping.start):
            inc.step += 1
            rec = step_record(inc, Event.ACTION_HELD, Outcome.SKIPPED, why)
            self.records.write(rec | {"guard": Guard.FLAPPING}, must=False)
            inc.outcomes.append(Outcome.SKIPPED)
            inc.done.append(f"{step_reason(inc.current)} (skipped: flapping)")

    # --- steps ---

    def _next_step(self, inc: Incident, now: float) -> None:
        inc.step += 1
        inc.result = None
        inc.future = None
        inc.verification = None
        if inc.step >= len(inc.playbook.steps):
            self._exhausted(inc, now)
            return
        step = inc.current
        held = self.guards.step_held(step, self.config.services, now)
        if held is None and inc.slot_lost and step.changes_host:
            held = self.seat.again(inc)
        if held is not None:
            rec = step_record(inc, Event.ACTION_HELD, Outcome.HELD, held.reason)
            self.records.write(rec | {"guard": held.guard}, must=False)
            inc.outcomes.append(Outcome.HELD)
            inc.done.append(f"{step_reason(step)} (held: {held.reason})")
            self._next_step(inc, now)
            return
        intent = step_record(inc, Event.ACTION_INTENT, None, step_reason(step))
        if not self.records.write(intent):
            self._abort(inc, now, "the action log cannot be written: not acting")
            return
        svc_name = service_of(step)
        if svc_name is not None and step.changes_host and inc.accounted:
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

    def _context(self, inc: Incident, outcome: str = "") -> ActionContext:
        return ActionContext(
            system=DryRunSystem() if inc.dry_run and not self.dry_run else self.system,
            services=self.config.services,
            notifiers=self.config.notifiers,
            playbook=inc.playbook.name,
            incident=inc.id,
            summary=inc.summary(outcome),
            opened_at=inc.opened_at,
            report=str(page_path(self.report_dir, inc.id)) if self.report_dir else "",
        )

    def _advance(self, inc: Incident, now: float) -> bool:
        """Move the incident along; True when something changed (call again)."""
        if inc.phase is Phase.VERIFYING:
            return self._verifying(inc, now)
        fut = inc.future
        if fut is None or not fut.done():
            return False
        if inc.phase is Phase.ACTING:
            self._acted(inc, now, _result(fut, "action"))
        elif inc.phase is Phase.ROLLING_BACK:
            undone = _result(fut, "rollback")
            rec = step_record(inc, Event.ROLLBACK_RESULT, undone.outcome, undone.reason)
            self.records.write(rec | {"details": undone.details}, must=False)
            self._next_step(inc, now)
        elif inc.phase is Phase.NOTIFYING:
            self._notified(inc, now, fut)
        return True

    def _acted(self, inc: Incident, now: float, result: ActionResult) -> None:
        step = inc.current
        inc.result = result
        duration = (now - inc.started_step) if not inc.dry_run else 0.0
        rec = step_record(inc, Event.ACTION_RESULT, result.outcome, result.reason)
        rec |= {
            "target": result.target or rec["target"],
            "details": result.details,
            "duration_ms": round(duration * 1000, 1),
        }
        self.records.write(rec, must=False)
        inc.outcomes.append(result.outcome)
        inc.done.append(done_line(step, result))
        if step.action == "notify":
            resolving.note(inc, self.config.notifiers, result.target, result)
        svc_name = service_of(step)
        if result.outcome is Outcome.CANNOT_ACT:
            log.warning(
                "action_cannot_act", incident=inc.id, target=rec["target"], reason=result.reason
            )
            if svc_name in self.config.services and step.changes_host and inc.accounted:
                self.guards.action_refunded(svc_name, inc.started_step)  # nothing was done
                self.guards.save(now)
        if result.restarted and result.target in self.config.services and inc.accounted:
            self.guards.service_started(result.target, now)  # the grace runs from here
            self.guards.save(now)
        verifies = step.changes_host and result.outcome in (Outcome.OK, Outcome.WOULD_RUN)
        if not verifies:
            self._next_step(inc, now)
            return
        v = step.verify or DEFAULT_VERIFY
        inc.phase = Phase.VERIFYING
        inc.verification = self.verifier.start(v, now)
        if v.probe and self.request_probe is not None:
            self.request_probe(v.probe)

    def _verifying(self, inc: Incident, now: float) -> bool:
        ver = inc.verification
        if ver is None:
            raise RuntimeError("verifying without a verification")
        v = ver.verify
        checked = self.verifier.step(ver, inc.playbook.when, now)
        if checked is Checked.PENDING:
            if v.probe and self.request_probe is not None:
                self.request_probe(v.probe)
            return False
        why, extra = self.verifier.said(ver, checked, now, dry_run=inc.dry_run)
        if checked is Checked.PASSED:
            rec = step_record(inc, Event.VERIFY_PASSED, Outcome.OK, why)
            self.records.write(rec | extra, must=False)
            inc.done[-1] += ", verified"
            self._close(inc, now, IncidentOutcome.RESOLVED, success=True)
            return True
        if checked is Checked.UNKNOWN:
            rec = step_record(inc, Event.VERIFY_UNKNOWN, None, why)
            self.records.write(rec | extra, must=False)
            self._close(inc, now, IncidentOutcome.UNVERIFIED, success=None)
            return True
        rec = step_record(inc, Event.VERIFY_FAILED, Outcome.FAILED, why)
        self.records.write(rec | extra, must=False)
        inc.done[-1] += ", did not help"
        undo = inc.result.rollback if inc.result is not None else None
        if undo is not None:
            intent = step_record(
                inc, Event.ROLLBACK_INTENT, None, "the edit did not help: putting it back"
            )
            if self.records.write(intent):
                inc.phase = Phase.ROLLING_BACK
                inc.future = self.executor.submit(undo)
                return True
        self._next_step(inc, now)
        return True

    # --- closing ---

    def _exhausted(self, inc: Incident, now: float) -> None:
        if inc.outcomes and all(o == Outcome.HELD for o in inc.outcomes):
            # Nothing was tried (a guard held back every step), so nothing failed: no alert,
            # no breaker, no failed run; the trigger is judged again later.
            self._close(inc, now, IncidentOutcome.HELD, success=None)
            return
        if not any(s.changes_host for s in inc.playbook.steps):
            # Alert or diagnose only: nothing to verify; it worked when its steps ran. Such
            # a playbook never opens the breaker: cooldown and max_runs govern its repeats.
            ran = all(o in (Outcome.OK, Outcome.WOULD_RUN) for o in inc.outcomes)
            outcome = IncidentOutcome.COMPLETED if ran else IncidentOutcome.INCOMPLETE
            self._close(inc, now, outcome, success=None, acted=True)
            return
        names = inc.playbook.on_exhausted.notify
        fn = self.actions.get("notify")
        if not names:
            self._notified(inc, now, None)
            return
        cannot = could_not_act(inc)
        ctx = self._context(
            inc, IncidentOutcome.CANNOT_ACT if cannot else IncidentOutcome.EXHAUSTED
        )
        what = "cannot act safely, see the action log" if cannot else "no step helped"
        if inc.flapping is not None and not cannot:
            what = "flapping: its remedy works only for a moment and no step is left"

        def alert() -> list[tuple[str, ActionResult]]:
            out = []
            for name in names:
                if fn is None:
                    out.append((name, ActionResult(Outcome.FAILED, "notify is not available")))
                    continue
                args = NotifyArgs(notifier=name, message=f"{inc.playbook.name}: {what}")
                try:
                    out.append((name, fn(args, ctx)))
                except Exception as exc:
                    out.append((name, ActionResult(Outcome.FAILED, f"notify crashed: {exc}")))
            return out

        inc.phase = Phase.NOTIFYING
        inc.future = self.executor.submit(alert)

    def _notified(self, inc: Incident, now: float, fut: Future[Any] | None) -> None:
        """Record the alerts; then the run ends exhausted (a failure, maybe the breaker), or,
        when no changing step acted because each could not act safely, as cannot act: no
        failure, no breaker, and the run given back to the budget."""
        results: list[tuple[str, ActionResult]] = []
        if fut is not None:
            try:
                results = fut.result()
            except Exception as exc:  # defensive: alert() catches its own
                log.exception("notify_crashed", error=str(exc))
        for name, res in results:
            self.records.notify(
                inc.id, inc.playbook.name, inc.dry_run, name, res, "steps exhausted"
            )
            resolving.note(inc, self.config.notifiers, name, res)
        if could_not_act(inc):
            self._close(inc, now, IncidentOutcome.CANNOT_ACT, success=None, acted=True)
            return
        if inc.playbook.on_exhausted.stop and inc.accounted:
            self.guards.open_breaker(inc.playbook.name, now, "steps exhausted without recovery")
            self.records.write(
                {
                    "event": Event.BREAKER_OPENED,
                    "incident": inc.id,
                    "playbook": inc.playbook.name,
                    "reason": f"steps exhausted; `remediator reset {inc.playbook.name}` closes it",
                },
                must=False,
            )
        self._close(inc, now, IncidentOutcome.EXHAUSTED, success=False)

    def _abort(self, inc: Incident, now: float, reason: str) -> None:
        log.critical("incident_aborted", incident=inc.id, reason=reason)
        self._close(inc, now, IncidentOutcome.ABORTED, success=False)

    def _close(
        self,
        inc: Incident,
        now: float,
        outcome: IncidentOutcome,
        *,
        success: bool | None,
        acted: bool = False,
    ) -> None:
        """``success`` None: the run counts neither way (nothing was tried, or nothing that
        can fail to fix); ``acted``: log evidence up to now was dealt with all the same."""
        self.verifier.end()
        counts = inc.accounted
        opened_breaker = False
        if counts and outcome is IncidentOutcome.CANNOT_ACT:
            self.guards.run_refunded(inc.playbook, inc.opened)  # its cooldown still applies
        if counts:
            opened_breaker = self.guards.run_finished(inc.playbook, now, success=success)
            if outcome is IncidentOutcome.RESOLVED:  # does its trigger come straight back?
                self.guards.resolved(inc.playbook.name, now, inc.step)
            self.guards.save(now)
        if success is not None or acted:
            self._acted_until = now
        rec = {
            "event": Event.INCIDENT_CLOSED,
            "incident": inc.id,
            "playbook": inc.playbook.name,
            "dry_run": inc.dry_run,
            "outcome": outcome,
            "reason": closing_reason(inc, outcome),
            "summary": inc.summary(outcome),
            "duration_ms": round((now - inc.opened) * 1000, 1),
        }
        if inc.flapping is not None:
            rec["flapping"] = inc.flapping.record()
        self.records.write(rec, must=False)
        if opened_breaker:
            self.records.write(
                {
                    "event": Event.BREAKER_OPENED,
                    "incident": inc.id,
                    "playbook": inc.playbook.name,
                    "reason": "remediation kept failing",
                },
                must=False,
            )
        log.warning("incident_closed", incident=inc.id, playbook=inc.playbook.name, outcome=outcome)
        if inc.alerted:
            self.resolutions.send(inc, self._context(inc, str(outcome)), self.executor)
            self.record_resolved()
        if self.lock is not None:
            self.lock.release()  # one remediation at a time: this one is over
        self.seat.release(inc, outcome)  # after the verification: the next host may act
        self.closed.append(
            {
                "incident": inc.id,
                "playbook": inc.playbook.name,
                "outcome": str(outcome),
                "opened": inc.opened,
                "closed": now,
            }
        )
        self.incident = None

    # --- alerts that resolve (remediator.resolving) ---

    def record_resolved(self) -> None:
        """Record the resolutions sent since the last look (the daemon, stopping, too)."""
        for r in self.resolutions.collect():
            self.records.notify(
                r.incident, r.playbook, r.dry_run, r.notifier, r.result, "incident closed"
            )


def _result(fut: Future[Any], what: str) -> ActionResult:
    try:
        result: ActionResult = fut.result()
    except Exception as exc:  # a bug in an action is a failed step, never a crash
        log.exception(f"{what}_crashed")
        return ActionResult(Outcome.FAILED, f"{what} crashed: {type(exc).__name__}: {exc}")
    return result


__all__ = ["Engine", "Executor", "InlineExecutor", "target_of"]
