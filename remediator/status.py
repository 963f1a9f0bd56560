"""What the running daemon is doing, for ``remediator status``.

The daemon writes ``status.json`` in its state dir every few seconds (atomically); the command
reads it, and says plainly when the daemon is not running (the file is stale), still showing
the guards and pause that would apply.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from remediator import escape
from remediator.detect import evaluate
from remediator.guards import Guard, PlaybookBook, Verdict, stored_pause
from remediator.incident import describe
from remediator.state import write_atomic
from remediator.timezone import stamp

if TYPE_CHECKING:
    from remediator.daemon import Daemon
    from remediator.engine import Engine
    from remediator.playbook import Playbook

EVERY = 2.0  # how often the daemon looks whether its status changed
REFRESH = 10.0  # an unchanged status is rewritten this often, to show the daemon is alive
STALE = 30.0


def collect(daemon: Daemon, now: float) -> dict[str, Any]:
    """A snapshot of the daemon's sources, incident, guards and last actions."""
    watcher, engine = daemon.watcher, daemon.engine
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "updated": time.time(),
        "config": str(daemon.config_path),
        "reload_error": daemon.reload_error,
        "dry_run": bool(engine and engine.dry_run),
    }
    if watcher is not None:
        sources: dict[str, Any] = {}
        cfg = watcher.config
        for name, src in cfg.sources.items():
            entry: dict[str, Any] = {"type": type(src).kind}
            path = getattr(src, "path", None)
            follower = watcher.tailer.followers.get(path) if path is not None else None
            if follower is not None:
                entry |= {
                    "state": str(follower.status.state),
                    "reason": follower.status.reason,
                    "rotations": follower.counters.rotations,
                    "truncations": follower.counters.truncations,
                }
            if type(src).kind == "journal":
                blind = watcher.journals.get(name) is None
                entry |= {
                    "state": "blind" if blind else "ok",
                    "reason": "no journal to read" if blind else "",
                }
            stats = watcher.feeder.stats.get(name)
            if stats is not None and type(src).kind not in ("probe", "dns", "fpm_status"):
                entry |= {
                    "lines": stats.lines,
                    "malformed": stats.malformed,
                    "matched": stats.matched,
                }
            probe = watcher.signals.probes.get(name)
            if probe is not None:
                healthy = probe.last_ok
                entry |= {
                    "state": "ok" if healthy else ("waiting" if healthy is None else "failing"),
                    "reason": probe.last_detail,
                    "consecutive_failures": probe.consecutive_failures,
                }
            dns = watcher.signals.dns.get(name)
            if dns is not None:
                wrong = dns.mismatch_since is not None
                entry |= {
                    "state": "waiting" if dns.last_at is None else ("mismatch" if wrong else "ok"),
                    "reason": dns.detail,
                }
            fpm = watcher.signals.fpm.get(name)
            if fpm is not None:
                entry |= {
                    "state": "ok"
                    if fpm.last_ok
                    else ("waiting" if fpm.last_at is None else "failing"),
                    "reason": fpm.last_detail,
                    "consecutive_failures": fpm.consecutive_failures,
                    # the pool's usual longest request (p99 of those seen done), when known
                    "usual_request_s": fpm.usual(now)[0],
                }
            sources[name] = entry
        out["sources"] = sources
    if engine is not None:
        inc = engine.incident
        out["incident"] = (
            None
            if inc is None
            else {
                "id": inc.id,
                "playbook": inc.playbook.name,
                "step": inc.step + 1,
                "phase": str(inc.phase),
                "age_s": round(now - inc.opened, 1),
            }
        )
        guards = engine.guards
        paused = guards.paused(now)
        out["paused"] = None if paused.allowed else paused.reason
        # Nothing matched since every trigger last counted nothing: none counts anything now
        # (windows only forget), so an idle daemon judges no condition for its status.
        matched = sum(st.matched for st in watcher.feeder.stats.values()) if watcher else None
        quiet = matched is not None and matched == daemon.nearing_quiet_at
        nearing = {pb.name: [] if quiet else _nearing(engine, pb, now) for pb in engine.playbooks}
        daemon.nearing_quiet_at = matched if not any(nearing.values()) else None
        out["playbooks"] = {
            pb.name: _playbook(_verdict(engine, pb, now), guards.playbooks.get(pb.name))
            | {"trigger": nearing[pb.name]}
            for pb in engine.playbooks
        }
        out["recent_actions"] = list(engine.records.recent)
    if daemon.fleet is not None:
        out["fleet"] = daemon.fleet.view()
    return out


