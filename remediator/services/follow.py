"""Following a service's state: one thread per watched service, looking when told to.

The main loop (``watch.py``) owns the events (``death.py``: a pidfd of the master, a unit's
``cgroup.events``) and tells a service's thread to look when one fires; the thread asks the
backend (``systemctl show``, the pid file and ``/proc``), which tells a crash from a stop, and
hands back its verdict with what to watch next (a pidfd of the verified master, the unit's
``cgroup.events``). Looking blocks (a subprocess, a scan of ``/proc``): never in the main loop.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from remediator.actionlog import now_rfc3339
from remediator.config import Service
from remediator.services.base import (
    ServiceControl,
    ServiceState,
    ServiceStatus,
    control_for,
    is_down,
)
from remediator.services.death import Seen
from remediator.services.systemd import cgroup_events
from remediator.system import System


@dataclass(frozen=True)
class ServiceReport:
    """What a service's watcher thread saw, for the main loop."""

    name: str
    down: bool
    detail: str
    definitive: bool  # a crash (the backend's ``crashed``): no ``lasting`` wait
    seen_by: Seen
    seen_at: str  # RFC 3339, UTC: when the event (or the look) came
    pidfd: int | None = None  # a pidfd of the verified master, now the main loop's to close
    pid: int | None = None  # the PID it names
    cgroup_events: Path | None = None  # the unit's cgroup.events, to watch


class ServicePollers:
    """One thread per service named by a ``service_down`` condition, asking its backend
    whether the master is there, when told to (an event, corroboration) and on a slow poll.

    Death is an event (``services/death.py``): the thread hands the main loop a pidfd of each
    verified master it sees (and, for a unit, its ``cgroup.events``); when one fires, the main
    loop calls :meth:`request` and the thread looks at once, then every 20 ms while systemd is
    still changing the unit, so that a crash is told from a stop by the backend's own state.
    The poll is the fallback for what events cannot see (a master started by someone else
    before it is armed, a unit whose main process is not ours to watch): every 5 s while a
    pidfd is armed, else every 500 ms for a pid file and 2 s for ``systemctl show``, and every
    100 ms / 500 ms while the service is down (the restart's new master is armed at once).
    A service only corroboration asks about (``on_demand``) gets no events and is asked when
    the engine requests it, and every 30 s."""

    PIDFILE_EVERY = 0.5
    SYSTEMD_EVERY = 2.0
    PIDFILE_DOWN_EVERY = 0.1
    SYSTEMD_DOWN_EVERY = 0.5
    ARMED_EVERY = 5.0
    SETTLE_EVERY = 0.02
    SETTLE_FOR = 3.0
    ON_DEMAND_EVERY = 30.0

    def __init__(
        self,
        services: dict[str, Service],
        wake: Callable[[], None],
        on_demand: frozenset[str] = frozenset(),
    ) -> None:
        self._on_demand = on_demand
        self.results: queue.SimpleQueue[ServiceReport] = queue.SimpleQueue()
        self._wake = wake
        self._stop = threading.Event()
        self._now: dict[str, threading.Event] = {n: threading.Event() for n in services}
        self._why: dict[str, tuple[Seen, str]] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(n, s), name=f"svc-{n}", daemon=True)
            for n, s in services.items()
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _take(self, name: str) -> tuple[Seen, str] | None:
        with self._lock:
            return self._why.pop(name, None)

    def _run(self, name: str, svc: Service) -> None:
        control = control_for(name, svc, System())
        events = name not in self._on_demand
        last: bool | None = None
        armed: int | None = None  # the PID whose pidfd the main loop holds, not yet fired
        cause: tuple[Seen, str] | None = None  # the event being followed while systemd settles
        settle_until = 0.0
        main: int | None = None  # the master last seen
        died: int | None = None  # the master that was live when the event came
        asked = self._now[name]
        while not self._stop.is_set():
            asked.clear()
            why = self._take(name)
            if why is not None:
                if why[0] is Seen.PIDFD:
                    armed = None
                if why[0] is not Seen.ASKED:
                    cause, settle_until = why, time.monotonic() + self.SETTLE_FOR
                    died = main
            seen_by, seen_at = cause or why or (Seen.POLL, now_rfc3339())
            state: ServiceState | None = None
            try:
                state = control.state()
                down, detail = is_down(state, svc)
            except Exception as exc:  # a probe of the host must never kill the daemon
                down, detail = False, f"cannot tell: {type(exc).__name__}: {exc}"
            report = ServiceReport(
                name, down, detail, down and state is not None and state.crashed, seen_by, seen_at
            )
            if events and state is not None:
                report = self._arm(control, state, armed, report)
                armed = report.pid if report.pidfd is not None else armed
            self.results.put(report)
            if down != last or report.pidfd is not None:
                self._wake()
                last = down
            main = state.master_pid if state is not None else None
            # After an event, look again every 20 ms while systemd is still changing the unit,
            # or has not yet heard that its main process died (it still names it as running).
            changing = state is not None and (
                state.status is ServiceStatus.CHANGING
                or (state.status is ServiceStatus.RUNNING and died is not None and main == died)
            )
            if not down and changing and time.monotonic() < settle_until:
                every = self.SETTLE_EVERY
            else:
                cause = None
                every = self._every(name, svc, down=down, armed=armed is not None)
            asked.wait(every)

    def _arm(
        self, control: ServiceControl, state: ServiceState, armed: int | None, report: ServiceReport
    ) -> ServiceReport:
        """The report with a new pidfd for a master not armed yet, and the unit's cgroup."""
        cgroup = (
            cgroup_events(state.properties.get("ControlGroup", "")) if state.properties else None
        )
        fd = None
        if state.master_pid is not None and state.master_pid != armed:
            fd = control.open_master_pidfd(state)
        if fd is None and cgroup is None:
            return report
        return dataclasses.replace(
            report,
            pidfd=fd,
            pid=state.master_pid if fd is not None else None,
            cgroup_events=cgroup,
        )

    def _every(self, name: str, svc: Service, *, down: bool, armed: bool) -> float:
        if name in self._on_demand:
            return self.ON_DEMAND_EVERY
        if down:
            return self.SYSTEMD_DOWN_EVERY if svc.unit else self.PIDFILE_DOWN_EVERY
        if armed:
            return self.ARMED_EVERY
        return self.SYSTEMD_EVERY if svc.unit else self.PIDFILE_EVERY

    def request(self, name: str, why: Seen = Seen.ASKED) -> None:
        """Ask ``name``'s backend now rather than at its next poll (an event, corroboration)."""
        ev = self._now.get(name)
        if ev is None:
            return
        with self._lock:
            old = self._why.get(name)
            if old is None or old[0] in (Seen.ASKED, Seen.POLL) or why is Seen.PIDFD:
                self._why[name] = (why, now_rfc3339())
        ev.set()

    def stop(self) -> None:
        self._stop.set()
        for ev in self._now.values():
            ev.set()
        for t in self._threads:
            t.join(timeout=5)
        while True:  # pidfds handed over that nobody will take now
            try:
                report = self.results.get_nowait()
            except queue.Empty:
                return
            if report.pidfd is not None:
                os.close(report.pidfd)
