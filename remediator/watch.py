"""The live watcher: sources in, signals out, the engine ticked as soon as anything changes.

One thread (the caller's) owns the log tailer, the journal readers, the detectors and the
engine, and sleeps in ``select`` on their descriptors: a line appended to a log is parsed,
counted and judged within the same wake-up, with no timer in between. Probes run in threads of
their own (a hanging endpoint must never delay log processing) and hand results back through
a queue and a wake-up pipe. Lines are counted at their arrival time on the monotonic clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from remediator.actionlog import now_rfc3339
from remediator.config import (
    Config,
    HostSource,
    JournalSource,
    ProbeSource,
    Service,
)
from remediator.detect import Signals
from remediator.feed import Feeder
from remediator.services.base import (
    ServiceControl,
    ServiceState,
    ServiceStatus,
    control_for,
    is_down,
)
from remediator.services.death import DeathWatch, Seen
from remediator.services.systemd import cgroup_events
from remediator.sources import host as hostmod
from remediator.sources.probe import Prober, ProbeResult
from remediator.sources.tail import Backend, Tailer
from remediator.state import JsonState
from remediator.system import System

log = structlog.get_logger(__name__)

CHECKPOINT_EVERY = 1.0
MIN_PROBE_GAP = 0.05
BATCH = 0.04  # inotify events merged this long: 1,000 lines/s cost 25 wake-ups, not 1,000


class ProbeThreads:
    """One thread per probe; results come back through a queue, with a wake-up."""

    def __init__(self, probes: dict[str, ProbeSource], wake: Callable[[], None]) -> None:
        self.results: queue.SimpleQueue[tuple[str, ProbeResult]] = queue.SimpleQueue()
        self._wake = wake
        self._stop = threading.Event()
        self._now: dict[str, threading.Event] = {n: threading.Event() for n in probes}
        self._threads = [
            threading.Thread(
                target=self._run, args=(n, Prober(n, p)), name=f"probe-{n}", daemon=True
            )
            for n, p in probes.items()
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def request(self, name: str) -> None:
        """Probe ``name`` now rather than at its next interval (verification)."""
        ev = self._now.get(name)
        if ev is not None:
            ev.set()

    def _run(self, name: str, prober: Prober) -> None:
        asked = self._now[name]
        while not self._stop.is_set():
            asked.clear()
            result = prober.run()
            self.results.put((name, result))
            self._wake()
            if asked.wait(prober.spec.interval):
                self._stop.wait(MIN_PROBE_GAP)

    def stop(self) -> None:
        self._stop.set()
        for ev in self._now.values():
            ev.set()
        for t in self._threads:
            t.join(timeout=5)


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


class Watcher:
    """Owns every source; ``run_once`` waits for input and feeds it to the signals."""

    def __init__(
        self,
        config: Config,
        signals: Signals,
        *,
        state_dir: Path | None,
        backend: Backend = Backend.AUTO,
        feeder: Feeder | None = None,
    ) -> None:
        self.config = config
        self.signals = signals
        self.feeder = feeder or Feeder(config, signals)
        self.tailer = Tailer(
            self.feeder.paths, state_dir=state_dir, backend=backend, batch_interval=BATCH
        )
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        probes = {n: s for n, s in config.sources.items() if isinstance(s, ProbeSource)}
        self.probes = ProbeThreads(probes, self.wake)
        watched = {n for n in signals.services if n in config.services}
        self.deaths = DeathWatch()
        self._seen: dict[str, tuple[bool, str]] = {}
        self.services = ServicePollers(
            {n: config.services[n] for n in watched},
            self.wake,
            frozenset(n for n in watched if signals.services[n].on_demand),
        )
        hosts = [s for s in config.sources.values() if isinstance(s, HostSource)]
        self.host_interval = min((h.interval for h in hosts), default=None)
        self._host_due = 0.0
        self._last_checkpoint = time.monotonic()
        self._saved_cursors: dict[str, str] = {}
        self._unsaved = False
        # state_dir None: a passing run (``trigger``) that must not move the daemon's offsets
        self._cursors = JsonState(state_dir / "journal.json") if state_dir else None
        saved = self._cursors.load(time.monotonic()).data if self._cursors else {}
        self.journals: dict[str, Any] = {}
        for name, src in config.sources.items():
            if isinstance(src, JournalSource):
                cursor = saved.get(name)
                cursor = cursor if isinstance(cursor, str) else None
                self.journals[name] = _open_journal(name, src, cursor)

    def start(self) -> None:
        self.probes.start()
        self.services.start()

    def wake(self) -> None:
        """Interrupt the wait (from any thread)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def run_once(self, now: float, max_wait: float | None) -> None:
        """Wait until input arrives (or ``max_wait`` passes), then feed everything that came."""
        timeout = self.tailer.timeout(now)
        for limit in (max_wait, self._host_wait(now), self._checkpoint_wait(now)):
            if limit is not None:
                timeout = limit if timeout is None else min(timeout, limit)
        fds = [self.tailer.fileno(), self._wake_r, *self.deaths.fds()]
        fds += [j.fileno() for j in self.journals.values() if j is not None]
        readable, _, _ = select.select([fd for fd in fds if fd >= 0], [], [], timeout)
        for name, how in self.deaths.fired(set(readable)):
            self.services.request(name, how)  # its thread looks now: a crash, or a stop?
        now = time.monotonic()
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        for path, lines in self.tailer.process(now).items():
            if lines:
                self.feeder.feed(path, lines, now)
                self._unsaved = True
        for name, j in self.journals.items():
            if j is None:
                continue
            j.process()
            msgs = [e.message for e in j.read()]
            if msgs:
                self.feeder.feed_messages(name, msgs, now)
        probe_failed = False
        while True:
            try:
                pname, result = self.probes.results.get_nowait()
            except queue.Empty:
                break
            st = self.signals.probes.get(pname)
            if st is not None:
                st.record(result.ok, result.detail, now)
                probe_failed = probe_failed or not result.ok
        if probe_failed:
            # What the probe saw (a 502, say) is in the logs already, with its cause; a batch
            # interval must not let the probe's verdict be judged alone first.
            for path, lines in self.tailer.read_now(now).items():
                if lines:
                    self.feeder.feed(path, lines, now)
        while True:
            try:
                report = self.services.results.get_nowait()
            except queue.Empty:
                break
            self._service_report(report, now)
        if self.host_interval is not None and now >= self._host_due:
            self._host_due = now + self.host_interval
            self.signals.host = hostmod.reading(hostmod.snapshot())
        if self._unsaved and now - self._last_checkpoint >= CHECKPOINT_EVERY:
            self.checkpoint(now)

    def _service_report(self, report: ServiceReport, now: float) -> None:
        """Arm what the report hands over, record its verdict, and log a change."""
        if report.pidfd is not None:
            self.deaths.arm_pidfd(report.name, report.pidfd, report.pid)
        if report.cgroup_events is not None:
            self.deaths.watch_cgroup(report.name, report.cgroup_events)
        self.signals.services[report.name].record(
            report.down,
            report.detail,
            now,
            definitive=report.definitive,
            seen_by=str(report.seen_by),
            seen_at=report.seen_at,
        )
        # Logged when the verdict changes, and once for each event looked at (an operator's
        # stop is seen, and found not to be an outage), not for each look while it settles.
        key = (report.down, report.seen_at if report.seen_by is not Seen.POLL else "")
        if self._seen.get(report.name) != key:
            self._seen[report.name] = key
            log.info(
                "service_seen",
                service=report.name,
                down=report.down,
                detail=report.detail,
                definitive=report.definitive,
                seen_by=str(report.seen_by),
                seen_at=report.seen_at,
                pidfd_for=self.deaths.pidfd_of(report.name),
            )

    def _host_wait(self, now: float) -> float | None:
        return None if self.host_interval is None else max(0.0, self._host_due - now)

    def _checkpoint_wait(self, now: float) -> float | None:
        if not self._unsaved:  # idle: nothing to save, no reason to wake
            return None
        return max(0.0, self._last_checkpoint + CHECKPOINT_EVERY - now)

    def checkpoint(self, now: float) -> None:
        """Offsets and journal cursors to disk, so a restart resumes where this left off."""
        self._last_checkpoint = now
        self._unsaved = False
        self.tailer.checkpoint()
        cursors = {n: j.cursor for n, j in self.journals.items() if j is not None and j.cursor}
        if self._cursors and cursors and cursors != self._saved_cursors:
            self._cursors.save(cursors, now)
            self._saved_cursors = cursors

    def close(self) -> None:
        self.probes.stop()
        self.services.stop()
        self.deaths.close()
        self.checkpoint(time.monotonic())
        self.tailer.close()
        for j in self.journals.values():
            if j is not None:
                j.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _open_journal(name: str, src: JournalSource, cursor: str | None) -> Any:
    """A journal follower, or None (blind, reported) where there is no journal to read."""
    try:
        from remediator.sources.journal import JournalFollower, systemd_main_pids  # noqa: PLC0415

        # PHP-FPM's workers (the PHP code) share the unit's cgroup: its master's messages only.
        master = systemd_main_pids(src.unit) if src.format == "php-fpm" else None
        return JournalFollower(src.unit, cursor=cursor, master=master)
    except (ImportError, OSError) as exc:
        log.warning("source_blind", source=name, reason=f"journal unavailable: {exc}")
        return None
