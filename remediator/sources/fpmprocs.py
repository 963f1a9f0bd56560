"""A PHP-FPM pool's workers as the kernel sees them: stopped, and whether any made progress.

The status page is served by a worker: a pool whose every worker is busy or stopped cannot
answer it, so an unanswered status alone cannot tell a stuck pool from a busy one. ``/proc``
can, without the pool's help:

- **stopped**: a worker in state ``T`` (SIGSTOP, SIGTSTP) runs no code until it is continued;
  every worker of the pool stopped is a hang, definitively;
- **progress**: a worker that finishes a request writes its answer and reads the next request
  (``syscw``/``syscr`` in ``/proc/PID/io`` move). While they stay the same for every worker,
  no request was finished; a worker blocked in PHP (a sleep, a lock, a read that never
  returns) moves none of them. Counters that moved mean progress, however slowly (a pool only
  busy); counters can also move without a request finishing (a script reading a file in a
  loop): then the pool is taken as progressing, the safe side.

The workers are the children of the service's verified master (the service's backend finds
it: a trusted pid file, the unit's main PID), those titled ``php-fpm: pool NAME`` for this
pool. Only read, never signalled: what is done about it goes through the service's control.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_TITLE = b"php-fpm: pool "


@dataclass(frozen=True, slots=True)
class Workers:
    """One look at a pool's workers: how many, how many stopped, and since when (monotonic)
    none of them made progress (their I/O counters unchanged)."""

    count: int
    stopped: int
    quiet_since: float

    @property
    def all_stopped(self) -> bool:
        return self.count > 0 and self.stopped == self.count


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:  # noqa: PTH123 - the cheapest read of a small /proc file
            return f.read()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    raw = _read(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in raw.split()] if raw else []


def _state(pid: int) -> bytes | None:
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    fields = raw.rpartition(b")")[2].split()
    return fields[0] if fields else None


def _io(pid: int) -> tuple[int, int] | None:
    """(read syscalls, write syscalls) of ``pid``."""
    raw = _read(f"/proc/{pid}/io")
    if raw is None:
        return None
    r = w = -1
    for line in raw.splitlines():
        if line.startswith(b"syscr:"):
            r = int(line[6:])
        elif line.startswith(b"syscw:"):
            w = int(line[6:])
    return (r, w) if r >= 0 and w >= 0 else None


def _in_pool(pid: int, pool: str | None) -> bool:
    title = _read(f"/proc/{pid}/cmdline")
    if title is None or not title.startswith(_TITLE):
        return False
    return pool is None or title[len(_TITLE) :].split(b"\0", 1)[0].strip() == pool.encode()


class PoolWatch:
    """Looks at one pool's workers; remembers their counters between looks.

    ``master``: finds the service's verified master (None when there is none); asked again
    whenever the one known is gone (a restart or a reload's new master)."""

    def __init__(self, master: Callable[[], int | None]) -> None:
        self._find_master = master
        self._master: int | None = None
        self._counters: dict[int, tuple[int, int]] | None = None
        self._quiet_since = 0.0

    def forget(self) -> None:
        """The pool answered: whatever comes next is measured afresh."""
        self._counters = None

    def _master_pid(self) -> int | None:
        pid = self._master
        if pid is not None and _state(pid) not in (None, b"Z", b"X"):
            return pid
        self._master = pid = self._find_master()
        return pid

    def look(self, pool: str | None, now: float) -> Workers | None:
        """The pool's workers now (None: no master, no worker, or ``/proc`` not readable)."""
        master = self._master_pid()
        if master is None:
            return None
        counters: dict[int, tuple[int, int]] = {}
        stopped = 0
        for pid in _children(master):
            state = _state(pid)
            if state is None or state in (b"Z", b"X") or not _in_pool(pid, pool):
                continue
            io = _io(pid)
            if io is None:
                return None  # not ours to read (the daemon runs without root?): blind
            counters[pid] = io
            stopped += state == b"T"
        if not counters:
            return None
        if counters != self._counters:
            self._counters, self._quiet_since = counters, now
        return Workers(len(counters), stopped, self._quiet_since)
