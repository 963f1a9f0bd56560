"""The operator's switches as requests to the running daemon: pause, resume, reset, trigger.

The daemon is the one owner of its state. For its whole life it holds an exclusive ``flock``
on ``STATE_DIR/daemon.lock`` (its pid and role written inside). A command tries that lock
without blocking:

- held by a daemon: the command writes a request, ``STATE_DIR/requests/ID.json`` (a directory
  only root may enter, the file written atomically), and waits up to 2 seconds for
  the daemon's answer, ``ID.ack``. The daemon claims a request by renaming it to ``ID.taken``,
  so a command that gives up can withdraw its request only while nobody has it.
- free: the command holds the lock itself while it applies the request to the state (so no
  daemon starts meanwhile), then lets go.

Nothing else ever reads a request: a one-shot ``trigger`` takes none meant for the daemon.
Request files are trusted like the config: a regular file, owned by root or the daemon's user,
writable by nobody else, small, JSON with exactly the expected fields; anything else in the
directory is logged and removed, never applied.

This module says what a request and its answer are; :mod:`remediator.daemonlock` is the lock,
:mod:`remediator.inbox` carries requests both ways, :mod:`remediator.switches` applies them.
"""

from __future__ import annotations

import enum
import json
import os
import pwd
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from remediator.state import boot_id

STALE = 30.0  # a request older than this was given up by its command: never applied
MAX_REASON = 500
MAX_DURATION = 366 * 86400.0

REQUEST_ID = re.compile(r"[0-9a-f]{16}")
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
    if not REQUEST_ID.fullmatch(req.id):
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


def describe(req: Request) -> dict[str, Any]:
    """A request's fields for a log line."""
    return {"request": req.id, "kind": str(req.kind), "user": req.user, "playbook": req.playbook}
