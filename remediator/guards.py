"""Guards: the budget every remediation must fit in, persisted so a restart does not reset it.

Per playbook: cooldown after a run, at most ``max_runs`` per ``per``, exponential back-off
between repeated incidents (10 s doubling to 5 min, reset after 10 min without one), and a
circuit breaker that opens after repeated failures (or when the steps are exhausted with
``stop``) until ``remediator reset`` or its own timeout. Per service: at most ``max_actions``
per window and a start-up grace after a (re)start. Host-wide: a maintenance pause.

Everything takes ``now`` (monotonic seconds) from the caller.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from remediator.config import Guards as GuardsConfig
from remediator.config import Service
from remediator.flap import Flap, Flapping, Return, flapping, recent, returned
from remediator.playbook import Playbook, Step
from remediator.state import JsonState, Saved, count, text

log = structlog.get_logger(__name__)

_B = TypeVar("_B")


class Guard(enum.StrEnum):
    """Which guard held an action back."""

    PAUSED = "paused"
    BREAKER = "breaker_open"
    COOLDOWN = "cooldown"
    MAX_RUNS = "max_runs"
    BACKOFF = "backoff"
    SERVICE_BUDGET = "service_budget"
    STARTUP_GRACE = "startup_grace"
    UNCORROBORATED = "uncorroborated"  # log lines alone (see remediator.corroborate)
    FLAPPING = "flapping"  # a step that kept resolving incidents only for a moment
    FLEET = "fleet"  # the pool's slots are busy, or etcd cannot be reached (remediator.fleet)


@dataclass(frozen=True)
class Verdict:
    """Whether something may happen now; if not, which guard said no, why, and until when."""

    allowed: bool
    guard: Guard | None = None
    reason: str = ""
    until: float | None = None

    @classmethod
    def ok(cls) -> Verdict:
        return cls(True)


PAUSE_FILE = "pause.json"


@dataclass
class Pause:
    """The operator's maintenance pause (``pause.json``)."""

    since: float
    until: float | None = None  # None: until ``remediator resume``
    reason: str = ""
    user: str = ""

    @classmethod
    def read(cls, saved: Saved) -> Pause | None:
        since = saved.time(saved.data, "since_at")
        if since is None:
            return None
        raw = saved.data
        return cls(since, saved.time(raw, "until_at"), text(raw, "reason"), text(raw, "user"))

    def to_json(self) -> dict[str, Any]:
        return {
            "since_at": self.since,
            "until_at": self.until,
            "reason": self.reason,
            "user": self.user,
        }


@dataclass
class PlaybookBook:
    """What the guards keep about one playbook. Times are this boot's monotonic seconds."""

    runs: list[float] = field(default_factory=list)  # starts within the max_runs window
    incidents: int = 0  # in a row without a long healthy time: the back-off's exponent
    failures: int = 0  # failed runs in a row: the breaker's count
    last_end: float | None = None
    started: float | None = None  # a run in progress (left behind by a daemon that died)
    incident: str | None = None  # that run's incident id
    breaker_opened: float | None = None
    breaker_reason: str = ""
    resolved: float | None = None  # the last incident resolved, its trigger not back yet
    resolved_step: int = 0  # the index of the step that resolved it
    returns: list[Return] = field(default_factory=list)  # flap detection (remediator.flap)

    @classmethod
    def read(cls, raw: Any, saved: Saved) -> PlaybookBook:
        if not isinstance(raw, dict):
            return cls()
        incident = raw.get("incident")
        returns = raw.get("returns")
        return cls(
            runs=saved.times(raw, "runs_at"),
            incidents=count(raw, "incidents"),
            failures=count(raw, "failures"),
            last_end=saved.time(raw, "last_end_at"),
            started=saved.time(raw, "started_at"),
            incident=incident if isinstance(incident, str) else None,
            breaker_opened=saved.time(raw, "breaker_opened_at"),
            breaker_reason=text(raw, "breaker_reason"),
            resolved=saved.time(raw, "resolved_at"),
            resolved_step=count(raw, "resolved_step"),
            returns=[r for r in (_return(item, saved) for item in returns or ()) if r is not None]
            if isinstance(returns, list)
            else [],
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "runs_at": self.runs,
            "incidents": self.incidents,
            "failures": self.failures,
            "last_end_at": self.last_end,
        }
        if self.started is not None:
            out["started_at"] = self.started
            out["incident"] = self.incident
        if self.breaker_opened is not None:
            out["breaker_opened_at"] = self.breaker_opened
            out["breaker_reason"] = self.breaker_reason
        if self.resolved is not None:
            out["resolved_at"] = self.resolved
            out["resolved_step"] = self.resolved_step
        if self.returns:
            out["returns"] = [
                {"closed_at": r.closed, "after": r.after, "step": r.step} for r in self.returns
            ]
        return out


