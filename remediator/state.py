"""Small JSON state files in the state dir, written atomically, that survive restarts.

Times inside are monotonic seconds (``time.monotonic()``) tagged with the boot they belong to.
After a reboot the monotonic clock starts again, so stored times are carried over by their
age on the wall clock instead (clamped: a wall clock that jumped back makes them recent,
which only ever makes guards stricter). Each record declares its own time fields and reads
them through :class:`Saved` (remediator.guards).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Replace ``path`` with ``data``: temp file in the same dir, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class Saved:
    """A state document as read back: its data, and the shift that puts the monotonic times
    stored in it on this boot's clock. Records say which of their fields are times and read
    them through :meth:`time` and :meth:`times` (nothing is shifted by the shape of a key)."""

    data: dict[str, Any] = field(default_factory=dict)
    shift: float = 0.0

    def time(self, raw: dict[str, Any], key: str) -> float | None:
        """``raw[key]`` as a time on this boot's clock; None when absent or not a number."""
        value = raw.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) + self.shift
        return None

    def times(self, raw: dict[str, Any], key: str) -> list[float]:
        """``raw[key]``, a list of times, on this boot's clock (what is not a number is dropped)."""
        values = raw.get(key)
        if not isinstance(values, list):
            return []
        return [
            float(v) + self.shift
            for v in values
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]


def count(raw: dict[str, Any], key: str) -> int:
    """``raw[key]`` as a count (0 when absent or not a whole number)."""
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else ""


class JsonState:
    """One JSON document of state, with monotonic timestamps that survive restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, now: float) -> Saved:
        """The saved document, with the shift from the boot it was saved in to ``now``'s.

        Missing: empty. Corrupt: reported and empty (never a crash; guards start strict
        again from their defaults).
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Saved()
        except OSError as exc:
            log.error("state_unreadable", path=str(self.path), error=exc.strerror)
            return Saved()
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            doc = str(exc)
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
            log.error("state_corrupt", path=str(self.path), error=str(doc)[:200])
            return Saved()
        shift = 0.0
        if doc.get("boot") != boot_id():
            try:
                age = max(0.0, time.time() - float(doc.get("wall", 0)))
                shift = (now - age) - float(doc.get("mono", 0))
            except (TypeError, ValueError):
                log.error("state_corrupt", path=str(self.path), error="no valid save time")
                return Saved()
        return Saved(doc["data"], shift)

    def save(self, data: dict[str, Any], now: float) -> None:
        doc = {"boot": boot_id(), "mono": now, "wall": time.time(), "data": data}
        write_atomic(self.path, json.dumps(doc, sort_keys=True).encode() + b"\n")


def try_lock(
    path: Path, holder: bytes, mode: int, how: int = fcntl.LOCK_EX | fcntl.LOCK_NB
) -> int | None:
    """Take a flock on ``path`` (``how``: without waiting by default; created ``mode``, never
    through a symlink) and write ``holder`` into it; the open descriptor holds the lock, None
    when another process does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        fcntl.flock(fd, how)
    except BlockingIOError:
        os.close(fd)
        return None
    os.pwrite(fd, holder, 0)
    os.ftruncate(fd, len(holder))
    return fd


class HostLock:
    """An exclusive lock (flock) on a file in the state dir: one remediation at a time on the
    host, even between the daemon and a ``remediator trigger`` run by hand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._fd = try_lock(self.path, f"{os.getpid()}\n".encode(), 0o600)
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
