"""Requests from commands to the daemon, and its answers: ``STATE_DIR/requests/``.

The command's end (:func:`send`) writes ``ID.json`` atomically into a directory only root may
enter and waits up to :data:`ACK_TIMEOUT` for ``ID.ack``; when no daemon holds the daemon lock
it takes the lock and applies the request itself. The daemon's end (:class:`Inbox`) claims a
request by renaming it (``ID.taken``), so a command that gives up can withdraw its request only
while nobody has it; it trusts a request file like the config, and logs and removes anything
else.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from remediator.daemonlock import DaemonLock, Role
from remediator.operator import (
    REQUEST_ID,
    STALE,
    OperatorError,
    Reply,
    Request,
    RequestError,
)
from remediator.sources.inotify import Inotify, Mask
from remediator.state import write_atomic

log = structlog.get_logger(__name__)

REQUESTS = "requests"
ACK_TIMEOUT = 2.0  # a command waits this long for the daemon's answer
CLAIMED_GRACE = 10.0  # ... and this much longer once the daemon has taken the request
LOOK_EVERY = 0.5  # an idle daemon looks for requests this often (without inotify)
LOOK_EVERY_EVENTED = 10.0  # ... with an inotify watch of the directory: a safety net only
POLL = 0.02
MAX_SIZE = 4096


# --- the command's end --------------------------------------------------------------------------


def send(state_dir: Path, req: Request, here: Callable[[Request], Reply]) -> Reply:
    """Have ``req`` applied: by the running daemon, or by ``here`` (in this process, holding
    the daemon lock) when none runs."""
    lock = DaemonLock(state_dir)
    deadline = time.monotonic() + ACK_TIMEOUT
    try:
        while True:
            if lock.try_acquire(Role.COMMAND):
                try:
                    return here(req)
                finally:
                    lock.release()
            holder = lock.holder()
            if holder is not None and holder.role == Role.DAEMON and holder.pid is not None:
                return _through_daemon(state_dir / REQUESTS, req, holder.pid)
            if time.monotonic() > deadline:
                who = f"pid {holder.pid}" if holder and holder.pid else "another process"
                raise OperatorError(
                    f"{lock.path} is held by a remediator command ({who}) that is applying a "
                    "switch: try again when it ends"
                )
            time.sleep(POLL)
    except PermissionError as exc:
        raise OperatorError(f"{exc.filename}: permission denied (switches need root)") from None


def _through_daemon(box: Path, req: Request, pid: int) -> Reply:
    box.mkdir(mode=0o700, exist_ok=True)
    write_atomic(box / f"{req.id}.json", req.encode(), mode=0o600)
    ack = box / f"{req.id}.ack"
    deadline = time.monotonic() + ACK_TIMEOUT
    claimed = False
    while True:
        with contextlib.suppress(FileNotFoundError):
            raw = ack.read_bytes()[:MAX_SIZE]
            ack.unlink(missing_ok=True)
            return Reply.decode(raw, req.id)
        if time.monotonic() > deadline:
            if claimed:
                raise OperatorError(
                    f"the daemon (pid {pid}) took the request but gave no answer within "
                    f"{ACK_TIMEOUT + CLAIMED_GRACE:g}s: `remediator log` shows whether it "
                    "applied it"
                )
            try:
                (box / f"{req.id}.json").unlink()
            except FileNotFoundError:  # the daemon has it: give it longer to answer
                claimed = True
                deadline += CLAIMED_GRACE
                continue
            raise OperatorError(
                f"the daemon (pid {pid}) did not answer within {ACK_TIMEOUT:g}s: "
                "the request was withdrawn, nothing was applied"
            )
        time.sleep(POLL)


# --- the daemon's end ---------------------------------------------------------------------------


class Inbox:
    """The daemon's side: its lock for life, and the requests it takes between turns."""

    def __init__(self, state_dir: Path) -> None:
        self.lock = DaemonLock(state_dir)
        self.dir = state_dir / REQUESTS
        self.usable = False
        self._reported: set[str] = set()
        # A request is a file renamed into the directory: an inotify watch says when one came,
        # so an idle daemon need not look twice a second (a third of its idle wake-ups).
        self._events: Inotify | None = None
        self._looked = -math.inf

    @property
    def look_every(self) -> float:
        """How long the daemon may wait between looks when nothing tells it to look."""
        return LOOK_EVERY_EVENTED if self._events is not None else LOOK_EVERY

    def fileno(self) -> int:
        """Readable when something came into the directory (-1: not watched)."""
        return self._events.fileno() if self._events is not None else -1

    def _watch(self) -> None:
        try:
            events = Inotify()
        except OSError:
            return
        try:
            events.add_watch(self.dir, int(Mask.MOVED_TO | Mask.CLOSE_WRITE | Mask.ONLYDIR))
        except OSError:
            events.close()
            return
        self._events = events

    def open(self) -> str | None:
        """Take the daemon lock for life and ready the request directory; why not, when
        another daemon holds the lock. A command holding it for a moment is waited for."""
        waited = False
        while not self.lock.try_acquire(Role.DAEMON):
            holder = self.lock.holder()
            if holder is not None and holder.role == Role.DAEMON and holder.pid is not None:
                return f"another remediator daemon (pid {holder.pid}) holds {self.lock.path}"
            if holder is not None and not waited:
                waited = True
                log.warning("daemon_lock_busy", holder=holder.pid, role=holder.role)
                self.lock.acquire(Role.DAEMON)
                break
        self.usable = self._ready_dir()
        if self.usable:
            self._watch()
            self._clear_leftovers()
        return None

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        self.lock.release()

    def _ready_dir(self) -> bool:
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            st = self.dir.lstat()
            problem = None
            if not stat.S_ISDIR(st.st_mode):
                problem = "not a directory"
            elif st.st_uid not in (0, os.geteuid()):
                problem = f"owned by uid {st.st_uid}, not root"
            elif st.st_mode & 0o077:
                self.dir.chmod(0o700)
                log.warning("request_dir_mode_fixed", path=str(self.dir), was=oct(st.st_mode))
        except OSError as exc:
            problem = exc.strerror
        if problem is not None:
            log.error("operator_requests_disabled", path=str(self.dir), reason=problem)
            return False
        return True

    def _clear_leftovers(self) -> None:
        """Requests a previous life claimed (applied or not, nobody knows: its command was
        told so). Fresh requests stay for :meth:`take`: their commands may still wait."""
        for path in self.dir.glob("*.taken"):
            log.warning("operator_request_discarded", file=str(path), reason="claimed before")
            with contextlib.suppress(OSError):
                path.unlink()

    def take(self, now: float) -> list[Request]:
        """The requests waiting now (claimed, checked, removed), oldest name first. With the
        directory watched, it is looked at only when something came, or after look_every."""
        if not self.usable:
            return []
        if self._events is not None:
            came = bool(self._events.read_events())
            if not came and now - self._looked < LOOK_EVERY_EVENTED:
                return []
        self._looked = now
        try:
            names = sorted(p.name for p in self.dir.iterdir())
        except OSError as exc:
            log.error("operator_requests_unreadable", path=str(self.dir), error=exc.strerror)
            return []
        out: list[Request] = []
        for name in names:
            stem, _, ext = name.partition(".")
            if name.startswith(".") or ext == "ack":  # being written; an answer for a command
                self._drop_if_old(self.dir / name)
                continue
            if ext == "json" and REQUEST_ID.fullmatch(stem):
                req = self._claim(stem, now)
                if req is not None:
                    out.append(req)
                continue
            self._ignore(self.dir / name, "not a request file name")
        return out

    def _claim(self, rid: str, now: float) -> Request | None:
        path, taken = self.dir / f"{rid}.json", self.dir / f"{rid}.taken"
        try:
            path.rename(taken)
        except FileNotFoundError:  # withdrawn by its command just now
            return None
        try:
            req: Request | None = Request.decode(_read_trusted(taken), rid)
            problem = "stale: asked too long ago (or before a reboot)"
        except (OSError, RequestError) as exc:
            req, problem = None, str(exc)
        if req is None or req.stale(now):
            self._ignore(path, problem, taken)
            return None
        taken.unlink(missing_ok=True)
        return req

    def _drop_if_old(self, path: Path) -> None:
        """Remove an answer nobody read, or a request never finished, once its command has
        surely given up (by the wall clock: only tidying depends on it)."""
        with contextlib.suppress(OSError):
            if time.time() - path.lstat().st_mtime > STALE + CLAIMED_GRACE:
                path.unlink()

    def _ignore(self, path: Path, reason: str, actual: Path | None = None) -> None:
        if path.name not in self._reported:
            log.warning("operator_request_ignored", file=str(path), reason=reason)
        actual = actual or path
        try:
            if actual.is_dir() and not actual.is_symlink():
                actual.rmdir()
            else:
                actual.unlink()
            self._reported.discard(path.name)
        except OSError:
            self._reported.add(path.name)  # cannot remove it: say so once

    def answer(self, req: Request, reply: Reply) -> None:
        try:
            write_atomic(self.dir / f"{req.id}.ack", reply.encode(req.id), mode=0o600)
        except OSError as exc:
            log.error("operator_answer_unwritable", request=req.id, error=exc.strerror)


def _read_trusted(path: Path) -> bytes:
    """The bytes of a request file, if it may be trusted like the config."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise RequestError(f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RequestError("not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise RequestError(f"owned by uid {st.st_uid}, not root")
        if st.st_mode & 0o022:
            raise RequestError(f"writable by group or others (mode {st.st_mode & 0o777:04o})")
        if st.st_size > MAX_SIZE:
            raise RequestError(f"{st.st_size} bytes, more than {MAX_SIZE}")
        return os.read(fd, MAX_SIZE + 1)[:MAX_SIZE]
    finally:
        os.close(fd)
