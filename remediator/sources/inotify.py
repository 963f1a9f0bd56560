"""A minimal inotify binding: libc's ``inotify_*`` through ctypes, events parsed with struct.

Only what the tailer needs: one non-blocking, close-on-exec instance, watches added and removed by
path, and a ``read_events()`` that drains every queued event. No threads, no callbacks: the owner
puts ``fileno()`` in its own ``select()``/``poll()``.
"""

from __future__ import annotations

import ctypes
import enum
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Generic, TypeVar

K = TypeVar("K")
_EVENT = struct.Struct(
    "iIII"
)  # struct inotify_event: wd, mask, cookie, len; then len bytes of name
_READ_SIZE: Final = 64 * 1024


class Mask(enum.IntFlag):
    """Event and watch flags from ``<sys/inotify.h>``."""

    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    UNMOUNT = 0x00002000
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    ISDIR = 0x40000000


class InotifyUnavailableError(OSError):
    """inotify cannot be used here: no such call in libc, or the kernel refused an instance."""


@dataclass(frozen=True, slots=True)
class Event:
    """One inotify event: the watch it came from, what happened, and the entry name for a dir."""

    wd: int
    mask: int
    cookie: int
    name: bytes


class _Libc:
    """The three libc entry points, typed, with errno kept for the caller."""

    def __init__(self) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self.init1 = libc.inotify_init1
            self.add_watch = libc.inotify_add_watch
            self.rm_watch = libc.inotify_rm_watch
        except (OSError, AttributeError) as exc:
            raise InotifyUnavailableError(f"libc has no inotify: {exc}") from exc
        self.init1.argtypes = [ctypes.c_int]
        self.init1.restype = ctypes.c_int
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        self.rm_watch.restype = ctypes.c_int


_libc: _Libc | None = None


def _get_libc() -> _Libc:
    global _libc  # noqa: PLW0603 - one binding per process, made on first use
    if _libc is None:
        _libc = _Libc()
    return _libc


def _os_error(path: Path | None = None) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), None if path is None else str(path))