def _verdict(engine: Engine, pb: Playbook, now: float) -> Verdict:
    """What holds ``pb`` back now: a guard, or its trigger waiting for corroboration."""
    verdict = engine.guards.may_run(pb, now)
    waiting = engine.corroboration.waiting.get(pb.name)
    if verdict.allowed and waiting:
        return Verdict(False, Guard.UNCORROBORATED, f"uncorroborated: waiting for {waiting}")
    fleet = engine.holds.by_fleet(pb.name)
    if verdict.allowed and fleet:
        return Verdict(False, Guard.FLEET, fleet)
    return verdict


def _nearing(engine: Engine, pb: Playbook, now: float) -> list[str]:
    """The failures a playbook's trigger counts now, each beside what trips it: a trigger
    that has not held leaves no record, and the operator should still see one that nears it
    (or one that a small window keeps from holding)."""
    out = []
    for r in evaluate(pb.when, engine.signals, now, since=engine.acted_until)[1]:
        d = r.detail
        if r.condition not in ("status_rate", "error_cause") or not d.get("count"):
            continue
        trips = f"{d['at_least']}"
        if d.get("min_ratio") is not None:
            trips += f" and {d['min_ratio'] * 100:g}% of at least {d['min_sample']} requests"
        out.append(f"{describe(r)}: {'holds' if r.holds else f'trips at {trips}'}")
    return out


def _playbook(verdict: Any, st: PlaybookBook | None) -> dict[str, Any]:
    return {
        "ready": verdict.allowed,
        "held_by": str(verdict.guard) if verdict.guard else None,
        "reason": verdict.reason,
        "failures_in_a_row": st.failures if st else 0,
    }


# What only counts up as lines come (a probe through the web server adds an access-log line a
# second), or moves with every request (a pool's usual request duration, once known): a change
# in these alone is written with the next REFRESH, not at once.
_COUNTERS = frozenset({"lines", "malformed", "matched"})
_MEASURES = frozenset({"usual_request_s"})


def publish(daemon: Daemon, state_dir: Path, now: float) -> dict[str, Any]:
    """Write status.json when it changed, or every REFRESH seconds (an fsync costs more than
    the whole idle loop); counters alone wait for the refresh. The snapshot (the daemon's
    metrics sample it)."""
    snap = collect(daemon, now)
    shown = {k: v for k, v in snap.items() if k not in ("updated", "sources")}
    shown["sources"] = {
        name: {
            k: (v is not None) if k in _MEASURES else v
            for k, v in entry.items()
            if k not in _COUNTERS
        }
        for name, entry in snap.get("sources", {}).items()
    }
    body = json.dumps(shown, default=str)
    last_body, last_at = daemon.published
    if body == last_body and now - last_at < REFRESH:
        return snap
    daemon.published = (body, now)
    data = json.dumps(snap, default=str, indent=1).encode()
    write_atomic(state_dir / "status.json", data + b"\n")
    return snap


def stopped(state_dir: Path) -> None:
    """Mark the status as the daemon's last word: `status` says it is not running."""
    path = state_dir / "status.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    data |= {"stopped": True, "updated": time.time()}
    write_atomic(path, json.dumps(data, default=str, indent=1).encode() + b"\n")


