"""The operator's switches as requests to the running daemon: pause, resume, reset, trigger.

The daemon is the one owner of its state. For its whole life it holds an exclusive ``flock``
on ``STATE_DIR/daemon.lock`` (its pid and role written inside). A command tries that lock
without blocking:

- held by a daemon: the command writes a request, ``STATE_DIR/requests/ID.json`` (a directory
  only root may enter, the file written atomically), and waits up to :data:`ACK_TIMEOUT` for
  the daemon's answer, ``ID.ack``. The daemon claims a request by renaming it to ``ID.taken``,
  so a command that gives up can withdraw its request only while nobody has it.
- free: the command holds the lock itself while it applies the request to the state (so no
  daemon starts meanwhile), then lets go.

Nothing else ever reads a request: a one-shot ``trigger`` takes none meant for the daemon.
Request files are trusted like the config: a regular file, owned by root or the daemon's user,
writable by nobody else, small, JSON with exactly the expected fields; anything else in the
directory is logged and removed, never applied. What each switch does is in
:mod:`remediator.switches`.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import pwd
import re
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from remediator.state import boot_id, write_atomic

log = structlog.get_logger(__name__)

LOCK_FILE = "daemon.lock"
REQUESTS = "requests"
ACK_TIMEOUT = 2.0  # a command waits this long for the daemon's answer
CLAIMED_GRACE = 10.0  # ... and this much longer once the daemon has taken the request
LOOK_EVERY = 0.5  # an idle daemon looks for requests this often
POLL = 0.02
STALE = 30.0  # a request older than this was given up by its command: never applied
MAX_SIZE = 4096
MAX_REASON = 500
MAX_DURATION = 366 * 86400.0

_ID = re.compile(r"[0-9a-f]{16}")
_KEYS = frozenset(
    ("v", "id", "kind", "user", "reason", "playbook", "for_s", "force", "dry_run", "boot", "mono")
)


class Kind(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    RESET = "reset"
    TRIGGER = "trigger"

    @property
    def event(self) -> str:
        """Its action-log event: ``operator_pause``, ..."""
        return f"operator_{self.value}"


class Role(enum.StrEnum):
    """Who holds the daemon lock."""

    DAEMON = "daemon"
    COMMAND = "command"  # a command applying a switch while no daemon runs


class OperatorError(RuntimeError):
    """A switch could not be handed over (one line, for the CLI)."""


class RequestError(ValueError):
    """A request file that is not to be trusted or not well formed."""


# --- who is asking ------------------------------------------------------------------------------


def text_problem(text: str, limit: int) -> str | None:
    """Why ``text`` cannot go into a request (user or reason), or None."""
    if len(text) > limit:
        return f"longer than {limit} characters"
    if not text.isprintable():
        return "contains control characters"
    return None


def login_name(env: Mapping[str, str] | None = None, uid: int | None = None) -> str:
    """The operator's login name: ``SUDO_USER``, else the name of the uid, never a bare number
    (``uid N`` when the uid has no name)."""
    env = os.environ if env is None else env
    sudo = env.get("SUDO_USER", "")
    if sudo and text_problem(sudo, 64) is None:
        return sudo
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# --- requests and replies -----------------------------------------------------------------------


def _new_id() -> str:
    return os.urandom(8).hex()


@dataclass(frozen=True)
class Request:
    """One switch as a command asks for it."""

    kind: Kind
    user: str
    reason: str = ""
    playbook: str | None = None  # reset, trigger
    duration: float | None = None  # pause --for; None: until resumed
    force: bool = False  # trigger
    dry_run: bool = False  # trigger
    id: str = field(default_factory=_new_id)
    boot: str = field(default_factory=boot_id)
    mono: float = field(default_factory=time.monotonic)  # when it was asked (this boot's clock)

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise RequestError(problem)

    def encode(self) -> bytes:
        doc = {
            "v": 1,
            "id": self.id,
            "kind": str(self.kind),
            "user": self.user,
            "reason": self.reason,
            "playbook": self.playbook,
            "for_s": self.duration,
            "force": self.force,
            "dry_run": self.dry_run,
            "boot": self.boot,
            "mono": self.mono,
        }
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, raw: bytes, expected_id: str) -> Request:
        """The request in ``raw``; :class:`RequestError` unless it is exactly well formed."""
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise RequestError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict) or set(doc) != _KEYS:
            raise RequestError("not a request: its fields are not the expected ones")
        if doc["v"] != 1 or doc["id"] != expected_id:
            raise RequestError("version or id does not match")
        try:
            kind = Kind(doc["kind"])
        except ValueError:
            raise RequestError(f"unknown kind {doc['kind']!r}") from None
        dur = doc["for_s"]
        types_ok = (
            all(isinstance(doc[k], str) for k in ("user", "reason", "boot"))
            and all(isinstance(doc[k], bool) for k in ("force", "dry_run"))
            and (doc["playbook"] is None or isinstance(doc["playbook"], str))
            and (dur is None or (isinstance(dur, int | float) and not isinstance(dur, bool)))
            and isinstance(doc["mono"], int | float)
            and not isinstance(doc["mono"], bool)
        )
        if not types_ok:
            raise RequestError("a field has the wrong type")
        return cls(
            kind,
            doc["user"],
            doc["reason"],
            doc["playbook"],
            None if dur is None else float(dur),
            doc["force"],
            doc["dry_run"],
            doc["id"],
            doc["boot"],
            float(doc["mono"]),
        )

    def stale(self, now: float) -> bool:
        """Asked on another boot, or so long ago that its command has given up."""
        return self.boot != boot_id() or not -1.0 <= now - self.mono <= STALE


def _problem(req: Request) -> str | None:
    if not _ID.fullmatch(req.id):
        return "bad id"
    if not req.user:
        return "no user"
    for what, text, limit in (("user", req.user, 64), ("reason", req.reason, MAX_REASON)):
        problem = text_problem(text, limit)
        if problem is not None:
            return f"{what} {problem}"
    names_playbook = req.kind in (Kind.RESET, Kind.TRIGGER)
    if names_playbook != (req.playbook is not None):
        return f"{req.kind} {'needs' if names_playbook else 'takes no'} playbook"
    if req.playbook is not None and (req.playbook == "" or text_problem(req.playbook, 200)):
        return "bad playbook name"
    if req.duration is not None and (
        req.kind is not Kind.PAUSE or not 0 < req.duration <= MAX_DURATION
    ):
        return "bad duration"
    if (req.force or req.dry_run) and req.kind is not Kind.TRIGGER:
        return f"{req.kind} takes no force or dry_run"
    return None


@dataclass(frozen=True)
class Reply:
    """What became of a request: applied or not, what it did, who applied it."""

    applied: bool
    message: str
    pid: int | None = None  # the daemon that applied it; None: the command itself did
    incident: str | None = None  # trigger: the incident it opened
    guard: str | None = None  # trigger: the guard that held it back

    def line(self, kind: Kind) -> str:
        """The acknowledgement an operator reads."""
        if self.pid is not None:
            how = "applied" if self.applied else "refused"
            return f"{how} by the daemon, pid {self.pid}: {self.message}"
        if not self.applied:
            return f"no daemon running: refused: {self.message}"
        here = "run by this command" if kind is Kind.TRIGGER else "applied to the state"
        return f"no daemon running: {here}: {self.message}"

    def encode(self, request_id: str) -> bytes:
        doc = {
            "id": request_id,
            "applied": self.applied,
            "message": self.message,
            "pid": self.pid,
            "incident": self.incident,
            "guard": self.guard,
        }
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, raw: bytes, request_id: str) -> Reply:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("id") != request_id:
            raise OperatorError("the daemon's answer is not readable")
        return cls(
            bool(doc.get("applied")),
            str(doc.get("message", "")),
            doc.get("pid") if isinstance(doc.get("pid"), int) else None,
            doc.get("incident") if isinstance(doc.get("incident"), str) else None,
            doc.get("guard") if isinstance(doc.get("guard"), str) else None,
        )


# --- the daemon lock ----------------------------------------------------------------------------


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, how)
        except BlockingIOError:
            os.close(fd)
            return False
        data = f"{os.getpid()} {role}\n".encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        self._fd = fd
        return True

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
            self._clear_leftovers()
        return None

    def close(self) -> None:
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
        """The requests waiting now (claimed, checked, removed), oldest name first."""
        if not self.usable:
            return []
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
            if ext == "json" and _ID.fullmatch(stem):
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


def describe(req: Request) -> dict[str, Any]:
    """A request's fields for a log line."""
    return {"request": req.id, "kind": str(req.kind), "user": req.user, "playbook": req.playbook}
