"""Follow log files across rotation: each line once, in order, in bytes.

A :class:`Tailer` follows many files. It owns one inotify descriptor (or, where inotify cannot be
had, re-stats every file at an interval the caller gives) and exposes ``fileno()``, ``timeout(now)``
and ``process(now)`` so the daemon's main loop waits on it together with its other descriptors.
Events are batched: after a batch, ``fileno()`` stays quiet for ``batch_interval`` while the kernel
merges further events, so a busy log costs one wakeup per interval, not one per line::

    tailer = Tailer(paths, state_dir=state_dir)
    while running:
        now = time.monotonic()
        ready = select.select([tailer.fileno(), *others], [], [], tailer.timeout(now))
        for path, lines in tailer.process(time.monotonic()).items():
            feed(path, lines)           # complete lines, bytes, newline stripped
        if due(now):
            tailer.checkpoint()         # offsets to disk at line boundaries, atomically

A file is known by device, inode and its first bytes (:data:`FP_LEN`). The follower keeps the file
it reads open, so rename + create and delete + recreate work the same way: every look first drains
the open file (and notices if it was cut: copytruncate, ``> file``), then, if the path names another
file now, keeps the old one open ("retired") until it had no write for ``linger`` seconds, to catch
what its writer appends before it reopens, and reads the new one from its start. Lines come in
write order: old file first. A file that cannot be read is blind, one that does not exist is
waiting: either is reported, never taken as healthy or broken.

What cannot be read (``tests/test_tail_model.py`` checks that nothing else is lost): a file that came
and went between two looks (two rotations within one batch); bytes destroyed by a truncation before
they were read (unless logrotate's copy of them is at ``path.1``); a rotated-away file written to
after ``linger`` seconds of quiet, or while four newer ones are held; a truncated file rewritten
past our offset with the same first bytes as before (read from our offset, not from 0); and, across
a restart, files other than the saved one (at the path or ``path.1``) and the one at the path.
"""

from __future__ import annotations

import enum
import errno
import os
import select
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from remediator.filekind import not_regular
from remediator.sources.inotify import InotifyUnavailableError, Watches
from remediator.sources.offsets import ABSENT, OffsetStore, SavedOffset, fingerprint
from remediator.sources.planted import last_dir_untrusted, planted_link

log = structlog.get_logger(__name__)

MAX_LINE: Final = 64 * 1024
IDLE_GAP: Final = 10  # batch intervals without events: the next ones are read at once
"""Longest line returned; the rest of a longer one is dropped and counted."""
FP_LEN: Final = 1024
"""How many first bytes of a file identify it, with its device and inode."""
_CHUNK: Final = 256 * 1024
_READ_BUDGET: Final = 8 * 1024 * 1024  # per follower and call, so one huge backlog cannot stall
_MAX_RETIRED: Final = 4
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO cannot hang us


class Backend(enum.StrEnum):
    """How a :class:`Tailer` learns that files changed."""

    AUTO = "auto"
    """inotify when the kernel gives an instance, else polling."""
    INOTIFY = "inotify"
    POLLING = "polling"


class FollowState(enum.StrEnum):
    """Whether a followed path gives evidence right now."""

    OK = "ok"
    WAITING = "waiting"
    """The path does not exist (yet, or any more): no evidence."""
    BLIND = "blind"
    """The path exists but cannot be read (permission; a FIFO, device or directory, which is
    never opened): no evidence."""


@dataclass(frozen=True, slots=True)
class FollowStatus:
    state: FollowState
    reason: str = ""


@dataclass(slots=True)
class Counters:
    """Running totals of one follower."""

    lines: int = 0
    bytes: int = 0
    overlong: int = 0
    """Lines longer than the cap: returned truncated, their rest dropped."""
    rotations: int = 0
    """Times the path came to name another file (rename, delete and recreate, while stopped)."""
    truncations: int = 0
    """Times the open file shrank under us or was rewritten from its start (copytruncate)."""


