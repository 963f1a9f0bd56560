"""The systemd journal, by unit: messages of the unit's processes and systemd's own about it.

Read through systemd-python's ``Reader``; entries are classified with the same classifiers as
the error logs. Position is the journal cursor, saved by the caller and resumed after a
restart; with no cursor the reader starts at the end (old messages never trigger actions).
Journal file rotation and vacuuming are handled by the reader: its inotify watches are set up
when the follower is created and every ``read()`` processes them first, so a rotation is followed
whether or not the caller waits on ``fileno()``.

Only trusted fields select entries: ``_SYSTEMD_UNIT`` (set by journald from the sender's
cgroup) for the unit's own processes, and ``UNIT`` only on messages from PID 1 (systemd's own:
failed, start limit hit). Any local process may write ``UNIT=…`` into the journal; such a
message is not the unit's and must never trigger an action.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class JournalEntry:
    """One message: wall time (epoch seconds), the text as bytes, and where it came from."""

    time: float
    message: bytes
    pid: int | None
    from_systemd: bool
    cursor: str


class JournalFollower:
    """Follows one unit in the journal at ``path`` (None: the system journal).

    ``cursor`` is where to resume (the last entry seen, of this unit or, before any, of the
    journal); save it after each ``read()``.
    """

    def __init__(self, unit: str, *, path: str | None = None, cursor: str | None = None) -> None:
        import systemd.journal  # noqa: PLC0415 - needed only where a journal source is used

        self.unit = unit
        self._reader = systemd.journal.Reader(path=path, converters={"MESSAGE": _raw})
        self._reader.fileno()  # inotify watches from now on: files created later are seen
        self.cursor: str | None = None
        # Position first, on a real entry of any unit, and only then match: with the matches in
        # place, seek_tail on a unit with no entry yet leaves sd-journal nowhere to step from,
        # and it skips the unit's first new entries.
        if not (cursor and self._seek_cursor(cursor)):
            self._seek_end()
        self._reader.add_match(_SYSTEMD_UNIT=unit)
        self._reader.add_disjunction()
        # systemd's own messages about the unit (failed, start limit hit): from PID 1 only.
        self._reader.add_match(UNIT=unit, _PID="1")

    def _seek_cursor(self, cursor: str) -> bool:
        """Stand on the entry at ``cursor`` (already seen); False if the journal lost it."""
        try:
            self._reader.seek_cursor(cursor)
            entry = self._reader.get_next()  # no matches yet: exactly the entry at the cursor
        except (OSError, ValueError):  # ValueError: not a cursor at all (a damaged state file)
            entry = {}
        if entry and entry.get("__CURSOR") == cursor:
            self.cursor = cursor
            return True
        log.warning("journal_cursor_lost", unit=self.unit, cursor=cursor)
        return False

    def _seek_end(self) -> None:
        """Stand on the journal's last entry: everything after it is new."""
        self._reader.seek_tail()
        last = self._reader.get_previous()
        if last:
            self.cursor = last["__CURSOR"]
        else:  # an empty journal: all that comes is new
            self._reader.seek_head()

    def fileno(self) -> int:
        """A descriptor that becomes readable when the journal changes (for poll/select)."""
        return int(self._reader.fileno())

    def process(self) -> None:
        """Acknowledge a wake-up of ``fileno()`` (also picks up rotated journal files)."""
        self._reader.process()

    def read(self, limit: int = 10_000) -> Iterator[JournalEntry]:
        """New entries since the last read, oldest first (journal files rotated in included)."""
        self._reader.process()
        for _ in range(limit):
            entry: dict[str, Any] = self._reader.get_next()
            if not entry:
                return
            self.cursor = entry["__CURSOR"]
            yield JournalEntry(
                time=entry["__REALTIME_TIMESTAMP"].timestamp(),
                message=_message(entry.get("MESSAGE", b"")),
                pid=_int(entry.get("_PID")),
                from_systemd=_int(entry.get("_PID")) == 1,
                cursor=entry["__CURSOR"],
            )

    def close(self) -> None:
        self._reader.close()


def _raw(value: bytes | str) -> bytes:
    """Keep MESSAGE as bytes: it may be anything, and classifiers work on bytes."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _message(value: bytes | list[bytes]) -> bytes:
    """An entry's MESSAGE; a (malformed) entry with several keeps them all, one per line."""
    return b"\n".join(value) if isinstance(value, list) else value


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
