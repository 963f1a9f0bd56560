"""What each operator switch does to an engine, and its action-log record.

The same code runs in the daemon (for a request it took) and in a command (when no daemon
runs, holding the daemon lock): pause and resume set the guards' pause, reset closes a
playbook's breaker, trigger opens an incident through the engine's guards. Each applied switch
is a record (``operator_pause``, ``operator_resume``, ``operator_reset``, ``operator_trigger``)
with the operator's login name and reason, written before the switch takes effect (nothing
changes without its record), except a trigger's, written once the incident it opened has an id.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from remediator.actionlog import ActionLog, ActionLogError
from remediator.actions.base import ActionFn, Outcome
from remediator.detect import Signals
from remediator.engine import Engine
from remediator.events import Event
from remediator.guards import Guards
from remediator.load import Loaded
from remediator.operator import Kind, Reply, Request, describe
from remediator.schema import format_duration
from remediator.system import DryRunSystem, System

log = structlog.get_logger(__name__)

NOT_WRITTEN = "the action log cannot be written: nothing changed"


def apply(engine: Engine, req: Request, now: float, *, pid: int | None) -> Reply:
    """Apply ``req`` to ``engine`` at ``now`` (monotonic); ``pid``: the daemon applying it
    (None: a command, with no daemon running)."""
    log.info("operator_request", **describe(req), by=pid)
    try:
        match req.kind:
            case Kind.PAUSE:
                return _pause(engine, req, now, pid)
            case Kind.RESUME:
                return _resume(engine, req, now, pid)
            case Kind.RESET:
                return _reset(engine, req, now, pid)
            case Kind.TRIGGER:
                return _trigger(engine, req, now, pid)
    except Exception as exc:  # a switch must never bring the daemon down
        log.exception("operator_request_failed", **describe(req))
        return Reply(False, f"internal error: {type(exc).__name__}: {exc}", pid)


def offline_engine(
    loaded: Loaded, now: float, actions: Mapping[str, ActionFn] | None = None
) -> Engine:
    """An engine on the state alone (no sources), for a command applying a switch while no
    daemon runs (``actions`` for one that runs steps). Runs a dead daemon left open get their
    closing records first."""
    cfg = loaded.config
    if cfg is None:
        raise ValueError("no usable configuration")
    book = "guards.dry-run.json" if cfg.dry_run else "guards.json"
    guards = Guards(cfg.state_dir, cfg.guards, now, book=book)
    system = DryRunSystem() if cfg.dry_run else System()
    alog = ActionLog(cfg.action_log)
    engine = Engine(cfg, loaded.playbooks, Signals(), guards, alog, system, actions or {})
    if guards.interrupted:
        engine.close_interrupted()
        guards.save(now)
    return engine


def rfc3339(epoch: float) -> str:
    return (
        dt.datetime.fromtimestamp(epoch, dt.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def _record(engine: Engine, req: Request, **fields: Any) -> bool:
    rec = {
        "event": req.kind.event,
        "user": req.user,
        "reason": req.reason,
        "dry_run": False,  # a pause is real for a daemon in dry run too
        "outcome": Outcome.OK,
        **fields,
    }
    try:
        written = engine.actionlog.write(rec)
    except ActionLogError:
        return False
    engine.records.recent.append(written)  # `status` shows the last records
    return True


def _pause(engine: Engine, req: Request, now: float, pid: int | None) -> Reply:
    until = None if req.duration is None else time.time() + req.duration
    if not _record(engine, req, until=None if until is None else rfc3339(until)):
        return Reply(False, NOT_WRITTEN, pid)
    if until is None:
        msg = "paused until resumed"
    else:
        local = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(until))
        msg = f"paused for {format_duration(req.duration or 0)}, until {local}"
    msg += ": triggers are still watched and logged, nothing is acted on"
    try:
        engine.guards.set_pause(now, req.duration, req.reason, user=req.user)
    except OSError as exc:  # held in memory all the same
        msg += f" (not saved, it ends with this process: {exc.strerror})"
    return Reply(True, msg, pid)


def _resume(engine: Engine, req: Request, now: float, pid: int | None) -> Reply:
    was = not engine.guards.paused(now).allowed
    if not _record(engine, req, was_paused=was):
        return Reply(False, NOT_WRITTEN, pid)
    engine.guards.resume()
    return Reply(True, "resumed" if was else "resumed (there was no pause)", pid)


def _known(engine: Engine, name: str | None) -> bool:
    return any(pb.name == name for pb in engine.playbooks)


def _reset(engine: Engine, req: Request, now: float, pid: int | None) -> Reply:
    name = req.playbook or ""
    if not _known(engine, name) and name not in engine.guards.playbooks:
        return Reply(False, _unknown(name, pid), pid)
    was_open = engine.guards.breaker_open(name, now)
    # a daemon in dry run resets the breakers of its own guard book
    if not _record(engine, req, playbook=name, breaker_was_open=was_open, dry_run=engine.dry_run):
        return Reply(False, NOT_WRITTEN, pid)
    engine.guards.reset(name)
    engine.guards.save(now)
    what = "its breaker is closed" if was_open else "its breaker was not open"
    return Reply(True, f"{name}: {what}; its failures and back-off are forgotten", pid)


def _unknown(name: str, pid: int | None) -> str:
    where = "the daemon's configuration" if pid is not None else "the configuration"
    return f"no enabled playbook '{name}' in {where}"


def _trigger(engine: Engine, req: Request, now: float, pid: int | None) -> Reply:
    pb = next((p for p in engine.playbooks if p.name == req.playbook), None)
    if pb is None:
        return Reply(False, _unknown(req.playbook or "", pid), pid)
    closed = len(engine.closed)
    verdict = engine.trigger(pb, now, force=req.force, who=req.user, dry_run=req.dry_run)
    incident: str | None = None
    if verdict.allowed:
        if engine.incident is not None and engine.incident.playbook is pb:
            incident = engine.incident.id
        elif len(engine.closed) > closed:  # over already (an inline executor)
            incident = engine.closed[-1]["incident"]
    refusal = None
    if incident is None:
        refusal = verdict.reason if not verdict.allowed else "another remediator process is acting"
        if verdict.guard is not None:
            refusal += " (--force passes the guards, and is logged)"
    outcome = Outcome.OK if incident else (Outcome.HELD if verdict.guard else Outcome.REFUSED)
    guard = str(verdict.guard) if verdict.guard else None
    _record(
        engine,
        req,
        playbook=pb.name,
        incident=incident,
        force=req.force,
        dry_run=req.dry_run or engine.dry_run,
        outcome=outcome,
        guard=guard,
        refusal=refusal,
    )
    if incident is None:
        return Reply(False, f"{pb.name} not run: {refusal}", pid, guard=guard)
    dry = " (dry run)" if req.dry_run or engine.dry_run else ""
    return Reply(True, f"incident {incident} opened{dry}", pid, incident)


def trigger_succeeded(records: Iterable[dict[str, Any]], *, dry_run: bool) -> bool:
    """A followed trigger's verdict from its incident's records: in a dry run, whether every
    step would have run (none held back, refused or failed); otherwise whether it resolved."""
    recs = list(records)
    closed = [r for r in recs if r.get("event") == Event.INCIDENT_CLOSED]
    if not closed:
        return False
    if not dry_run:
        return closed[-1].get("outcome") == "resolved"
    bad = {Outcome.HELD, Outcome.REFUSED, Outcome.FAILED, Outcome.CANNOT_ACT}
    steps = [r for r in recs if r.get("event") in (Event.ACTION_RESULT, Event.ACTION_HELD)]
    return closed[-1].get("outcome") not in ("aborted", "interrupted") and not any(
        r.get("outcome") in bad for r in steps
    )
