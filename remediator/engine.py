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
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

import structlog

from remediator import corroborate, resolving
from remediator.actionlog import ActionLog, ActionLogError, rfc3339
from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import ACTIONS, NotifyArgs
from remediator.config import Config
from remediator.detect import Reading, Signals, evaluate, holds
from remediator.events import Event, IncidentOutcome, JudgedOn
from remediator.flap import Flap, Flapping, seconds
from remediator.fleet import hook
from remediator.guards import Guard, Guards, Verdict
from remediator.incident import (
    Incident,
    Phase,
    causes_of,
    describe,
    done_line,
    new_incident_id,
    reading,
    service_of,
    sources_of,
    step_reason,
    step_record,
    target_of,
    tripped,
)
from remediator.pages import page_path
from remediator.playbook import Playbook, Step, Verify, walk_conditions
from remediator.state import HostLock
from remediator.system import DryRunSystem, System
from remediator.verify import Verdict as Checked
from remediator.verify import Verifier

log = structlog.get_logger(__name__)

DEFAULT_VERIFY = Verify()
# `remediator trigger` with a fleet: its wish for a slot stays in line this long, so that the
# operator's next attempt finds the fleet's answer (no trigger of the playbook holds meanwhile).
MANUAL_WISH_S = 10.0


class Executor(Protocol):
    def submit(self, fn: Callable[[], Any]) -> Future[Any]: ...


class InlineExecutor:
    """Runs the work at once (replay, tests): the future is already done."""

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn())
        except Exception as exc:  # an action bug must not kill the engine: it is a failure
            fut.set_exception(exc)
        return fut


