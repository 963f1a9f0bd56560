"""The live watcher: sources in, signals out, the engine ticked as soon as anything changes.

One thread (the caller's) owns the log tailer, the journal readers, the detectors and the
engine, and sleeps in ``select`` on their descriptors: a line appended to a log is parsed,
counted and judged within the same wake-up, with no timer in between. Probes run in threads of
their own (a hanging endpoint must never delay log processing) and hand results back through
a queue and a wake-up pipe. Lines are counted at their arrival time on the monotonic clock.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from remediator.config import (
    Config,
    DnsSource,
    FpmStatusSource,
    HostSource,
    JournalSource,
    ProbeSource,
)
from remediator.detect import Signals
from remediator.feed import Feeder
from remediator.fpmwatch import FpmStatusThreads
from remediator.services.death import DeathWatch, Seen
from remediator.services.follow import ServicePollers, ServiceReport
from remediator.sources import host as hostmod
from remediator.sources.dns import DnsThreads
from remediator.sources.probe import Prober, ProbeResult
from remediator.sources.tail import Backend, Tailer
from remediator.state import JsonState

log = structlog.get_logger(__name__)

# Offsets are saved (write, fsync, rename, fsync the dir) at most this often while lines come:
# once a second, a probe going through the web server (one access-log line a second) made it a
# third of an idle daemon's CPU. A daemon that crashes reads at most this much again.
CHECKPOINT_EVERY = 5.0
MIN_PROBE_GAP = 0.05
BATCH = 0.04  # inotify events merged this long: 1,000 lines/s cost 25 wake-ups, not 1,000


class ProbeThreads:
    """One thread per probe; results come back through a queue, stamped with the time they
    came, with a wake-up unless nothing changed: a probe that passes, as it passed before
    and as nobody asked now, waits for the loop's next wake-up (it keeps its own time, so
    the verdicts are the same; such wake-ups were a third of an idle daemon's)."""

    def __init__(self, probes: dict[str, ProbeSource], wake: Callable[[], None]) -> None:
        self.results: queue.SimpleQueue[tuple[str, ProbeResult, float]] = queue.SimpleQueue()
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
        passed = False  # the result before this one passed
        requested = True  # the first result, or one asked for (verification): wake at once
        while not self._stop.is_set():
            asked.clear()
            result = prober.run()
            self.results.put((name, result, time.monotonic()))
            if requested or not (result.ok and passed):
                self._wake()
            passed = result.ok
            requested = asked.wait(prober.spec.interval)
            if requested:
                self._stop.wait(MIN_PROBE_GAP)

    def stop(self) -> None:
        self._stop.set()
        for ev in self._now.values():
            ev.set()
        for t in self._threads:
            t.join(timeout=5)


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
        resolving = {n: s for n, s in config.sources.items() if isinstance(s, DnsSource)}
        self.dns = DnsThreads({n: s for n, s in resolving.items() if n in signals.dns}, self.wake)
        fpms = {n: s for n, s in config.sources.items() if isinstance(s, FpmStatusSource)}
        self.fpm = FpmStatusThreads(
            {n: s for n, s in fpms.items() if n in signals.fpm}, self.wake, config.services
        )
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
        self.extra_fds: list[int] = []  # the owner's: readable ones only end the wait
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
        self.fpm.start()
        self.services.start()
        self.dns.start()

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
        fds += self.extra_fds
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
        self._answers(now)
        if self.host_interval is not None and now >= self._host_due:
            self._host_due = now + self.host_interval
            self.signals.host = hostmod.reading(hostmod.snapshot())
        if self._unsaved and now - self._last_checkpoint >= CHECKPOINT_EVERY:
            self.checkpoint(now)

    def _answers(self, now: float) -> None:
        """Record what the probe, pool, service and DNS threads found since the last look."""
        probe_failed = False
        while True:
            try:
                pname, result, at = self.probes.results.get_nowait()
            except queue.Empty:
                break
            st = self.signals.probes.get(pname)
            if st is not None:
                st.record(result.ok, result.detail, min(at, now))
                probe_failed = probe_failed or not result.ok
        if probe_failed:
            # What the probe saw (a 502, say) is in the logs already, with its cause; a batch
            # interval must not let the probe's verdict be judged alone first.
            for path, lines in self.tailer.read_now(now).items():
                if lines:
                    self.feeder.feed(path, lines, now)
        self.fpm.drain(self.signals, now)
        while True:
            try:
                report = self.services.results.get_nowait()
            except queue.Empty:
                break
            self._service_report(report, now)
        while True:
            try:
                dname, found = self.dns.results.get_nowait()
            except queue.Empty:
                break
            self.signals.dns[dname].record(found.mismatch, found.detail, found.answers(), now)

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
        self.fpm.stop()
        self.services.stop()
        self.dns.stop()
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