class Inotify:
    """One inotify instance (``IN_NONBLOCK | IN_CLOEXEC``)."""

    def __init__(self) -> None:
        libc = _get_libc()
        fd: int = libc.init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise InotifyUnavailableError(err, f"inotify_init1: {os.strerror(err)}")
        self._libc = libc
        self._fd = fd

    def fileno(self) -> int:
        """The descriptor to wait on: readable when events are queued."""
        return self._fd

    def add_watch(self, path: Path | str, mask: int) -> int:
        """Watch ``path`` (symlinks followed) for ``mask``; the same inode gives the same wd."""
        wd: int = self._libc.add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            raise _os_error(Path(path))
        return wd

    def rm_watch(self, wd: int) -> None:
        """Stop a watch; one the kernel already dropped (file gone) is not an error."""
        if self._libc.rm_watch(self._fd, wd) < 0 and ctypes.get_errno() != 22:  # EINVAL
            raise _os_error()

    def read_events(self) -> list[Event]:
        """Every event queued now (none when nothing is queued); never blocks."""
        events: list[Event] = []
        while True:
            try:
                buf = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return events
            if not buf:
                return events
            events.extend(_parse(buf))
            if len(buf) < _READ_SIZE - 4096:  # a short read took everything queued
                return events

    def close(self) -> None:
        """Close the instance; every watch goes with it."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _parse(buf: bytes) -> list[Event]:
    events: list[Event] = []
    offset = 0
    size = _EVENT.size
    end = len(buf)
    while offset + size <= end:
        wd, mask, cookie, length = _EVENT.unpack_from(buf, offset)
        name = buf[offset + size : offset + size + length].rstrip(b"\0")
        events.append(Event(wd, mask, cookie, name))
        offset += size + length
    return events


FILE_MASK: Final = Mask.MODIFY | Mask.ATTRIB | Mask.CLOSE_WRITE | Mask.MOVE_SELF | Mask.DELETE_SELF
DIR_MASK: Final = (
    Mask.CREATE
    | Mask.MOVED_TO
    | Mask.MOVED_FROM
    | Mask.DELETE
    | Mask.ATTRIB
    | Mask.MOVE_SELF
    | Mask.DELETE_SELF
    | Mask.ONLYDIR
)
_DATA_ONLY: Final = Mask.MODIFY | Mask.CLOSE_WRITE
_DIR_GONE: Final = Mask.IGNORED | Mask.MOVE_SELF | Mask.DELETE_SELF | Mask.UNMOUNT


@dataclass(frozen=True, slots=True)
class Wakeups(Generic[K]):
    """What a batch of events asks of the owner of the watched keys."""

    keys: dict[K, bool]
    """Each key to look at again; True when its path must be looked up again (a rename, a new
    entry, metadata), False when only the data of its open files changed."""
    unwatched: list[K]
    """Keys whose directory watch went away (directory removed or moved): watch them again."""
    overflow: bool
    """The kernel queue overflowed: events were lost, so everything must be looked at."""


@dataclass(slots=True)
class _Dir(Generic[K]):
    wd: int
    names: dict[bytes, list[K]]


class Watches(Generic[K]):
    """One inotify instance shared by many keys (followed files).

    For each key it watches the directory entry of its path (so creations, renames, deletions and
    permission changes of that name wake it) and each file it holds open (so appends wake it, also
    after the file was renamed or deleted). The same directory or inode watched for several keys is
    one kernel watch, counted.
    """

    def __init__(self) -> None:
        self._ino = Inotify()
        self._dirs: dict[int, _Dir[K]] = {}
        self._dir_of: dict[K, int] = {}
        self._files: dict[int, list[K]] = {}

    def fileno(self) -> int:
        return self._ino.fileno()

    def close(self) -> None:
        self._ino.close()

    def watch_entry(self, key: K, path: Path) -> bool:
        """Watch ``path``'s name in its directory; False if the directory cannot be watched.
        Again for the same key: nothing changes unless the directory there is another one now
        (removed and made again: the old one may live on, unannounced, while a file in it is
        held open)."""
        try:
            wd = self._ino.add_watch(path.parent, DIR_MASK)
        except OSError:
            self.unwatch_entry(key)
            return False
        if self._dir_of.get(key) == wd:
            return True
        self.unwatch_entry(key)
        entry = self._dirs.setdefault(wd, _Dir[K](wd, {}))
        entry.names.setdefault(os.fsencode(path.name), []).append(key)
        self._dir_of[key] = wd
        return True

    def unwatch_entry(self, key: K) -> None:
        """Forget ``key``'s directory entry; the directory watch goes when nobody needs it."""
        wd = self._dir_of.pop(key, None)
        if wd is None:
            return
        entry = self._dirs[wd]
        for name, keys in list(entry.names.items()):
            if key in keys:
                keys.remove(key)
                if not keys:
                    del entry.names[name]
        if not entry.names:
            del self._dirs[wd]
            self._ino.rm_watch(wd)

    def watch_fd(self, key: K, fd: int, path: Path) -> int | None:
        """Watch the inode open as ``fd``: through ``/proc/self/fd``, so never a newer file of
        the same name; where /proc is not mounted, through ``path``, which it was opened by a
        moment ago. None when neither works: the periodic rescan must cover it."""
        for target in (f"/proc/self/fd/{fd}", path):
            try:
                wd = self._ino.add_watch(target, FILE_MASK)
            except OSError:
                continue
            self._files.setdefault(wd, []).append(key)
            return wd
        return None

    def unwatch_fd(self, key: K, wd: int) -> None:
        keys = self._files.get(wd)
        if keys is None or key not in keys:
            return
        keys.remove(key)
        if not keys:
            del self._files[wd]
            self._ino.rm_watch(wd)

    def read(self) -> Wakeups[K]:
        """Drain the queue and say which keys need a look."""
        keys: dict[K, bool] = {}
        unwatched: list[K] = []
        overflow = False
        for ev in self._ino.read_events():
            if ev.mask & Mask.Q_OVERFLOW:
                overflow = True
                continue
            entry = self._dirs.get(ev.wd)
            if entry is not None:
                if ev.mask & _DIR_GONE:
                    unwatched.extend(self._drop_dir(entry, ignored=bool(ev.mask & Mask.IGNORED)))
                    continue
                for key in entry.names.get(ev.name, ()):
                    keys[key] = True
                continue
            file_keys = self._files.get(ev.wd)
            if file_keys is None:
                continue
            if ev.mask & Mask.IGNORED:  # the inode is gone; the key's next look closes its fd
                del self._files[ev.wd]
            full = not ev.mask & _DATA_ONLY
            for key in file_keys:
                keys[key] = keys.get(key, False) or full
        for key in unwatched:
            keys[key] = True
        return Wakeups(keys, unwatched, overflow)

    def _drop_dir(self, entry: _Dir[K], *, ignored: bool) -> list[K]:
        del self._dirs[entry.wd]
        if not ignored:
            self._ino.rm_watch(entry.wd)
        lost: list[K] = []
        for keys in entry.names.values():
            lost.extend(keys)
        for key in lost:
            self._dir_of.pop(key, None)
        return lost
