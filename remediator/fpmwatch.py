"""The threads that read ``fpm_status`` sources, off the main loop.

One thread per source (a pool that does not answer must never delay log processing), each
reading at its interval and handing the result back, stamped with the time it came, as the
probes do. ``drain`` moves what came into the detectors' state on the main thread.

The main loop is woken only when a read can change a verdict: a failure, a pool with anything
busy or queued, or a status unlike the one before. A quiet pool read every 200 ms, the same
each time, waits for the loop's next wake-up (the status file is rewritten every 10 s at
most): those wake-ups were most of the source's cost (see benchmarks.md). Its reads keep
their own times, so the verdicts are the same.

A pool that has been quiet for ``QUIET_AFTER`` (every read answered, no request in progress but
the status's, nothing queued) is read every ``quiet_interval`` instead (1 s by default): an idle
site costs five times less. The first read that finds a request in progress, a queue or no
answer brings back the configured interval.

With the source's ``service``, each reader has a :class:`~remediator.sources.fpmprocs.PoolWatch`
of the pool's workers, the children of the master that service's backend verifies.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import structlog

from remediator.config import FpmStatusSource, Service
from remediator.detect import Signals
from remediator.fpmdetect import UNANSWERED
from remediator.sources.fpmprocs import PoolWatch
from remediator.sources.fpmstatus import FpmResult, FpmStatus, StatusReader

MIN_GAP = 0.05
PENDING = 1024  # reads kept until the loop takes them (it wakes every 10 s at least)
QUIET_AFTER = 10.0  # a pool idle this long is read every quiet_interval
log = structlog.get_logger(__name__)


class FpmStatusThreads:
    def __init__(
        self,
        sources: dict[str, FpmStatusSource],
        wake: Callable[[], None],
        services: dict[str, Service] | None = None,
    ) -> None:
        self._said: dict[str, str] = {}  # the failure kind last logged, per source
        # (source, result, when it came): appended by the readers, taken by the main thread
        self.results: collections.deque[tuple[str, FpmResult, float]] = collections.deque(
            maxlen=PENDING
        )
        self._wake = wake
        self._stop = threading.Event()
        services = services or {}
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(StatusReader(n, s, _pool_watch(s, services)),),
                name=f"fpm-{n}",
                daemon=True,
            )
            for n, s in sources.items()
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _run(self, reader: StatusReader) -> None:
        every = reader.spec.interval
        due = time.monotonic()
        before: FpmStatus | None = None
        active_at = due  # when the pool was last seen doing something
        while not self._stop.is_set():
            result = reader.read()
            now = time.monotonic()
            self.results.append((reader.name, result, now))
            status = result.status
            if status is None or status != before or status.busy or status.listen_queue:
                self._wake()
            if status is None or status.busy or status.listen_queue:
                active_at = now
            before = status
            quiet = now - active_at >= QUIET_AFTER
            every = reader.spec.read_quiet_every if quiet else reader.spec.interval
            # a fixed cadence (not interval after each read): a timed-out read does not
            # stretch the gap between reads; after one that went unanswered the next starts
            # as soon as it is due (the wait was the read's), to see a stuck pool sooner
            gap = 0.0 if result.failure in UNANSWERED else MIN_GAP
            due = max(due + every, time.monotonic() + gap)
            self._stop.wait(max(0.0, due - time.monotonic()))

    def drain(self, signals: Signals, now: float) -> None:
        """Record every result that came in (on the main thread), each at the time it came
        (never later than ``now``)."""
        while True:
            try:
                name, result, at = self.results.popleft()
            except IndexError:
                return
            st = signals.fpm.get(name)
            if st is not None:
                at = min(at, now)
                st.record(
                    result.status, result.failure, result.detail, at, result.elapsed, result.workers
                )
            self._say(name, result)

    def _say(self, name: str, result: FpmResult) -> None:
        """Log when a source starts or stops failing, or fails otherwise (not every read)."""
        kind = str(result.failure) if result.failure is not None else ""
        if self._said.get(name, "") == kind:
            return
        self._said[name] = kind
        if kind:
            log.warning("fpm_status_failing", source=name, failure=kind, reason=result.detail)
        else:
            log.info("fpm_status_read", source=name, status=result.detail)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)


def _pool_watch(spec: FpmStatusSource, services: dict[str, Service]) -> PoolWatch | None:
    """A watch of the pool's workers, when the source names its service."""
    svc = services.get(spec.service) if spec.service is not None else None
    if svc is None or spec.service is None:
        return None
    from remediator.services.base import control_for  # noqa: PLC0415 - only when asked
    from remediator.system import System  # noqa: PLC0415

    control = control_for(spec.service, svc, System())

    def master() -> int | None:
        try:
            return control.master_pid()
        except Exception:  # a look at the host must never kill the reader
            return None

    return PoolWatch(master)