def changes_host(step: Step) -> bool:
    return ACTIONS[step.action].changes_host


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
        self.system = system
        self.actions = actions
        self.executor: Executor = executor or InlineExecutor()
        self.snapshot = snapshot
        self.wall = wall
        self.request_probe = request_probe
        self.request_service: Callable[[str], None] | None = None  # poll a service now
        self.lock = lock  # one remediation at a time on the host, across processes
        self.fleet: hook.Slots | None = None  # with a `fleet:` section, live
        self._wish_by_hand_until = 0.0  # monotonic; see MANUAL_WISH_S
        self.verifier = verifier or Verifier(signals)
        # Log lines alone never change the host. ``observed`` False (replay): no probe or
        # service state exists, corroboration is assumed and said so.
        self.corroboration = corroborate.Corroboration(
            config, self.playbooks, signals, observed=observed
        )
        self.incident: Incident | None = None
        # When the last incident ended: log evidence from before it was acted on already.
        self._acted_until: float | None = None
        self._held: dict[str, str] = {}  # playbook -> last guard reason logged (log once)
        self.closed: list[dict[str, Any]] = []  # summaries of closed incidents (replay, status)
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=10)
        # Each record once written (the daemon's metrics count them); called on this thread.
        self.on_record: Callable[[dict[str, Any]], None] | None = None
        self.report_dir: Path | None = None  # the daemon writes incident pages there
        # When each playbook's trigger started holding, in this streak (detection time).
        self._holding_since: dict[str, float] = {}
        self.resolutions = resolving.Resolutions()  # alerts resolved as incidents closed

    @property
    def dry_run(self) -> bool:
        return self.system.dry_run

    def close_interrupted(self) -> None:
        """Give incidents a daemon died in their closing record (found in the guard book)."""
        for playbook, incident in self.guards.interrupted:
            self._record(
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
        if inc is not None and inc.slot and self.fleet is not None:
            self._slot_lost(inc)
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
        in_line = self._consider_playbooks(now, supersede)
        if (
            not in_line
            and self.incident is None
            and self.fleet is not None
            and self.fleet.wanted
            and now >= self._wish_by_hand_until
        ):
            self.fleet.withdraw()  # no trigger wants the slot any more: leave the line

    def _consider_playbooks(self, now: float, supersede: Incident | None) -> bool:
        """Open an incident for the first playbook that may run; True when one asked the
        fleet for its slot (and waits in line, or opened with it)."""
        since = self._acted_until
        in_line = False
        for pb in self.playbooks:
            if not holds(pb.when, self.signals, now, since=since):
                asked = self.corroboration.released(pb.name)
                if asked is not None:  # it held, uncorroborated, while answers were awaited
                    self._log_uncorroborated(pb, asked)
                self._held.pop(pb.name, None)
                self._holding_since.pop(pb.name, None)
                continue
            self._holding_since.setdefault(pb.name, now)
            readings = evaluate(pb.when, self.signals, now, since=since)[1]
            backed, uncorroborated = self.corroboration.check(pb, readings, now, self._ask)
            if uncorroborated is not None:
                self._log_uncorroborated(pb, uncorroborated)
            if not backed.ok:
                continue
            self._returned(pb, readings, now)
            verdict = self.guards.may_run(pb, now)
            if verdict.allowed:
                verdict = self._steps_held(pb, now) or verdict
            slot: hook.Slot | None = None
            if verdict.allowed:
                verdict, slot = self._fleet_slot(pb)
                in_line = in_line or (self.fleet is not None and self.fleet.wanted)
                if verdict is hook.ASKING:
                    return True  # the answer wakes the loop
            if not verdict.allowed:
                self._log_held(pb, verdict, readings)
                continue
            if supersede is not None:
                self._close(supersede, now, IncidentOutcome.SUPERSEDED, success=None)
            self._open(pb, readings, now, backed=backed, slot=slot)
            return in_line
        return in_line

    def held_by_fleet(self, playbook: str) -> str | None:
        """Why the fleet holds ``playbook`` back now (slots busy, etcd unreachable), if so."""
        key, prefix = self._held.get(playbook, ""), f"{Guard.FLEET}: "
        return key.removeprefix(prefix) if key.startswith(prefix) else None

    def needs_slot(self, pb: Playbook) -> bool:
        """Whether ``pb`` runs its changing steps only in one of the fleet's slots."""
        return self.config.fleet is not None and pb.fleet and any(changes_host(s) for s in pb.steps)

    def _fleet_slot(
        self, pb: Playbook, *, dry_run: bool = False
    ) -> tuple[Verdict, hook.Slot | None]:
        """Whether the fleet lets ``pb`` act now, and what its opening record says of it.
        Never waits: the gate answers from its worker thread (``hook.ASKING`` until then)."""
        options = self.config.fleet
        if options is None or not self.needs_slot(pb):
            return Verdict.ok(), None
        return hook.ask(options, self.fleet, pb.name, dry_run=self.dry_run or dry_run)

    def _flap(self, pb: Playbook) -> Flap:
        return pb.flap or self.config.guards.flap

    def _returned(self, pb: Playbook, readings: list[Reading], now: float) -> None:
        """``pb``'s trigger holds, corroborated: if its last incident was resolved moments
        ago, the remedy only worked for a moment (counted for flap detection). A trigger on
        log lines alone counts only when corroborated by what was seen since that close: the
        failures of the outage just fixed back no forged lines written after it."""
        resolved = self.guards.awaiting_return(pb.name)
        if resolved is None:
            return
        need = self.corroboration.needs.get(pb.name)
        if need is not None and self.corroboration.observed:
            fresh = dataclasses.replace(need, window=max(0.0, now - resolved))
            if not corroborate.judge(fresh, readings, self.signals, now).ok:
                return
        back = self.guards.trigger_holds(pb.name, self._flap(pb), now)
        if back is not None:
            log.info("trigger_returned", playbook=pb.name, after=round(back.after, 2))
            self.guards.save(now)

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

    def _log_uncorroborated(self, pb: Playbook, held: corroborate.Held) -> None:
        """A trigger on log lines alone that nothing corroborated: held back, nothing counted."""
        reason = (
            "uncorroborated: the trigger rests on log lines only, which whoever can write "
            f"the logs can forge; waiting for {held.judgement.missing}"
        )
        self._log_held(
            pb,
            Verdict(False, Guard.UNCORROBORATED, reason),
            held.readings,
            corroboration=held.judgement.record(held.need),
        )

    def _steps_held(self, pb: Playbook, now: float) -> Verdict | None:
        """The guard that would hold back every step of ``pb`` (each changes a service in its
        start-up grace or out of budget), or None when some step could run. Such an incident
        would only record held steps and then count as exhausted."""
        held: Verdict | None = None
        for step in pb.steps:
            verdict = self._service_verdict(step, now)
            if verdict is None:
                return None
            held = held or verdict
        return held

    def _service_verdict(self, step: Step, now: float) -> Verdict | None:
        """The guard holding back ``step`` (a changing step on a service), or None."""
        svc_name = service_of(step)
        if svc_name is None or not changes_host(step):
            return None
        svc = self.config.services[svc_name]
        for verdict in (
            self.guards.may_act(svc_name, svc, now),
            self.guards.in_grace(svc_name, svc, now),
        ):
            if not verdict.allowed:
                return verdict
        return None

    def _log_held(
        self,
        pb: Playbook,
        verdict: Verdict,
        readings: list[Reading],
        *,
        corroboration: dict[str, Any] | None = None,
    ) -> None:
        key = f"{verdict.guard}"
        if verdict.guard is Guard.FLEET:  # who holds the slots is news each time it changes
            key += f": {verdict.reason}"
        if self._held.get(pb.name) == key:
            return
        self._held[pb.name] = key
        rec: dict[str, Any] = {
            "event": Event.TRIGGER_HELD_BACK,
            "playbook": pb.name,
            "outcome": Outcome.HELD,
            "reason": verdict.reason,
            "guard": verdict.guard,
            "readings": [reading(r) for r in readings],
        }
        if corroboration is not None:
            rec["corroboration"] = corroboration
            rec["lines"] = {
                src: list(self.signals.samples.get(src, ()))
                for src in sources_of(pb.when)
                if self.signals.samples.get(src)
            }
        self._record(rec, must=False)

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
            verdict, slot = self._fleet_slot(pb, dry_run=dry_run)
            if verdict is hook.ASKING:
                if not force:
                    self._wish_by_hand_until = now + MANUAL_WISH_S
                    return Verdict(False, Guard.FLEET, "asking the fleet for a slot: try again")
                verdict = Verdict(False, Guard.FLEET, "the fleet has not answered yet")
        if not verdict.allowed and not force:
            self._log_held(pb, verdict, [])
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
            self._log_held(pb, Verdict(False, None, "another remediator process is acting"), [])
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
            inc.flapping = self.guards.flapping(pb, self._flap(pb), now)
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
            "evidence": self._evidence(pb, readings, now),
        }
        if not manual:
            rec["detection_ms"] = round((now - self._first_sign(pb, now)) * 1000, 1)
        if inc.flapping is not None:
            rec["flapping"] = inc.flapping.record()
        need = self.corroboration.needs.get(pb.name)
        if need is not None and backed is not None:
            rec["corroboration"] = backed.record(need)
        if slot is not None:
            rec["fleet"] = slot
        ok = self._record(rec)
        if not ok:
            if self.lock is not None:
                self.lock.release()
            return False
        if slot is not None:
            self._slot_taken(inc, slot)
        if inc.accounted:
            self.guards.run_started(pb, now, inc.id)
            self.guards.save(now)
        self.incident = inc
        self._held.pop(pb.name, None)
        log.warning("incident_opened", incident=inc.id, playbook=pb.name, reason=inc.reason)
        if inc.flapping is not None:
            log.warning("playbook_flapping", incident=inc.id, playbook=pb.name, reason=flap_why)
            self._skip_flapping(inc, inc.flapping)
        self._next_step(inc, now)
        return True

    def _first_sign(self, pb: Playbook, now: float) -> float:
        """When the trouble ``pb`` opens for was first seen: its trigger first holding in this
        streak, or earlier, a service it names first seen down, a dns source first wrong."""
        first = self._holding_since.pop(pb.name, now)
        for cond in walk_conditions(pb.when):
            watch = getattr(cond, "service", None)
            down = self.signals.services.get(watch) if isinstance(watch, str) else None
            if down is not None and down.down_since is not None:
                first = min(first, down.down_since)
            source = getattr(cond, "source", None)
            dns = self.signals.dns.get(source) if isinstance(source, str) else None
            if dns is not None and dns.mismatch_since is not None:
                first = min(first, dns.mismatch_since)
        return first

    def _slot_taken(self, inc: Incident, slot: hook.Slot) -> None:
        """Record the slot this incident acts in (or that it acts alone), and label it."""
        options = self.config.fleet
        rec = hook.taken(options, slot, inc.playbook.name, inc.id) if options else None
        if rec is None:
            return
        if slot["slot"] == "granted":
            inc.slot = True
            if self.fleet is not None:
                self.fleet.opened(inc.playbook.name, inc.id)
        self._record(rec)

    def _slot_lost(self, inc: Incident) -> None:
        """The fleet took the slot back (its lease expired or was revoked): say so, once."""
        why = self.fleet.lost() if self.fleet is not None else None
        if why is None or self.config.fleet is None:
            return
        inc.slot_lost = True
        log.warning("fleet_slot_lost", incident=inc.id, reason=why)
        self._record(hook.lost(self.config.fleet, inc.playbook.name, inc.id, why), must=False)

    def _slot_again(self, inc: Incident) -> Verdict | None:
        """Before a changing step of an incident that lost its slot: None when a slot is
        this host's again (or it acts alone, ``on_unreachable: act``), recorded; otherwise
        why the step is held."""
        verdict, slot = self._fleet_slot(inc.playbook)
        if not verdict.allowed or slot is None:
            why = verdict.reason or "the fleet has not answered yet"
            return Verdict(False, Guard.FLEET, f"the fleet slot was lost: {why}")
        inc.slot_lost = False
        self._slot_taken(inc, slot)
        return None

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
            self._record(rec | {"guard": Guard.FLAPPING}, must=False)
            inc.outcomes.append(Outcome.SKIPPED)
            inc.done.append(f"{step_reason(inc.current)} (skipped: flapping)")

    def _evidence(self, pb: Playbook, readings: list[Reading], now: float) -> dict[str, Any]:
        evidence: dict[str, Any] = {
            "readings": [reading(r) for r in readings],
            "causes": causes_of(pb.when),
            "lines": {
                src: list(self.signals.samples.get(src, ()))
                for src in sources_of(pb.when)
                if self.signals.samples.get(src)
            },
            "probes": {
                name: {
                    "ok": st.last_ok,
                    "detail": st.last_detail,
                    "consecutive_failures": st.consecutive_failures,
                    "age_s": round(now - st.last_at, 1),  # a probe asked seldom may be old news
                }
                for name, st in self.signals.probes.items()
                if st.last_at is not None
            },
        }
        if self.snapshot is not None:
            try:
                evidence["host"] = self.snapshot()
            except Exception as exc:  # evidence is best effort; acting does not depend on it
                evidence["host"] = {"error": str(exc)}
        return evidence

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
        held = self._service_verdict(step, now)
        if held is None and inc.slot_lost and changes_host(step):
            held = self._slot_again(inc)
        if held is not None:
            rec = step_record(inc, Event.ACTION_HELD, Outcome.HELD, held.reason)
            self._record(rec | {"guard": held.guard}, must=False)
            inc.outcomes.append(Outcome.HELD)
            inc.done.append(f"{step_reason(step)} (held: {held.reason})")
            self._next_step(inc, now)
            return
        intent = step_record(inc, Event.ACTION_INTENT, None, step_reason(step))
        if not self._record(intent):
            self._abort(inc, now, "the action log cannot be written: not acting")
            return
        svc_name = service_of(step)
        if svc_name is not None and changes_host(step) and inc.accounted:
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
            self._record(rec | {"details": undone.details}, must=False)
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
        self._record(rec, must=False)
        inc.outcomes.append(result.outcome)
        inc.done.append(done_line(step, result))
        if step.action == "notify":
            resolving.note(inc, self.config.notifiers, result.target, result)
        svc_name = service_of(step)
        if result.outcome is Outcome.CANNOT_ACT:
            log.warning(
                "action_cannot_act", incident=inc.id, target=rec["target"], reason=result.reason
            )
            if svc_name in self.config.services and changes_host(step) and inc.accounted:
                self.guards.action_refunded(svc_name, inc.started_step)  # nothing was done
                self.guards.save(now)
        if result.restarted and result.target in self.config.services and inc.accounted:
            self.guards.service_started(result.target, now)  # the grace runs from here
            self.guards.save(now)
        verifies = changes_host(step) and result.outcome in (Outcome.OK, Outcome.WOULD_RUN)
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
        judged_on = (
            JudgedOn.LOGS
            if v.probe is not None and not self.verifier.probes
            else "+".join(ver.judged_on) or None
        )
        last = ver.last.detail if ver.last is not None else "no evidence"
        by_itself = "dry run, nothing was done: " if inc.dry_run else ""
        extra = {"judged_on": judged_on, "duration_ms": round((now - ver.acted_at) * 1000, 1)}
        if checked is Checked.PASSED:
            since = ver.healthy_since if ver.healthy_since is not None else now
            held = f", still healthy {now - since:.2f}s later" if now > since else ""
            why = (
                f"{by_itself}recovered {since - ver.acted_at:.2f}s after the action{held} ({last})"
            )
            rec = step_record(inc, Event.VERIFY_PASSED, Outcome.OK, why)
            self._record(rec | extra, must=False)
            inc.done[-1] += ", verified"
            self._close(inc, now, IncidentOutcome.RESOLVED, success=True)
            return True
        if checked is Checked.UNKNOWN:
            why = f"no evidence either way within {v.within:g}s ({last})"
            self._record(step_record(inc, Event.VERIFY_UNKNOWN, None, why) | extra, must=False)
            self._close(inc, now, IncidentOutcome.UNVERIFIED, success=None)
            return True
        seen = ver.failing.detail if ver.failing is not None else last
        why = (
            f"{by_itself}still failing within {v.within:g}s ({seen})"
            if ver.failing is not None
            else f"{by_itself}no evidence of recovery within {v.within:g}s ({last})"
        )
        self._record(step_record(inc, Event.VERIFY_FAILED, Outcome.FAILED, why) | extra, must=False)
        inc.done[-1] += ", did not help"
        undo = inc.result.rollback if inc.result is not None else None
        if undo is not None:
            intent = step_record(
                inc, Event.ROLLBACK_INTENT, None, "the edit did not help: putting it back"
            )
            if self._record(intent):
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
        if not any(changes_host(s) for s in inc.playbook.steps):
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
        cannot = _could_not_act(inc)
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
            self._record_notify(
                inc.id, inc.playbook.name, inc.dry_run, name, res, "steps exhausted"
            )
            resolving.note(inc, self.config.notifiers, name, res)
        if _could_not_act(inc):
            self._close(inc, now, IncidentOutcome.CANNOT_ACT, success=None, acted=True)
            return
        if inc.playbook.on_exhausted.stop and inc.accounted:
            self.guards.open_breaker(inc.playbook.name, now, "steps exhausted without recovery")
            self._record(
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
            "reason": _closing_reason(inc, outcome),
            "summary": inc.summary(outcome),
            "duration_ms": round((now - inc.opened) * 1000, 1),
        }
        if inc.flapping is not None:
            rec["flapping"] = inc.flapping.record()
        self._record(rec, must=False)
        if opened_breaker:
            self._record(
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
        if inc.slot and self.fleet is not None and self.config.fleet is not None:
            self.fleet.release()  # after the verification: the next host may act
            rec = hook.released(self.config.fleet, inc.playbook.name, inc.id, outcome)
            self._record(rec, must=False)
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
            self._record_notify(
                r.incident, r.playbook, r.dry_run, r.notifier, r.result, "incident closed"
            )

    def _record_notify(
        self, incident: str, playbook: str, dry_run: bool, name: str, res: ActionResult, why: str
    ) -> None:
        self._record(
            {
                "event": Event.NOTIFY,
                "incident": incident,
                "playbook": playbook,
                "action": "notify",
                "target": name,
                "dry_run": dry_run,
                "outcome": res.outcome,
                "reason": f"{why}: {res.reason}",
                "details": res.details,
            },
            must=False,
        )

    # --- records ---

    def _record(self, rec: dict[str, Any], *, must: bool = True) -> bool:
        rec.setdefault("dry_run", self.dry_run)
        try:
            written = self.actionlog.write(rec)
            self.recent.append({k: v for k, v in written.items() if k != "evidence"})
        except ActionLogError:
            if must:
                return False
        else:
            if self.on_record is not None:
                self.on_record(written)
        return True


def _could_not_act(inc: Incident) -> bool:
    """Whether no changing step acted, and some could not act safely (an untrusted pid file,
    a master that is not the service's): the others were held back or change nothing."""
    pairs = list(zip(inc.playbook.steps, inc.outcomes, strict=False))
    untried = (Outcome.HELD, Outcome.CANNOT_ACT)
    return any(o == Outcome.CANNOT_ACT for _, o in pairs) and not any(
        changes_host(s) and o not in untried for s, o in pairs
    )


def _result(fut: Future[Any], what: str) -> ActionResult:
    try:
        result: ActionResult = fut.result()
    except Exception as exc:  # a bug in an action is a failed step, never a crash
        log.exception(f"{what}_crashed")
        return ActionResult(Outcome.FAILED, f"{what} crashed: {type(exc).__name__}: {exc}")
    return result


_CLOSING = {
    IncidentOutcome.RESOLVED: "the site is healthy again",
    IncidentOutcome.COMPLETED: "its steps ran (this playbook changes nothing)",
    IncidentOutcome.INCOMPLETE: "a step of this playbook failed (it changes nothing)",
    IncidentOutcome.EXHAUSTED: "no step helped",
    IncidentOutcome.HELD: "every step was held back by a guard: nothing was tried",
    IncidentOutcome.CANNOT_ACT: (
        "no step could act safely (see each step's reason): nothing was tried, no failure counted"
    ),
    IncidentOutcome.UNVERIFIED: "no evidence either way of whether the step helped",
    IncidentOutcome.ABORTED: "the action log cannot be written: not acting",
    IncidentOutcome.SUPERSEDED: "this dry run gave way to a real incident",
}


def _closing_reason(inc: Incident, outcome: IncidentOutcome) -> str:
    why = _CLOSING.get(outcome, str(outcome))
    if inc.flapping is not None:
        skipped = inc.flapping.start
        why += f" (flapping: {skipped} step(s) not repeated"
        why += ")" if inc.flapping.escalates else ", no step left to escalate to)"
    return f"{outcome} after {len(inc.outcomes)} step(s): {why}"


__all__ = ["Engine", "Executor", "InlineExecutor", "target_of"]
