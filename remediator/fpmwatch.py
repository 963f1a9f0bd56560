"""The threads that read ``fpm_status`` sources, off the main loop.

One thread per source (a pool that does not answer must never delay log processing), each
reading at its interval and handing the result back through a queue with a wake-up, as the
probes do. ``drain`` moves what came into the detectors' state on the main thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from remediator.config import FpmStatusSource
from remediator.detect import Signals
from remediator.sources.fpmstatus import FpmResult, StatusReader

MIN_GAP = 0.05


class FpmStatusThreads:
    def __init__(self, sources: dict[str, FpmStatusSource], wake: Callable[[], None]) -> None:
        self.results: queue.SimpleQueue[tuple[str, FpmResult]] = queue.SimpleQueue()
        self._wake = wake
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._run, args=(StatusReader(n, s),), name=f"fpm-{n}", daemon=True
            )
            for n, s in sources.items()
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _run(self, reader: StatusReader) -> None:
        every = reader.spec.interval
        due = time.monotonic()
        while not self._stop.is_set():
            result = reader.read()
            self.results.put((reader.name, result))
            self._wake()
            # a fixed cadence (not interval after each read): a timed-out read does not
            # stretch the gap between reads
            due = max(due + every, time.monotonic() + MIN_GAP)
            self._stop.wait(max(0.0, due - time.monotonic()))

    def drain(self, signals: Signals, now: float) -> None:
        """Record every result that came in (on the main thread, at ``now``)."""
        while True:
            try:
                name, result = self.results.get_nowait()
            except queue.Empty:
                return
            st = signals.fpm.get(name)
            if st is not None:
                st.record(result.status, result.failure, result.detail, now, result.elapsed)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