def show(state_dir: Path, out: TextIO, *, as_json: bool) -> bool:
    """Print the status; False when the daemon is not running. Text from outside (a probe's
    answer, a reload error, a record's reason) is escaped; times carry their UTC offset."""
    path = state_dir / "status.json"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):  # there, but not for this user: never "never"
            why = f"cannot read {path}: {exc.strerror}: run it as root or as a member of adm"
            out.write(escape.text(why) + "\n")
            return False
        data = None
    except ValueError:
        data = None
    running = (
        bool(data)
        and not data.get("stopped")
        and time.time() - float(data.get("updated", 0)) < STALE
    )
    if as_json:
        out.write(json.dumps({"running": running, **(data or {})}, default=str) + "\n")
        return running
    for line in _text(data, running, state_dir):
        out.write(escape.text(line) + "\n")
    return running


def _text(data: dict[str, Any] | None, running: bool, state_dir: Path) -> Iterator[str]:
    if not running:
        when = stamp(float(data["updated"])) if data else "never"
        how = "stopped" if data and data.get("stopped") else "last status"
        yield f"remediator is not running ({how}: {when})"
        if not (pause := stored_pause(state_dir, time.monotonic())).allowed:
            yield f"  PAUSED: {pause.reason} (applies when it starts)"
        return
    assert data is not None  # noqa: S101 - running implies data
    mode = " (DRY RUN)" if data.get("dry_run") else ""
    yield f"remediator running, pid {data['pid']}{mode}; config {data['config']}"
    if data.get("reload_error"):
        yield f"  last reload FAILED, old config kept: {data['reload_error']}"
    if data.get("paused"):
        yield f"  PAUSED: {data['paused']}"
    yield "sources:"
    for name, s in data.get("sources", {}).items():
        state = s.get("state", "-")
        reason = f" ({s['reason']})" if s.get("reason") else ""
        counts = (
            f"  lines {s['lines']}, malformed {s['malformed']}, matched {s['matched']}"
            if "lines" in s
            else ""
        )
        yield f"  {name:<16} {s['type']:<10} {state}{reason}{counts}"
    inc = data.get("incident")
    yield "incident: " + (
        f"{inc['id']} {inc['playbook']} step {inc['step']} {inc['phase']} for {inc['age_s']}s"
        if inc
        else "none"
    )
    yield from _fleet(data.get("fleet"))
    yield "playbooks:"
    for name, p in data.get("playbooks", {}).items():
        state = "ready" if p["ready"] else f"held: {p['reason']}"
        yield f"  {name:<24} {state}"
        for counted in p.get("trigger") or ():
            yield f"    now: {counted}"
    recent = data.get("recent_actions") or []
    cannot = [r for r in recent if r.get("outcome") == "cannot_act" and r.get("step")]
    if cannot:  # the last step that could not act safely: someone must look
        r = cannot[-1]
        yield (
            f"cannot act: {_when(r.get('ts'))}  {r.get('playbook')} step {r.get('step')} "
            f"{r.get('action')} {r.get('target') or ''}: {r.get('reason')}"
        )
    if recent:
        yield "last records:"
        for r in recent[-5:]:
            yield (
                f"  {_when(r.get('ts'))}  {r.get('event')} {r.get('playbook') or ''} "
                f"{r.get('action') or ''} {r.get('outcome') or ''}"
            ).rstrip()


def _fleet(fleet: dict[str, Any] | None) -> Iterator[str]:
    """The pool's slots as this host last saw them: who holds one, since when, for what."""
    if not fleet:
        return
    holders = fleet.get("holders") or []
    yield (
        f"fleet: pool {fleet.get('pool')}, {len(holders)} of {fleet.get('max_concurrent')} "
        f"slot(s) held, {fleet.get('waiting', 0)} waiting; this host ({fleet.get('host')}) "
        f"{fleet.get('state')}" + (f", seen {_when(fleet['seen'])}" if fleet.get("seen") else "")
    )
    if fleet.get("state") == "unreachable" and fleet.get("detail"):
        yield f"  etcd: {fleet['detail']}"
    for h in holders:
        since = _when(h["since"]) if h.get("since") else "-"
        yield f"  {h.get('host'):<16} since {since}  {h.get('playbook') or '-'} {h.get('incident') or ''}".rstrip()


def _when(ts: Any) -> str:
    try:
        return stamp(dt.datetime.fromisoformat(str(ts)).timestamp())
    except ValueError:
        return str(ts)
