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

A PHP-FPM unit's cgroup also holds its workers, i.e. the PHP code, which may be compromised:
its ``syslog()`` calls land in the unit's journal with whatever ``SYSLOG_IDENTIFIER`` (or
``SYSLOG_PID``) it likes. For such a unit (``master``: a function naming the unit's main PIDs)
only the master's messages count: ``_UID=0`` (a worker runs as the pool's user; PHP-FPM refuses
root pools) *and* a ``_PID`` that systemd named the unit's main process (``MainPID`` and
``ExecMainPID``). Both are set by journald from the sender's credentials, not by the sender.
Main PIDs seen are remembered (the last :data:`MAIN_PIDS_KEPT`), so the last words of a master
that was replaced (a restart) still count when read after; a message from a PID not known yet
makes the function be asked again (a new master after a restart) before it is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)

MAIN_PIDS_KEPT = 16
SHOW_TIMEOUT = 5.0

MainPids = Callable[[], Iterable[int]]


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

    def __init__(
        self,
        unit: str,
        *,
        path: str | None = None,
        cursor: str | None = None,
        master: MainPids | None = None,
    ) -> None:
        import systemd.journal  # noqa: PLC0415 - needed only where a journal source is used

        self.unit = unit
        self._master = master
        self._mains: dict[int, None] = {}  # main PIDs seen, oldest first
        if master is not None:
            self._learn_mains(master)
        self._reader = systemd.journal.Reader(path=path, converters={"MESSAGE": _raw})
        self._reader.fileno()  # inotify watches from now on: files created later are seen
        self.cursor: str | None = None
        # Position first, on a real entry of any unit, and only then match: with the matches in
        # place, seek_tail on a unit with no entry yet leaves sd-journal nowhere to step from,
        # and it skips the unit's first new entries.
        if not (cursor and self._seek_cursor(cursor)):
            self._seek_end()
        if master is None:
            self._reader.add_match(_SYSTEMD_UNIT=unit)
        else:  # the master only: root, in the unit's cgroup (its PID is checked in read())
            self._reader.add_match(_SYSTEMD_UNIT=unit, _UID="0")
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
            pid = _int(entry.get("_PID"))
            if pid != 1 and not self._from_master(pid):
                continue
            yield JournalEntry(
                time=entry["__REALTIME_TIMESTAMP"].timestamp(),
                message=_message(entry.get("MESSAGE", b"")),
                pid=pid,
                from_systemd=pid == 1,
                cursor=entry["__CURSOR"],
            )

    def _from_master(self, pid: int | None) -> bool:
        """Whether a message of the unit's cgroup counts (always, when no master is asked)."""
        if self._master is None:
            return True
        if pid is None:
            return False
        if pid not in self._mains:
            self._learn_mains(self._master)  # a new master (restarted) since the last message
        if pid in self._mains:
            return True
        log.debug("journal_entry_not_master", unit=self.unit, pid=pid)
        return False

    def _learn_mains(self, master: MainPids) -> None:
        try:
            found = [p for p in master() if p > 1]
        except OSError as exc:
            log.warning("journal_main_pid_unknown", unit=self.unit, error=str(exc))
            return
        for pid in found:
            self._mains.pop(pid, None)
            self._mains[pid] = None
        while len(self._mains) > MAIN_PIDS_KEPT:
            del self._mains[next(iter(self._mains))]

    def close(self) -> None:
        self._reader.close()


def systemd_main_pids(unit: str) -> MainPids:
    """Asks systemd (``systemctl show``) for ``unit``'s ``MainPID`` and ``ExecMainPID``."""
    from remediator.system import run_command  # noqa: PLC0415 - only for a master-only source

    argv = ["systemctl", "show", "--property=MainPID", "--property=ExecMainPID", unit]

    def ask() -> list[int]:
        result = run_command(argv, SHOW_TIMEOUT)
        if not result.ok:
            raise OSError(f"systemctl show {unit}: {result.output.strip()[-200:]}")
        return [
            pid
            for line in result.output.splitlines()
            if (pid := _int(line.partition("=")[2])) is not None
        ]

    return ask


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
