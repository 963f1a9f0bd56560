"""The daemon lock: ``STATE_DIR/daemon.lock``, held by the daemon for its whole life.

Whoever holds it owns the state: the daemon, or (while no daemon runs) a command applying an
operator's switch for a moment. It is an exclusive ``flock``; the holder writes its pid and
role inside, so a command that cannot take it knows whom to ask. The kernel drops it when
its holder exits, however it exits.
"""

from __future__ import annotations

import enum
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from remediator.state import try_lock

LOCK_FILE = "daemon.lock"


class Role(enum.StrEnum):
    """Who holds the daemon lock."""

    DAEMON = "daemon"
    COMMAND = "command"  # a command applying a switch while no daemon runs


@dataclass(frozen=True)
class Holder:
    """Who holds the daemon lock (pid None: it could not be read)."""

    pid: int | None
    role: str


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DaemonLock:
    """``STATE_DIR/daemon.lock``: held by the daemon for its life, or by a command for a moment."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def try_acquire(self, role: Role) -> bool:
        """Take the lock if nobody holds it (never waits)."""
        return self._take(role, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def acquire(self, role: Role) -> None:
        """Take the lock, waiting as long as it takes."""
        self._take(role, fcntl.LOCK_EX)

    def _take(self, role: Role, how: int) -> bool:
        if self._fd is not None:
            return True
        self._fd = try_lock(self.path, f"{os.getpid()} {role}\n".encode(), 0o644, how)
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def holder(self) -> Holder | None:
        """Who holds the lock now; None when nobody does (tested without blocking anyone for
        longer than the test)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def _read_holder(fd: int) -> Holder:
    """The pid and role the holder wrote (it may be writing them just now: look again)."""
    deadline = time.monotonic() + 0.2
    while True:
        pid_text, _, role = os.pread(fd, 64, 0).decode("ascii", "replace").strip().partition(" ")
        if pid_text.isdigit() and _alive(int(pid_text)):
            return Holder(int(pid_text), role)
        if time.monotonic() > deadline:
            return Holder(None, role or "unknown")
        time.sleep(0.005)


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon that holds the lock now, or None."""
    holder = DaemonLock(state_dir).holder()
    return holder.pid if holder is not None and holder.role == Role.DAEMON else None
