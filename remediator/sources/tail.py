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

How one path is followed across rotation and truncation is :mod:`.follower`'s.

What cannot be read (``tests/test_tail_model.py`` checks that nothing else is lost): a file that came
and went between two looks (two rotations within one batch); bytes destroyed by a truncation before
they were read (unless logrotate's copy of them is at ``path.1``); a rotated-away file written to
after ``linger`` seconds of quiet, or while four newer ones are held; a truncated file rewritten
past our offset with the same first bytes as before (read from our offset, not from 0); and, across
a restart, files other than the saved one (at the path or ``path.1``) and the one at the path.
"""

from __future__ import annotations

import enum
import select
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import structlog

from remediator.sources.follower import (
    FP_LEN,
    MAX_LINE,
    Counters,
    Follower,
    FollowState,
    FollowStatus,
    Handle,
)
from remediator.sources.inotify import InotifyUnavailableError, Watches
from remediator.sources.offsets import OffsetStore, SavedOffset

log = structlog.get_logger(__name__)

IDLE_GAP: Final = 10  # batch intervals without events: the next ones are read at once


class Backend(enum.StrEnum):
    """How a :class:`Tailer` learns that files changed."""

    AUTO = "auto"
    """inotify when the kernel gives an instance, else polling."""
    INOTIFY = "inotify"
    POLLING = "polling"


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
        follower.look(None)
        self._dirty[follower] = True
        return follower

    def unfollow(self, path: Path | str) -> None:
        follower = self._followers.pop(Path(path).absolute(), None)
        if follower is None:
            return
        follower.close_all()
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
            deadline = follower.deadline()
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
            deadline = follower.deadline()
            if deadline is not None and now >= deadline:
                dirty[follower] = True
        self._dirty = {}
        out: dict[Path, list[bytes]] = {}
        for follower, full in dirty.items():
            lines = follower.check(now, full=full)
            if lines:
                out[follower.path] = lines
            if follower.backlog:
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
            saved = follower.saved_offset()
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
            follower.close_all()
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
        return any(f.absent for f in self._followers.values())

    def _poll_targets(self) -> list[Follower]:
        if self._watches is None:
            return list(self._followers.values())
        targets = [f for f in self._followers.values() if f.absent or f in self._unwatched]
        for follower in targets:  # their directory may exist now, or be another one
            if self._watches.watch_entry(follower, follower.path):
                self._unwatched.discard(follower)
            else:
                self._unwatched.add(follower)
        return targets

    def opened(self, follower: Follower, handle: Handle, path: Path) -> None:
        if self._watches is not None:
            handle.wd = self._watches.watch_fd(follower, handle.fd, path)

    def closing(self, follower: Follower, handle: Handle) -> None:
        if self._watches is not None and handle.wd is not None:
            self._watches.unwatch_fd(follower, handle.wd)
            handle.wd = None


__all__ = [
    "FP_LEN",
    "MAX_LINE",
    "Backend",
    "Counters",
    "FollowState",
    "FollowStatus",
    "Follower",
    "Tailer",
]
