"""What the fleet answers, in words the engine and ``status`` use (no etcd imported here)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Holder:
    """A claim in the line, as its host wrote it (``since`` is that host's wall clock, for
    people to read; nothing compares it)."""

    host: str
    playbook: str
    incident: str
    since: str
    revision: int  # create revision: its place in the line
    lease: int

    def record(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "playbook": self.playbook,
            "incident": self.incident,
            "since": self.since,
        }


class State(enum.StrEnum):
    """This host in its pool, as ``status`` shows it."""

    IDLE = "idle"  # wants no slot
    WAITING = "waiting"  # in line
    HOLDING = "holding"  # holds a slot
    UNREACHABLE = "unreachable"  # no etcd member answered
    LOST = "lost"  # its claim's lease expired


class Answer(enum.StrEnum):
    PENDING = "pending"  # asked, no answer yet
    GRANTED = "granted"  # this host holds a slot
    BUSY = "busy"  # every slot is held by others: in line
    UNREACHABLE = "unreachable"  # no etcd member answered


@dataclass(frozen=True)
class Decision:
    answer: Answer
    holders: tuple[Holder, ...] = ()
    waiting: int = 0
    detail: str = ""

    @property
    def hosts(self) -> list[str]:
        return [h.host for h in self.holders]

    def reason(self) -> str:
        if self.answer is Answer.BUSY:
            return f"fleet slots busy ({', '.join(self.hosts)})"
        if self.answer is Answer.UNREACHABLE:
            causes = _causes(self.detail)
            return f"fleet unreachable ({causes})" if causes else "fleet unreachable"
        return f"fleet slot {self.answer}"


def _causes(detail: str) -> str:
    """Why no member answered, each cause once, without the endpoints (the same words for
    every retry: a hold-back is recorded again only when the cause changes)."""
    seen: list[str] = []
    for part in detail.split("; "):
        cause = _ENDPOINT.sub("", part.strip())
        if cause and cause not in seen:
            seen.append(cause)
    return "; ".join(seen)


_ENDPOINT = re.compile(r"^https?://\S+?: ")


PENDING = Decision(Answer.PENDING)