def _return(raw: Any, saved: Saved) -> Return | None:
    """One saved return; None when it is not one (a hand-edited or corrupt book)."""
    if not isinstance(raw, dict):
        return None
    closed = saved.time(raw, "closed_at")
    after = raw.get("after")
    if closed is None or not isinstance(after, int | float) or isinstance(after, bool):
        return None
    return Return(closed, max(0.0, float(after)), count(raw, "step"))


@dataclass
class ServiceBook:
    """What the guards keep about one service."""

    actions: list[float] = field(default_factory=list)  # within its actions window
    started: float | None = None  # last (re)start by us: the start-up grace runs from here

    @classmethod
    def read(cls, raw: Any, saved: Saved) -> ServiceBook:
        if not isinstance(raw, dict):
            return cls()
        return cls(saved.times(raw, "actions_at"), saved.time(raw, "started_at"))

    def to_json(self) -> dict[str, Any]:
        return {"actions_at": self.actions, "started_at": self.started}


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def pause_verdict(pause: Pause | None, now: float) -> Verdict:
    """What a pause says at ``now``: who paused, why, how long."""
    if pause is None or (pause.until is not None and now >= pause.until):
        return Verdict.ok()
    why = pause.reason or "maintenance"
    by = f" by {pause.user}" if pause.user else ""
    left = "" if pause.until is None else f" for {_fmt(pause.until - now)} more"
    return Verdict(False, Guard.PAUSED, f"paused{by} ({why}){left}", pause.until)


def stored_pause(state_dir: Path, now: float) -> Verdict:
    """The pause kept in ``state_dir``: what a daemon started now would apply."""
    return pause_verdict(Pause.read(JsonState(state_dir / PAUSE_FILE).load(now)), now)


def _books(raw: Any, saved: Saved, read: Callable[[Any, Saved], _B]) -> dict[str, _B]:
    if not isinstance(raw, dict):
        return {}
    return {str(name): read(entry, saved) for name, entry in raw.items()}


