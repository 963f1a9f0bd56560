"""Service death as an event: what the kernel tells the main loop, so nothing has to poll.

- A **pidfd** (``pidfd_open(2)``) of a verified master (a pid-file service's, or a unit's main
  process) becomes readable the moment that process exits: before anyone reaps it, whoever
  its parent is. It is opened only for a master that passed the checks of ``trust.py`` (see
  ``open_master_pidfd`` in the backends), so a pid file planted by another user never gets one.
- A unit's ``cgroup.events`` says ``populated 0`` once the last process of its cgroup is gone
  (inotify ``IN_MODIFY`` on the file, which a read-only cgroup mount allows); the file going
  away (``IN_IGNORED``: systemd removed the cgroup of a stopped unit) is news too.

Neither says *why*: an operator's stop, a reload's old master and a crash all end a process.
So an event only makes the service's thread look now (``follow.py``), and the
backend's state decides: a pid file still naming the dead master, or a unit failed with a
crash's result, is an outage; a pid file removed by a clean exit, a systemd job in progress or
a unit stopped on purpose is not.

:class:`DeathWatch` belongs to the main loop, which owns every descriptor here: the watcher
threads open a pidfd and hand it over with their report; only the main loop closes it.
"""

from __future__ import annotations

import contextlib
import enum
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from remediator.sources.inotify import Inotify, InotifyUnavailableError, Mask

log = structlog.get_logger(__name__)

_CGROUP_MASK = Mask.MODIFY


class Seen(enum.StrEnum):
    """How a service's state came to be looked at."""

    PIDFD = "pidfd"  # its master (main process) exited
    CGROUP_EVENTS = "cgroup.events"  # its unit's cgroup emptied or went away
    POLL = "poll"  # the slow poll, for what events cannot see
    ASKED = "asked"  # corroboration asked


def open_pidfd(pid: int) -> int | None:
    """A close-on-exec pidfd for ``pid``, or None (gone, or no pidfd on this kernel)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


@dataclass
class _Cgroup:
    path: Path
    wd: int
    ino: int


class DeathWatch:
    """The pidfds and ``cgroup.events`` watches of every watched service, for one main loop."""

    def __init__(self) -> None:
        self._pidfds: dict[str, tuple[int, int | None]] = {}  # name -> (fd, pid)
        self._by_fd: dict[int, str] = {}
        self._cgroups: dict[str, _Cgroup] = {}
        self._inotify: Inotify | None = None
        self._inotify_failed = False

    # -- what the watcher threads hand over

    def arm_pidfd(self, name: str, fd: int, pid: int | None) -> None:
        """Watch ``fd`` (now ours to close) for ``name``; replaces any older one."""
        self.disarm_pidfd(name)
        self._pidfds[name] = (fd, pid)
        self._by_fd[fd] = name

    def disarm_pidfd(self, name: str) -> None:
        old = self._pidfds.pop(name, None)
        if old is not None:
            self._by_fd.pop(old[0], None)
            os.close(old[0])

    def pidfd_of(self, name: str) -> int | None:
        """The PID whose pidfd is armed for ``name``."""
        armed = self._pidfds.get(name)
        return None if armed is None else armed[1]

    def watch_cgroup(self, name: str, events: Path) -> None:
        """Watch a unit's ``cgroup.events`` (again, if its cgroup was made anew)."""
        current = self._cgroups.get(name)
        try:
            ino = events.stat().st_ino
        except OSError:
            return  # no cgroup (yet): the unit is not running
        # The same path may be a new cgroup (the unit was restarted): kernfs does not always
        # tell a watch that its file went, so the inode says whether it is still the same.
        if current is not None and current.path == events and current.ino == ino:
            return
        inotify = self._inotify_instance()
        if inotify is None:
            return
        if current is not None:
            with contextlib.suppress(OSError):
                inotify.rm_watch(current.wd)
            del self._cgroups[name]
        try:
            wd = inotify.add_watch(events, _CGROUP_MASK)
        except OSError as exc:
            log.info("cgroup_events_unwatched", service=name, path=str(events), error=str(exc))
            return
        self._cgroups[name] = _Cgroup(events, wd, ino)

    def _inotify_instance(self) -> Inotify | None:
        if self._inotify is None and not self._inotify_failed:
            try:
                self._inotify = Inotify()
            except InotifyUnavailableError as exc:
                self._inotify_failed = True
                log.warning("cgroup_events_unavailable", error=str(exc), fallback="poll")
        return self._inotify

    # -- the main loop

    def fds(self) -> list[int]:
        """Descriptors to wait on for reading."""
        out = list(self._by_fd)
        if self._inotify is not None and self._cgroups:
            out.append(self._inotify.fileno())
        return out

    def fired(self, readable: set[int]) -> list[tuple[str, Seen]]:
        """The services whose master exited or whose cgroup emptied (or went), among the
        ``readable`` descriptors; a fired pidfd is closed (the next master gets a new one)."""
        out: list[tuple[str, Seen]] = []
        for fd in [fd for fd in readable if fd in self._by_fd]:
            name = self._by_fd[fd]
            self.disarm_pidfd(name)
            out.append((name, Seen.PIDFD))
        ino = self._inotify
        if ino is not None and ino.fileno() in readable:
            by_wd = {c.wd: n for n, c in self._cgroups.items()}
            for ev in ino.read_events():
                unit = by_wd.get(ev.wd)
                if unit is None:
                    continue
                if ev.mask & Mask.IGNORED:
                    self._cgroups.pop(unit, None)  # the cgroup is gone: watched anew later
                    out.append((unit, Seen.CGROUP_EVENTS))
                elif unit in self._cgroups and _emptied(self._cgroups[unit].path):
                    out.append((unit, Seen.CGROUP_EVENTS))
        return list(dict.fromkeys(out))

    def close(self) -> None:
        for name in list(self._pidfds):
            self.disarm_pidfd(name)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self._cgroups.clear()


def _emptied(events: Path) -> bool:
    """Whether ``cgroup.events`` says ``populated 0`` (a file that is gone counts too)."""
    try:
        text = events.read_text()
    except OSError:
        return True
    return "populated 0" in text.splitlines()
