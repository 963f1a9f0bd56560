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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from remediator.config import Guards as GuardsConfig
from remediator.config import Service
from remediator.playbook import Playbook
from remediator.state import JsonState

log = structlog.get_logger(__name__)


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


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def pause_verdict(pause: dict[str, Any], now: float) -> Verdict:
    """What a pause (as kept in ``pause.json``) says at ``now``: who paused, why, how long."""
    if not pause:
        return Verdict.ok()
    until = pause.get("until_at")
    if until is not None and now >= until:
        return Verdict.ok()
    why = pause.get("reason") or "maintenance"
    by = f" by {pause['user']}" if pause.get("user") else ""
    left = "" if until is None else f" for {_fmt(until - now)} more"
    return Verdict(False, Guard.PAUSED, f"paused{by} ({why}){left}", until)


def stored_pause(state_dir: Path, now: float) -> Verdict:
    """The pause kept in ``state_dir``: what a daemon started now would apply."""
    return pause_verdict(JsonState(state_dir / PAUSE_FILE).load(now), now)


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
        data = self._store.load(now)
        self.playbooks: dict[str, dict[str, Any]] = data.get("playbooks", {})
        self.services: dict[str, dict[str, Any]] = data.get("services", {})
        self.pause: dict[str, Any] = self._pause_file.load(now)
        # (playbook, incident id) of runs a daemon died in: the engine closes their records
        self.interrupted: list[tuple[str, str | None]] = []
        for name, st in self.playbooks.items():
            started = st.pop("started_at", None)
            incident = st.pop("incident", None)
            if started is not None:  # the daemon died mid-run: count it as a run that failed
                log.warning("run_interrupted", playbook=name, incident=incident)
                st["last_end_at"] = max(started, st.get("last_end_at") or started)
                st["failures"] = st.get("failures", 0) + 1
                self.interrupted.append((name, incident))

    def save(self, now: float) -> None:
        self._store.save({"playbooks": self.playbooks, "services": self.services}, now)

    def _pb(self, name: str) -> dict[str, Any]:
        return self.playbooks.setdefault(name, {"runs_at": [], "incidents": 0, "failures": 0})

    def _svc(self, name: str) -> dict[str, Any]:
        return self.services.setdefault(name, {"actions_at": []})

    # --- maintenance pause ---

    def paused(self, now: float) -> Verdict:
        return pause_verdict(self.pause, now)

    def set_pause(
        self, now: float, duration: float | None, reason: str = "", *, user: str = ""
    ) -> None:
        """``remediator pause``: every action becomes a logged no-op until resumed/expired."""
        self.pause = {
            "since_at": now,
            "until_at": None if duration is None else now + duration,
            "reason": reason,
            "user": user,
        }
        self._pause_file.save(self.pause, now)

    def resume(self) -> None:
        self.pause = {}
        self._pause_file.path.unlink(missing_ok=True)

    # --- playbooks ---

    def may_run(self, pb: Playbook, now: float) -> Verdict:
        """Whether ``pb`` may start a run now."""
        paused = self.paused(now)
        if not paused.allowed:
            return paused
        st = self._pb(pb.name)
        opened = st.get("breaker_opened_at")
        if opened is not None:
            open_for = self.config.breaker.open_for
            if open_for and now >= opened + open_for:
                self.reset(pb.name)
                st = self._pb(pb.name)
            else:
                until = opened + open_for if open_for else None
                why = st.get("breaker_reason", "remediation kept failing")
                return Verdict(
                    False,
                    Guard.BREAKER,
                    f"breaker open ({why}); `remediator reset {pb.name}` closes it",
                    until,
                )
        last_end = st.get("last_end_at")
        if last_end is not None and now < last_end + pb.limits.cooldown:
            until = last_end + pb.limits.cooldown
            return Verdict(False, Guard.COOLDOWN, f"cooldown: {_fmt(until - now)} left", until)
        recent = [t for t in st["runs_at"] if t > now - pb.limits.per]
        if len(recent) >= pb.limits.max_runs:
            until = recent[0] + pb.limits.per
            return Verdict(
                False,
                Guard.MAX_RUNS,
                f"{len(recent)} runs in the last {_fmt(pb.limits.per)} (max {pb.limits.max_runs})",
                until,
            )
        if pb.limits.backoff and last_end is not None:
            wait = self._backoff_wait(st, now)
            if now < last_end + wait:
                until = last_end + wait
                return Verdict(False, Guard.BACKOFF, f"back-off: {_fmt(until - now)} left", until)
        return Verdict.ok()

    def _backoff_wait(self, st: dict[str, Any], now: float) -> float:
        cfg = self.config.backoff
        last_end = st.get("last_end_at")
        if last_end is not None and now - last_end >= cfg.reset_after:
            st["incidents"] = 0
        n = st.get("incidents", 0)
        if n <= 0:
            return 0.0
        return float(min(cfg.initial * 2 ** (n - 1), cfg.max))

    def run_started(self, pb: Playbook, now: float, incident: str | None = None) -> None:
        st = self._pb(pb.name)
        if incident is not None:
            st["incident"] = incident
        self._backoff_wait(st, now)  # forget old incidents after a long healthy time
        st["runs_at"] = [t for t in st["runs_at"] if t > now - pb.limits.per] + [now]
        st["incidents"] = st.get("incidents", 0) + 1
        st["started_at"] = now

    def run_finished(self, pb: Playbook, now: float, *, success: bool | None) -> bool:
        """Record a run's end (``success`` None: nothing was tried, the failure streak stays
        as it was); returns True when this opened the breaker."""
        st = self._pb(pb.name)
        st.pop("incident", None)
        st["last_end_at"] = now
        st.pop("started_at", None)
        if success is None:
            return False
        if success:
            st["failures"] = 0
            return False
        st["failures"] = st.get("failures", 0) + 1
        if st["failures"] >= self.config.breaker.failures and "breaker_opened_at" not in st:
            self.open_breaker(pb.name, now, f"{st['failures']} failed runs in a row")
            return True
        return False

    def open_breaker(self, name: str, now: float, reason: str) -> None:
        st = self._pb(name)
        st["breaker_opened_at"] = now
        st["breaker_reason"] = reason

    def breaker_open(self, name: str, now: float) -> bool:
        """Whether ``name``'s breaker holds it back at ``now`` (opened, not yet timed out)."""
        opened = self.playbooks.get(name, {}).get("breaker_opened_at")
        open_for = self.config.breaker.open_for
        return opened is not None and not (open_for and now >= opened + open_for)

    def reset(self, name: str) -> bool:
        """Close the breaker and forget failures and back-off; False if nothing was open."""
        st = self._pb(name)
        was_open = "breaker_opened_at" in st
        for key in ("breaker_opened_at", "breaker_reason"):
            st.pop(key, None)
        st["failures"] = 0
        st["incidents"] = 0
        return was_open

    # --- services ---

    def may_act(self, name: str, svc: Service, now: float) -> Verdict:
        """Whether one more action on service ``name`` fits its budget."""
        st = self._svc(name)
        recent = [t for t in st["actions_at"] if t > now - svc.actions_window]
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
        started = self._svc(name).get("started_at")
        if started is not None and now < started + svc.startup_grace:
            until = started + svc.startup_grace
            return Verdict(
                False, Guard.STARTUP_GRACE, f"start-up grace: {_fmt(until - now)} left", until
            )
        return Verdict.ok()

    def service_started(self, name: str, now: float) -> None:
        """The service was (re)started at ``now``: its start-up grace runs from here."""
        self._svc(name)["started_at"] = now

    def action_taken(self, name: str, svc: Service, now: float, *, restarted: bool) -> None:
        st = self._svc(name)
        st["actions_at"] = [t for t in st["actions_at"] if t > now - svc.actions_window] + [now]
        if restarted:
            st["started_at"] = now