@dataclass(eq=False, slots=True)
class _Handle:
    """One open file and where we are in it."""

    fd: int
    dev: int
    ino: int
    pos: int
    """Next byte to read."""
    prefix: bytes
    """The file's first bytes (up to FP_LEN) as last seen."""
    partial: bytes = b""
    """Bytes after the last newline read."""
    skip: bool = False
    """Dropping bytes up to the next newline (rest of an overlong line, or a fragment at start)."""
    last_data: float | None = None
    wd: int | None = None
    done: bool = False
    """Rotated away and then cut: nothing more to read from it."""
    out: list[bytes] = field(default_factory=list)
    """Lines read in this look, returned at its end in file order."""

    @property
    def committed(self) -> int:
        """Offset to resume at: the start of the line being read, or inside one being dropped."""
        return self.pos if self.skip else self.pos - len(self.partial)

    def saved(self) -> SavedOffset:
        return SavedOffset(
            dev=self.dev,
            ino=self.ino,
            fp=fingerprint(self.prefix),
            fp_len=len(self.prefix),
            offset=self.committed,
            skip=self.skip,
        )


class Follower:
    """One followed path: its state, counters and the files it has open."""

    def __init__(self, path: Path, tailer: Tailer, saved: SavedOffset | None) -> None:
        self.path = path
        self.counters = Counters()
        self._tailer = tailer
        self._resume = saved
        self._first = saved is None  # no saved state: start at the end of what is there
        self._status = FollowStatus(FollowState.WAITING, "not looked at yet")
        self._announced = False
        self._cur: _Handle | None = None
        self._retired: list[_Handle] = []
        self._pending: list[bytes] = []
        self._missing_since: float | None = None
        self._absent = False  # the last look found no file at the path
        self._backlog = False

    def __repr__(self) -> str:
        return f"Follower({str(self.path)!r}, {self._status.state})"

    @property
    def status(self) -> FollowStatus:
        return self._status

    @property
    def offset(self) -> int | None:
        """Offset of the next unread line in the current file (None without one)."""
        return None if self._cur is None else self._cur.committed

    # -- one look ------------------------------------------------------------------------------

    def _check(self, now: float, *, full: bool) -> list[bytes]:
        """Read what the open file got, look at the path if ``full`` (or nothing is open) and
        move to the file it names now, then read every open file; lines come oldest file first."""
        budget = [_READ_BUDGET]
        before = self._cur
        if before is not None:  # first, so a cut is seen before the file is retired
            before.out += self._read_safely(before, now, budget)
        if full or before is None:
            self._look(now)
        retired = self._retired
        for h in retired:
            h.out += self._read_safely(h, now, budget)
        cur = self._cur
        if cur is not None and cur is not before:
            got = self._read_safely(cur, now, budget)
            if got:  # a single writer filled the old files before this: take all of that first
                for h in retired:
                    h.out += self._read_safely(h, now, budget)
            cur.out += got
            cur = self._cur
        out, self._pending = self._pending, []
        for h in list(retired):
            if h.last_data is None:
                h.last_data = now
            if h.done or now >= h.last_data + self._tailer.linger:
                retired.remove(h)
                out += self._close(h)
            else:
                out += h.out
                h.out = []
        if cur is not None:
            out += cur.out
            cur.out = []
        self._backlog = budget[0] <= 0
        self.counters.lines += len(out)
        return out

    def _deadline(self) -> float | None:
        """When this follower must be looked at even if nothing happens (monotonic)."""
        linger = self._tailer.linger
        times = [h.last_data + linger for h in self._retired if h.last_data is not None]
        cur = self._cur
        if cur is not None and self._missing_since is not None:
            if self._status.state is FollowState.OK:
                times.append(self._missing_since + linger)
            else:
                times.append(max(self._missing_since, cur.last_data or 0.0) + linger)
        return min(times, default=None)

    def _look(self, now: float | None) -> None:
        try:
            st = self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self._absent = True
            self._on_missing(now)
            return
        except OSError as exc:  # a directory on the way we may not search, say
            self._absent = False
            self._missing_since = None
            self._set_status(FollowState.BLIND, _reason(exc))
            return
        self._absent = False
        self._missing_since = None
        cur = self._cur
        if cur is not None and (st.st_dev, st.st_ino) == (cur.dev, cur.ino):
            self._set_status(FollowState.OK)
            return
        if not stat.S_ISREG(st.st_mode):  # a FIFO, a device, a directory: never opened
            self._unreadable(st, not_regular(st.st_mode), now)
            return
        self._open(st, now)

    def _on_missing(self, now: float | None) -> None:
        cur = self._cur
        self._first = False
        if cur is None:
            self._lost_saved_file(exclude=None)
            self._set_status(FollowState.WAITING, "does not exist")
            return
        if now is None:
            return
        if self._missing_since is None:
            self._missing_since = now
        linger = self._tailer.linger
        if now < self._missing_since + linger:
            return  # mid-rotation, most likely: the new file is about to appear
        self._set_status(FollowState.WAITING, "removed")
        if now >= max(self._missing_since, cur.last_data or 0.0) + linger:
            # Gone and quiet: let its space be freed; a file that comes is read from its start.
            self._close(cur)
            self._cur = None
            self._missing_since = None

    def _open(self, st: os.stat_result, now: float | None) -> None:
        planted = planted_link(self.path)
        if planted is not None:  # www-data's symlink to /etc/shadow: never read as root
            self._unreadable(st, planted, now)
            return
        swappable = last_dir_untrusted(self.path)
        try:
            fd = os.open(self.path, _OPEN_FLAGS | (os.O_NOFOLLOW if swappable else 0))
        except FileNotFoundError:
            self._on_missing(now)
            return
        except OSError as exc:
            reason = _reason(exc)
            if exc.errno == errno.ELOOP and swappable:
                reason = (
                    f"{self.path} became a symbolic link in a directory others can write: "
                    "not followed"
                )
            self._unreadable(st, reason, now)
            return
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):  # replaced between the stat and the open
            os.close(fd)
            self._unreadable(fst, not_regular(fst.st_mode), now)
            return
        ident = (fst.st_dev, fst.st_ino)
        cur = self._cur
        if cur is not None and ident == (cur.dev, cur.ino):
            os.close(fd)  # renamed away and back between stat and open
            self._set_status(FollowState.OK)
            return
        back = next((h for h in self._retired if (h.dev, h.ino) == ident), None)
        if back is not None:  # an old file moved back over the new one: carry on in it
            os.close(fd)
            self._retired.remove(back)
            if cur is not None:
                self._retire(cur, now)
            self._cur = back
            self._set_status(FollowState.OK)
            return
        if cur is not None:
            self._retire(cur, now)
            self.counters.rotations += 1
            log.info("source_rotated", path=str(self.path), old_ino=cur.ino, new_ino=fst.st_ino)
            self._resume = None
            start, skip = 0, False
        else:
            start, skip = self._start_offset(fd, fst)
        if start > 0 and not skip and os.pread(fd, 1, start - 1) != b"\n":
            skip = True  # started inside a line: drop that fragment
        handle = _Handle(
            fd=fd,
            dev=fst.st_dev,
            ino=fst.st_ino,
            pos=start,
            prefix=os.pread(fd, FP_LEN, 0),
            skip=skip,
            last_data=now,
        )
        self._cur = handle
        self._tailer._opened(self, handle, self.path)
        self._set_status(FollowState.OK)

    def _unreadable(self, st: os.stat_result, reason: str, now: float | None) -> None:
        cur = self._cur
        if cur is not None:  # the path names another file now, one we cannot read
            self._retire(cur, now)
            self.counters.rotations += 1
            log.info("source_rotated", path=str(self.path), old_ino=cur.ino, new_ino=st.st_ino)
            self._cur = None
            self._resume = None  # that file is new: read it from its start once we can
        elif self._first:
            # Started with no state on a file we cannot read: its end now is where we start.
            self._resume = SavedOffset(st.st_dev, st.st_ino, fp="", fp_len=0, offset=st.st_size)
        elif self._resume is not None:
            ident = (st.st_dev, st.st_ino)
            if (self._resume.dev, self._resume.ino) != ident:  # saved file rotated while stopped
                self._lost_saved_file(exclude=ident)
        self._first = False
        self._set_status(FollowState.BLIND, reason)

    def _start_offset(self, fd: int, fst: os.stat_result) -> tuple[int, bool]:
        """Where to start in a newly opened file when no file was open before."""
        res, self._resume = self._resume, None
        if self._first:
            self._first = False
            return fst.st_size, False  # no saved state: old lines must never trigger actions
        if res is None or not res.known:
            return 0, False  # the file appeared after we started looking
        if res.identifies(fd, fst):
            return res.offset, res.skip
        self._resume = res
        self._lost_saved_file(exclude=(fst.st_dev, fst.st_ino))
        return 0, False

    def _lost_saved_file(self, exclude: tuple[int, int] | None) -> None:
        """The saved file is not at the path any more: take its rest from ``path.1`` if it is
        there, and read whatever file comes to the path from its start."""
        res, self._resume = self._resume, None
        if res is None or not res.known:
            self._resume = res
            return
        self.counters.rotations += 1
        found = self._take_remainder(res, exclude)
        log.info("source_rotated_while_stopped", path=str(self.path), remainder_found=found)

    def _take_remainder(self, res: SavedOffset, exclude: tuple[int, int] | None) -> bool:
        """Read the rest of a file rotated away while we were not reading it, from ``path.1``:
        the saved file itself (same inode) or logrotate's copy of it (same first bytes) from the
        saved offset; the saved file's inode holding something else (cut, or a new file that
        reused the number) from its start, as all of that was written after we stopped."""
        fd = _open_regular(_dot_one(self.path))
        if fd is None:
            return False
        fst = os.fstat(fd)
        ident = (fst.st_dev, fst.st_ino)
        if ident != exclude and res.identifies(fd, fst, any_inode=True):
            start, skip = res.offset, res.skip
        elif ident != exclude and ident == (res.dev, res.ino):
            start, skip = 0, False
        else:
            os.close(fd)
            return False
        prefix = os.pread(fd, FP_LEN, 0)
        handle = _Handle(fd, fst.st_dev, fst.st_ino, pos=start, prefix=prefix, skip=skip)
        self._retired.append(handle)
        self._tailer._opened(self, handle, _dot_one(self.path))
        return True

    def _retire(self, handle: _Handle, now: float | None) -> None:
        handle.last_data = now
        self._retired.append(handle)
        while len(self._retired) > _MAX_RETIRED:
            self._pending += self._close(self._retired.pop(0))

    def _close(self, handle: _Handle) -> list[bytes]:
        """Close a file; the lines read from it and not returned yet. An unterminated last line
        is dropped: only complete lines are ever returned."""
        self._tailer._closing(self, handle)
        os.close(handle.fd)
        lines, handle.out = handle.out, []
        return lines

    def _close_all(self) -> None:
        for handle in [*self._retired, *([self._cur] if self._cur else [])]:
            self._close(handle)
        self._retired.clear()
        self._cur = None

    def _saved(self) -> SavedOffset | None:
        """What to store for a restart; None while the path was never seen (so a restart starts
        at the end of whatever is there, as this run would)."""
        if self._cur is not None:
            return self._cur.saved()
        if self._resume is not None:
            return self._resume
        return None if self._first else ABSENT

    # -- reading -------------------------------------------------------------------------------

    def _read_safely(self, h: _Handle, now: float, budget: list[int]) -> list[bytes]:
        """:meth:`_read_file`, where an I/O error (EIO, ESTALE on NFS...) makes us blind: the
        current file is closed, to be opened again at its last complete line."""
        try:
            return self._read_file(h, now, budget)
        except OSError as exc:
            log.warning("source_read_failed", path=str(self.path), error=str(exc))
            if h is self._cur:
                self._resume = h.saved()
                self._pending += self._close(h)
                self._cur = None
                self._first = False
                self._set_status(FollowState.BLIND, _reason(exc))
            else:
                h.done = True
            return []

    def _read_file(self, h: _Handle, now: float, budget: list[int]) -> list[bytes]:
        """New lines of an open file, noticing first when it was cut (smaller than our offset,
        or other first bytes)."""
        if h.done:
            return []
        size = os.fstat(h.fd).st_size
        lines: list[bytes] = []
        head = os.pread(h.fd, FP_LEN, 0)  # every time: a cut file may be rewritten to any size
        if size < h.pos or not head.startswith(h.prefix):
            if h is not self._cur:  # cut after it was rotated away: finished with it
                h.done = True
                return []
            lines = self._truncated(h, now, budget)
            head = os.pread(h.fd, FP_LEN, 0)
        h.prefix = head
        if size > h.pos:
            lines += self._read(h, now, budget)
        return lines

    def _truncated(self, h: _Handle, now: float, budget: list[int]) -> list[bytes]:
        """The open file was cut (copytruncate, ``> file``): take what logrotate copied to
        ``path.1`` past our offset, then start again from 0."""
        self.counters.truncations += 1
        log.info("source_truncated", path=str(self.path), offset=h.pos)
        lines: list[bytes] = []
        fd = _open_regular(_dot_one(self.path)) if h.pos > 0 and h.prefix else None
        if fd is not None:
            fst = os.fstat(fd)
            head = os.pread(fd, len(h.prefix), 0)
            other = (fst.st_dev, fst.st_ino) != (h.dev, h.ino)
            if other and fst.st_size > h.pos and head and h.prefix.startswith(head):
                copy = _Handle(fd, fst.st_dev, fst.st_ino, h.pos, head)
                copy.partial, copy.skip = h.partial, h.skip
                lines = self._read(copy, now, budget)
            os.close(fd)
        h.pos, h.partial, h.skip = 0, b"", False
        return lines

    def _read(self, h: _Handle, now: float, budget: list[int]) -> list[bytes]:
        chunks: list[bytes] = []
        while budget[0] > 0:
            past = _past_hole(h.fd, h.pos)
            if past is not None:
                if chunks:
                    break  # the next call skips it, once what came before is split
                h.pos, h.partial, h.skip = past, b"", False  # a hole ends any line
            data = os.pread(h.fd, min(_CHUNK, budget[0]), h.pos)
            if not data:
                break
            chunks.append(data)
            h.pos += len(data)
            budget[0] -= len(data)
            if len(data) < _CHUNK:
                break  # a short read of a regular file is its end, for now
        if not chunks:
            return []
        h.last_data = now
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.counters.bytes += len(data)
        return self._split(h, data)

    def _split(self, h: _Handle, data: bytes) -> list[bytes]:
        cap = self._tailer.max_line
        if h.skip:
            nl = data.find(b"\n")
            if nl < 0:
                return []
            data = data[nl + 1 :]
            h.skip = False
        buf = h.partial + data if h.partial else data
        lines = buf.split(b"\n")
        h.partial = lines.pop()
        if len(buf) > cap:
            for i, line in enumerate(lines):
                if len(line) > cap:
                    lines[i] = line[:cap]
                    self.counters.overlong += 1
            if len(h.partial) > cap:
                lines.append(h.partial[:cap])
                self.counters.overlong += 1
                h.partial = b""
                h.skip = True
        return lines

    def _set_status(self, state: FollowState, reason: str = "") -> None:
        new = FollowStatus(state, reason)
        if new == self._status and self._announced:
            return
        recovering = self._announced and self._status.state is not FollowState.OK
        self._status = new
        self._announced = True
        path = str(self.path)
        if state is FollowState.OK:
            log.info("source_recovered" if recovering else "source_following", path=path)
        elif state is FollowState.WAITING:
            log.warning("source_waiting", path=path, reason=reason)
        else:
            log.warning("source_blind", path=path, reason=reason)