class Guards:
    """The guard book. Call ``save`` after every change that must survive a restart."""

    def __init__(
        self, state_dir: Path, config: GuardsConfig, now: float, *, book: str = "guards.json"
    ) -> None:
        self.config = config
        self._store = JsonState(state_dir / book)
        # The operator's pause: changed only by whoever holds the daemon lock (the daemon, or a
        # command when none runs; remediator.operator), so it is read once, here
        self._pause_file = JsonState(state_dir / PAUSE_FILE)
        saved = self._store.load(now)
        self.playbooks = _books(saved.data.get("playbooks"), saved, PlaybookBook.read)
        self.services = _books(saved.data.get("services"), saved, ServiceBook.read)
        self.pause = Pause.read(self._pause_file.load(now))
        # (playbook, incident id) of runs a daemon died in: the engine closes their records
        self.interrupted: list[tuple[str, str | None]] = []
        for name, st in self.playbooks.items():
            if st.started is not None:  # the daemon died mid-run: count it as a run that failed
                log.warning("run_interrupted", playbook=name, incident=st.incident)
                st.last_end = max(st.started, st.last_end or st.started)
                st.failures += 1
                self.interrupted.append((name, st.incident))
                st.started = st.incident = None

    def save(self, now: float) -> None:
        data = {
            "playbooks": {n: b.to_json() for n, b in self.playbooks.items()},
            "services": {n: b.to_json() for n, b in self.services.items()},
        }
        self._store.save(data, now)

    def _pb(self, name: str) -> PlaybookBook:
        return self.playbooks.setdefault(name, PlaybookBook())

    def _svc(self, name: str) -> ServiceBook:
        return self.services.setdefault(name, ServiceBook())

    # --- maintenance pause ---

    def paused(self, now: float) -> Verdict:
        return pause_verdict(self.pause, now)

    def set_pause(
        self, now: float, duration: float | None, reason: str = "", *, user: str = ""
    ) -> None:
        """``remediator pause``: every action becomes a logged no-op until resumed/expired."""
        self.pause = Pause(now, None if duration is None else now + duration, reason, user)
        self._pause_file.save(self.pause.to_json(), now)

    def resume(self) -> None:
        self.pause = None
        self._pause_file.path.unlink(missing_ok=True)

    # --- playbooks ---

    def breakers(self, now: float) -> dict[str, bool]:
        """Whether each playbook in the book has its breaker open now (changes nothing: an
        expired breaker is closed by the next ``may_run``)."""
        open_for = self.config.breaker.open_for
        return {
            name: st.breaker_opened is not None
            and (not open_for or now < st.breaker_opened + open_for)
            for name, st in self.playbooks.items()
        }

    def may_run(self, pb: Playbook, now: float) -> Verdict:
        """Whether ``pb`` may start a run now."""
        paused = self.paused(now)
        if not paused.allowed:
            return paused
        st = self._pb(pb.name)
        if st.breaker_opened is not None:
            open_for = self.config.breaker.open_for
            if open_for and now >= st.breaker_opened + open_for:
                self.reset(pb.name)
            else:
                until = st.breaker_opened + open_for if open_for else None
                why = st.breaker_reason or "remediation kept failing"
                return Verdict(
                    False,
                    Guard.BREAKER,
                    f"breaker open ({why}); `remediator reset {pb.name}` closes it",
                    until,
                )
        if st.last_end is not None and now < st.last_end + pb.limits.cooldown:
            until = st.last_end + pb.limits.cooldown
            return Verdict(False, Guard.COOLDOWN, f"cooldown: {_fmt(until - now)} left", until)
        recent = [t for t in st.runs if t > now - pb.limits.per]
        if len(recent) >= pb.limits.max_runs:
            until = recent[0] + pb.limits.per
            return Verdict(
                False,
                Guard.MAX_RUNS,
                f"{len(recent)} runs in the last {_fmt(pb.limits.per)} (max {pb.limits.max_runs})",
                until,
            )
        if _backs_off(pb) and st.last_end is not None:
            wait = self._backoff_wait(st, now)
            if now < st.last_end + wait:
                until = st.last_end + wait
                return Verdict(False, Guard.BACKOFF, f"back-off: {_fmt(until - now)} left", until)
        return Verdict.ok()

    def _backoff_wait(self, st: PlaybookBook, now: float) -> float:
        cfg = self.config.backoff
        if st.last_end is not None and now - st.last_end >= cfg.reset_after:
            st.incidents = 0
        if st.incidents <= 0:
            return 0.0
        return float(min(cfg.initial * 2 ** (st.incidents - 1), cfg.max))

    def run_started(self, pb: Playbook, now: float, incident: str | None = None) -> None:
        st = self._pb(pb.name)
        st.incident = incident
        self._backoff_wait(st, now)  # forget old incidents after a long healthy time
        st.runs = [t for t in st.runs if t > now - pb.limits.per] + [now]
        st.incidents += 1
        st.started = now

    def run_finished(self, pb: Playbook, now: float, *, success: bool | None) -> bool:
        """Record a run's end (``success`` None: nothing was tried, the failure streak stays
        as it was); returns True when this opened the breaker."""
        st = self._pb(pb.name)
        st.incident = st.started = None
        st.last_end = now
        if success is None:
            return False
        if success:
            st.failures = 0
            return False
        st.failures += 1
        if st.failures >= self.config.breaker.failures and st.breaker_opened is None:
            self.open_breaker(pb.name, now, f"{st.failures} failed runs in a row")
            return True
        return False

    def run_refunded(self, pb: Playbook, started: float) -> None:
        """Give back the run started at ``started``: no step could act (cannot act), so it
        uses neither ``max_runs`` nor back-off."""
        st = self._pb(pb.name)
        if started in st.runs:
            st.runs.remove(started)
        st.incidents = max(0, st.incidents - 1)

    def open_breaker(self, name: str, now: float, reason: str) -> None:
        st = self._pb(name)
        st.breaker_opened = now
        st.breaker_reason = reason

    def breaker_open(self, name: str, now: float) -> bool:
        """Whether ``name``'s breaker holds it back at ``now`` (opened, not yet timed out)."""
        st = self.playbooks.get(name)
        opened = st.breaker_opened if st else None
        open_for = self.config.breaker.open_for
        return opened is not None and not (open_for and now >= opened + open_for)

    def reset(self, name: str) -> bool:
        """Close the breaker and forget failures and back-off; False if nothing was open."""
        st = self._pb(name)
        was_open = st.breaker_opened is not None
        st.breaker_opened = None
        st.breaker_reason = ""
        st.failures = 0
        st.incidents = 0
        st.returns.clear()  # the operator has seen to it: flapping starts counting again
        st.resolved = None
        return was_open

    # --- flapping (remediator.flap) ---

    def resolved(self, name: str, now: float, step: int) -> None:
        """An incident of ``name`` was resolved at ``now`` by the step at index ``step``:
        whether its trigger returns soon is judged from here."""
        st = self._pb(name)
        st.resolved, st.resolved_step = now, step

    def awaiting_return(self, name: str) -> float | None:
        """When ``name``'s last incident was resolved, if its trigger has not held since."""
        st = self.playbooks.get(name)
        return st.resolved if st is not None else None

    def trigger_holds(self, name: str, flap: Flap, now: float) -> Return | None:
        """``name``'s trigger holds (corroborated) at ``now``: the return of its last
        resolved incident when it came back within ``returns_within`` (kept), else None."""
        st = self.playbooks.get(name)
        if st is None or st.resolved is None:
            return None
        back = returned(flap, st.resolved, st.resolved_step, now)
        st.resolved = None
        st.returns = recent(flap, st.returns, now)
        if back is not None:
            st.returns.append(back)
        return back

    def flapping(self, pb: Playbook, flap: Flap, now: float) -> Flapping | None:
        st = self.playbooks.get(pb.name)
        return flapping(flap, st.returns, len(pb.steps), now) if st is not None else None

    # --- services ---

    def may_act(self, name: str, svc: Service, now: float) -> Verdict:
        """Whether one more action on service ``name`` fits its budget."""
        recent = [t for t in self._svc(name).actions if t > now - svc.actions_window]
        if len(recent) >= svc.max_actions:
            until = recent[0] + svc.actions_window
            return Verdict(
                False,
                Guard.SERVICE_BUDGET,
                f"{len(recent)} actions on {name} in the last {_fmt(svc.actions_window)} "
                f"(max {svc.max_actions})",
                until,
            )
        return Verdict.ok()

    def in_grace(self, name: str, svc: Service, now: float) -> Verdict:
        """Whether the service was (re)started so recently that it must not be judged yet."""
        started = self._svc(name).started
        if started is not None and now < started + svc.startup_grace:
            until = started + svc.startup_grace
            return Verdict(
                False, Guard.STARTUP_GRACE, f"start-up grace: {_fmt(until - now)} left", until
            )
        return Verdict.ok()

    def step_held(self, step: Step, services: Mapping[str, Service], now: float) -> Verdict | None:
        """The guard holding back ``step`` (a changing step on a service: its budget, its
        start-up grace), or None."""
        name = getattr(step.args, "service", None)
        if not isinstance(name, str) or not step.changes_host:
            return None
        for verdict in (
            self.may_act(name, services[name], now),
            self.in_grace(name, services[name], now),
        ):
            if not verdict.allowed:
                return verdict
        return None

    def all_steps_held(
        self, pb: Playbook, services: Mapping[str, Service], now: float
    ) -> Verdict | None:
        """The guard that would hold back every step of ``pb``, or None when some step could
        run. Such an incident would only record held steps and then count as exhausted."""
        held: Verdict | None = None
        for step in pb.steps:
            verdict = self.step_held(step, services, now)
            if verdict is None:
                return None
            held = held or verdict
        return held

    def service_started(self, name: str, now: float) -> None:
        """The service was (re)started at ``now``: its start-up grace runs from here."""
        self._svc(name).started = now

    def action_refunded(self, name: str, at: float) -> None:
        """Give back the action counted at ``at`` on service ``name``: it could not act, so it
        uses no budget and starts no start-up grace."""
        st = self._svc(name)
        if at in st.actions:
            st.actions.remove(at)
        if st.started == at:
            st.started = None

    def action_taken(self, name: str, svc: Service, now: float, *, restarted: bool) -> None:
        st = self._svc(name)
        st.actions = [t for t in st.actions if t > now - svc.actions_window] + [now]
        if restarted:
            st.started = now


def _backs_off(pb: Playbook) -> bool:
    """Whether back-off spaces ``pb``'s incidents: only a playbook that changes the host (its
    fixes may not fix); an alert-only or diagnose-only one repeats by cooldown and max_runs."""
    return pb.limits.backoff and any(s.changes_host for s in pb.steps)
