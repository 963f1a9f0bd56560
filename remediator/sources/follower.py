"""One followed log path (:class:`Follower`), for :mod:`.tail`'s :class:`~.tail.Tailer`.

A file is known by device, inode and its first bytes (:data:`FP_LEN`). The follower keeps the file
it reads open, so rename + create and delete + recreate work the same way: every look first drains
the open file (and notices if it was cut: copytruncate, ``> file``), then, if the path names another
file now, keeps the old one open ("retired") until it had no write for ``linger`` seconds, to catch
what its writer appends before it reopens, and reads the new one from its start. Lines come in
write order: old file first. A file that cannot be read is blind, one that does not exist is
waiting: either is reported, never taken as healthy or broken.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import structlog

from remediator.filekind import not_regular
from remediator.sources.offsets import ABSENT, SavedOffset, fingerprint
from remediator.sources.planted import last_dir_untrusted, planted_link

log = structlog.get_logger(__name__)

MAX_LINE: Final = 64 * 1024
"""Longest line returned; the rest of a longer one is dropped and counted."""
FP_LEN: Final = 1024
"""How many first bytes of a file identify it, with its device and inode."""
_CHUNK: Final = 256 * 1024
_READ_BUDGET: Final = 8 * 1024 * 1024  # per follower and call, so one huge backlog cannot stall
_MAX_RETIRED: Final = 4
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO cannot hang us


class Host(Protocol):
    """What a follower needs of the tailer that owns it (:class:`~.tail.Tailer`)."""

    linger: float
    max_line: int

    def opened(self, follower: Follower, handle: Handle, path: Path) -> None: ...
    def closing(self, follower: Follower, handle: Handle) -> None: ...


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
class Handle:
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

    def __init__(self, path: Path, tailer: Host, saved: SavedOffset | None) -> None:
        self.path = path
        self.counters = Counters()
        self._tailer = tailer
        self._resume = saved
        self._first = saved is None  # no saved state: start at the end of what is there
        self._status = FollowStatus(FollowState.WAITING, "not looked at yet")
        self._announced = False
        self._cur: Handle | None = None
        self._retired: list[Handle] = []
        self._pending: list[bytes] = []
        self._missing_since: float | None = None
        self.absent = False  # the last look found no file at the path
        self.backlog = False

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

    def check(self, now: float, *, full: bool) -> list[bytes]:
        """Read what the open file got, look at the path if ``full`` (or nothing is open) and
        move to the file it names now, then read every open file; lines come oldest file first."""
        budget = [_READ_BUDGET]
        before = self._cur
        if before is not None:  # first, so a cut is seen before the file is retired
            before.out += self._read_safely(before, now, budget)
        if full or before is None:
            self.look(now)
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
        self.backlog = budget[0] <= 0
        self.counters.lines += len(out)
        return out

    def deadline(self) -> float | None:
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

    def look(self, now: float | None) -> None:
        try:
            st = self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self.absent = True
            self._on_missing(now)
            return
        except OSError as exc:  # a directory on the way we may not search, say
            self.absent = False
            self._missing_since = None
            self._set_status(FollowState.BLIND, _reason(exc))
            return
        self.absent = False
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
        handle = Handle(
            fd=fd,
            dev=fst.st_dev,
            ino=fst.st_ino,
            pos=start,
            prefix=os.pread(fd, FP_LEN, 0),
            skip=skip,
            last_data=now,
        )
        self._cur = handle
        self._tailer.opened(self, handle, self.path)
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
        handle = Handle(fd, fst.st_dev, fst.st_ino, pos=start, prefix=prefix, skip=skip)
        self._retired.append(handle)
        self._tailer.opened(self, handle, _dot_one(self.path))
        return True

    def _retire(self, handle: Handle, now: float | None) -> None:
        handle.last_data = now
        self._retired.append(handle)
        while len(self._retired) > _MAX_RETIRED:
            self._pending += self._close(self._retired.pop(0))

    def _close(self, handle: Handle) -> list[bytes]:
        """Close a file; the lines read from it and not returned yet. An unterminated last line
        is dropped: only complete lines are ever returned."""
        self._tailer.closing(self, handle)
        os.close(handle.fd)
        lines, handle.out = handle.out, []
        return lines

    def close_all(self) -> None:
        for handle in [*self._retired, *([self._cur] if self._cur else [])]:
            self._close(handle)
        self._retired.clear()
        self._cur = None

    def saved_offset(self) -> SavedOffset | None:
        """What to store for a restart; None while the path was never seen (so a restart starts
        at the end of whatever is there, as this run would)."""
        if self._cur is not None:
            return self._cur.saved()
        if self._resume is not None:
            return self._resume
        return None if self._first else ABSENT

    # -- reading -------------------------------------------------------------------------------

    def _read_safely(self, h: Handle, now: float, budget: list[int]) -> list[bytes]:
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

    def _read_file(self, h: Handle, now: float, budget: list[int]) -> list[bytes]:
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

    def _truncated(self, h: Handle, now: float, budget: list[int]) -> list[bytes]:
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
                copy = Handle(fd, fst.st_dev, fst.st_ino, h.pos, head)
                copy.partial, copy.skip = h.partial, h.skip
                lines = self._read(copy, now, budget)
            os.close(fd)
        h.pos, h.partial, h.skip = 0, b"", False
        return lines

    def _read(self, h: Handle, now: float, budget: list[int]) -> list[bytes]:
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

    def _split(self, h: Handle, data: bytes) -> list[bytes]:
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