def _past_hole(fd: int, pos: int) -> int | None:
    """Where the data after a hole at ``pos`` start (``SEEK_DATA``), or None when there is no
    hole there.

    A hole holds no line: a sparse file of a terabyte (``truncate -s 1T``, which costs its
    maker no disk) would otherwise keep a core busy reading zeros, and logrotate's
    copytruncate under a writer without ``O_APPEND`` leaves one where the old lines were.
    A file system without holes answers ``pos`` itself.
    """
    try:
        data_at = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: a hole from here to the end
            return None
        data_at = os.fstat(fd).st_size
    return data_at if data_at > pos else None


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or str(exc)).lower()


def _dot_one(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def _open_regular(path: Path) -> int | None:
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None  # a FIFO, a device or a symlink (logrotate's copy is none) is never opened
        fd = os.open(path, _OPEN_FLAGS | os.O_NOFOLLOW)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


class Tailer:
    """Follows many files with one inotify descriptor (or by polling) for one main loop."""

    def __init__(
        self,
        paths: Iterable[Path | str] = (),
        *,
        state_dir: Path | None = None,
        backend: Backend = Backend.AUTO,
        poll_interval: float = 1.0,
        rescan_interval: float | None = 30.0,
        linger: float = 5.0,
        batch_interval: float = 0.05,
        max_line: int = MAX_LINE,
    ) -> None:
        """``poll_interval``: seconds between looks when polling (and, with inotify, for paths
        whose directory cannot be watched yet). ``rescan_interval``: with inotify, a look at
        every path this often all the same (None: never). ``linger``: seconds a rotated-away
        file is kept open after its last write, and a vanished path is still taken as OK.
        ``batch_interval``: with inotify, after a batch of events, ``fileno()`` stays quiet this
        long so that a busy log costs one wakeup per interval, not one per line (0: none)."""
        self.poll_interval = poll_interval
        self.batch_interval = batch_interval
        self.rescan_interval = rescan_interval
        self.linger = linger
        self.max_line = max_line
        self._store = OffsetStore(state_dir) if state_dir is not None else None
        self._saved = self._store.load() if self._store is not None else {}
        self._last_saved: dict[str, SavedOffset] | None = None
        self._followers: dict[Path, Follower] = {}
        self._dirty: dict[Follower, bool] = {}
        self._unwatched: set[Follower] = set()
        self._next_poll: float | None = None
        self._next_rescan: float | None = None
        self._watches: Watches[Follower] | None = None
        self._epoll = select.epoll()  # what fileno() gives: the inotify fd inside, when there
        self._paused_until: float | None = None
        self._last_events: float | None = None  # when inotify last had events for us
        if backend is not Backend.POLLING:
            try:
                self._watches = Watches()
            except InotifyUnavailableError as exc:
                if backend is Backend.INOTIFY:
                    raise
                log.warning("inotify_unavailable", error=str(exc), fallback="polling")
        if self._watches is not None:
            self._epoll.register(self._watches.fileno(), select.EPOLLIN)
        for path in paths:
            self.follow(path)

    @property
    def backend(self) -> Backend:
        return Backend.POLLING if self._watches is None else Backend.INOTIFY

    @property
    def followers(self) -> Mapping[Path, Follower]:
        return self._followers

    def follow(self, path: Path | str) -> Follower:
        """Start following ``path``; with no saved offset for it, from the end of the file."""
        key = Path(path).absolute()
        existing = self._followers.get(key)
        if existing is not None:
            return existing
        follower = Follower(key, self, self._saved.get(str(key)))
        self._followers[key] = follower
        if self._watches is not None and not self._watches.watch_entry(follower, key):
            self._unwatched.add(follower)
        follower._look(None)
        self._dirty[follower] = True
        return follower

    def unfollow(self, path: Path | str) -> None:
        follower = self._followers.pop(Path(path).absolute(), None)
        if follower is None:
            return
        follower._close_all()
        if self._watches is not None:
            self._watches.unwatch_entry(follower)
        self._unwatched.discard(follower)
        self._dirty.pop(follower, None)

    def fileno(self) -> int:
        """A descriptor to wait on for reading: ready when inotify has events for us (never
        when polling, nor during a batch interval)."""
        return self._epoll.fileno()

    def timeout(self, now: float) -> float | None:
        """Seconds the caller may wait on ``fileno()`` before calling :meth:`process` again;
        None: only when the descriptor is ready."""
        if self._dirty:
            return 0.0
        times: list[float] = []
        if self._paused_until is not None:
            times.append(self._paused_until)
        if self._polling():
            times.append(now if self._next_poll is None else self._next_poll)
        if self._watches is not None and self.rescan_interval is not None:
            times.append(now if self._next_rescan is None else self._next_rescan)
        for follower in self._followers.values():
            deadline = follower._deadline()
            if deadline is not None:
                times.append(deadline)
        return max(0.0, min(times) - now) if times else None

    def process(self, now: float) -> dict[Path, list[bytes]]:
        """Handle what happened since the last call; the new complete lines of each path."""
        dirty = self._dirty
        if self._watches is not None:
            self._read_events(now)
        if self._polling() and (self._next_poll is None or now >= self._next_poll):
            self._next_poll = now + self.poll_interval
            for follower in self._poll_targets():
                dirty[follower] = True
        rescan = self._watches is not None and self.rescan_interval is not None
        if rescan and (self._next_rescan is None or now >= self._next_rescan):
            if self._next_rescan is not None:
                dirty.update(dict.fromkeys(self._followers.values(), True))
            self._next_rescan = now + (self.rescan_interval or 0.0)
        for follower in self._followers.values():
            deadline = follower._deadline()
            if deadline is not None and now >= deadline:
                dirty[follower] = True
        self._dirty = {}
        out: dict[Path, list[bytes]] = {}
        for follower, full in dirty.items():
            lines = follower._check(now, full=full)
            if lines:
                out[follower.path] = lines
            if follower._backlog:
                self._dirty[follower] = False
        return out

    def read_now(self, now: float) -> dict[Path, list[bytes]]:
        """Like :meth:`process`, but read every followed file to its end even within a batch
        interval: for a decision that must see what is already written."""
        for follower in self._followers.values():
            self._dirty.setdefault(follower, False)
        return self.process(now)

    def checkpoint(self) -> bool:
        """Save every follower's offset (at a line boundary) if any moved; True if written."""
        if self._store is None:
            return False
        offsets: dict[str, SavedOffset] = {}
        for path, follower in self._followers.items():
            saved = follower._saved()
            if saved is not None:
                offsets[str(path)] = saved
        if offsets == self._last_saved:
            return False
        try:
            self._store.save(offsets)
        except OSError as exc:
            log.warning("offset_state_save_failed", path=str(self._store.path), error=str(exc))
            return False
        self._last_saved = offsets
        return True

    def close(self) -> None:
        """Close every file and descriptor (without saving: call :meth:`checkpoint` first)."""
        for follower in self._followers.values():
            follower._close_all()
        self._followers.clear()
        if self._watches is not None:
            self._watches.close()
        self._epoll.close()

    def __enter__(self) -> Tailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_events(self, now: float) -> None:
        assert self._watches is not None  # noqa: S101 - only called with inotify
        ino = self._watches.fileno()
        if self._paused_until is not None:
            if now < self._paused_until:
                return  # let the kernel gather (and merge) events a little longer
            self._paused_until = None
            self._epoll.modify(ino, select.EPOLLIN)
        wake = self._watches.read()
        dirty = self._dirty
        if wake.overflow:
            log.warning("inotify_queue_overflow")
            dirty.update(dict.fromkeys(self._followers.values(), True))
        for follower, full in wake.keys.items():
            if self._followers.get(follower.path) is follower:
                dirty[follower] = dirty.get(follower, False) or full
        for follower in wake.unwatched:
            if self._followers.get(follower.path) is follower:
                self._unwatched.add(follower)
        if (wake.keys or wake.overflow) and self.batch_interval > 0:
            # The first events after a quiet spell (an idle site's probe line, once a second)
            # are read without a pause: the pause would cost a second wake-up only to re-arm.
            # Events that follow closely (a busy log) pause as before.
            last, self._last_events = self._last_events, now
            if last is not None and now - last < IDLE_GAP * self.batch_interval:
                self._paused_until = now + self.batch_interval
                self._epoll.modify(ino, 0)

    def _polling(self) -> bool:
        """Whether some path is looked at every ``poll_interval``: all of them without inotify;
        with it, those whose directory cannot be watched and those that do not exist (their
        directory may be a new one, of which the old watch says nothing)."""
        if self._watches is None or self._unwatched:
            return True
        return any(f._absent for f in self._followers.values())

    def _poll_targets(self) -> list[Follower]:
        if self._watches is None:
            return list(self._followers.values())
        targets = [f for f in self._followers.values() if f._absent or f in self._unwatched]
        for follower in targets:  # their directory may exist now, or be another one
            if self._watches.watch_entry(follower, follower.path):
                self._unwatched.discard(follower)
            else:
                self._unwatched.add(follower)
        return targets

    def _opened(self, follower: Follower, handle: _Handle, path: Path) -> None:
        if self._watches is not None:
            handle.wd = self._watches.watch_fd(follower, handle.fd, path)

    def _closing(self, follower: Follower, handle: _Handle) -> None:
        if self._watches is not None and handle.wd is not None:
            self._watches.unwatch_fd(follower, handle.wd)
            handle.wd = None
