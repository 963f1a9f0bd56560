"""JournalFollower on the journal of a real systemd (booted in namespaces), read from the host.

Messages come from transient units (``systemd-run --unit=NAME sh -c 'echo …'``): their own
stdout (``_SYSTEMD_UNIT``) and systemd's messages about them (``UNIT``, from PID 1).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from remediator.sources.journal import JournalEntry, JournalFollower
from tests.stack import wait_for
from tests.sysd import BootedSystemd

pytestmark = pytest.mark.systemd


def _unit() -> str:
    return f"rem-journal-{uuid.uuid4().hex[:8]}"


def _say(host: BootedSystemd, unit: str, text: str) -> None:
    """Run ``echo TEXT`` as transient unit ``unit`` (a new one each time) and wait for it."""
    host.run(["systemd-run", f"--unit={unit}", "--wait", "--quiet", "echo", text], check=True)


def _written(host: BootedSystemd, unit: str, text: str) -> None:
    """Wait until journald has stored ``text`` from ``unit`` (it reads stdout asynchronously)."""
    wait_for(lambda: text in host.journal(unit), 5, f"{text!r} in the journal", interval=0.02)


def _read_until(
    follower: JournalFollower, done: Callable[[list[JournalEntry]], bool], timeout: float = 5.0
) -> list[JournalEntry]:
    seen: list[JournalEntry] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.extend(follower.read())
        if done(seen):
            return seen
        time.sleep(0.01)
    return seen


def _has(text: bytes) -> Callable[[list[JournalEntry]], bool]:
    return lambda entries: any(e.message == text for e in entries)


@pytest.fixture
def journal_path(systemd_host: BootedSystemd) -> str:
    return str(systemd_host.root / "run/log/journal")


@pytest.fixture
def follow(journal_path: str) -> Iterator[Callable[..., JournalFollower]]:
    made: list[JournalFollower] = []

    def make(unit: str, cursor: str | None = None) -> JournalFollower:
        follower = JournalFollower(f"{unit}.service", path=journal_path, cursor=cursor)
        made.append(follower)
        return follower

    yield make
    for follower in made:
        follower.close()


def test_starts_at_the_end(
    systemd_host: BootedSystemd, follow: Callable[..., JournalFollower]
) -> None:
    unit = _unit()
    _say(systemd_host, unit, "old message")
    _written(systemd_host, unit, "old message")
    follower = follow(unit)
    assert follower.cursor is not None  # the last entry already there
    assert list(follower.read()) == []


def test_new_messages_of_the_unit_come_as_bytes(
    systemd_host: BootedSystemd, follow: Callable[..., JournalFollower]
) -> None:
    unit = _unit()
    follower = follow(unit)
    _say(systemd_host, unit, "new message")
    entries = _read_until(follower, _has(b"new message"))
    mine = next(e for e in entries if e.message == b"new message")
    assert isinstance(mine.message, bytes) and not mine.from_systemd and mine.pid
    assert mine.cursor and abs(mine.time - time.time()) < 60


def test_a_unit_new_to_the_journal_has_none_of_its_first_entries_skipped(
    systemd_host: BootedSystemd, follow: Callable[..., JournalFollower]
) -> None:
    unit = _unit()
    follower = follow(unit)  # the unit has no entry yet
    _say(systemd_host, unit, "hello")
    started = f"Started {unit}.service - /usr/bin/echo hello.".encode()
    done = f"{unit}.service: Deactivated successfully.".encode()
    entries = _read_until(follower, lambda es: len(es) >= 3)
    assert sorted(e.message for e in entries) == sorted([started, b"hello", done])
    assert [e.from_systemd for e in entries if e.message != b"hello"] == [True, True]


def test_messages_of_other_units_are_not_returned(
    systemd_host: BootedSystemd, follow: Callable[..., JournalFollower]
) -> None:
    unit, other = _unit(), _unit()
    follower = follow(unit)
    _say(systemd_host, other, "not mine")
    _say(systemd_host, unit, "mine")
    entries = _read_until(follower, _has(b"mine"))
    assert not any(b"not mine" in e.message or other.encode() in e.message for e in entries)


def test_unit_field_forged_by_another_process_is_ignored(
    systemd_host: BootedSystemd, follow: Callable[..., JournalFollower]
) -> None:
    unit = _unit()
    follower = follow(unit)
    forged = f"UNIT={unit}.service\nMESSAGE={unit}.service: Failed with result 'signal'.\n"
    systemd_host.run(["logger", "--journald"], input=forged, check=True)
    _say(systemd_host, unit, "real")
    entries = _read_until(follower, _has(b"real"))
    assert not any(b"Failed with result" in e.message for e in entries)


def test_resumes_after_the_saved_cursor(
    systemd_host: BootedSystemd, follow: Callable[..., JournalFollower]
) -> None:
    unit = _unit()
    first = follow(unit)
    _say(systemd_host, unit, "before")
    seen = _read_until(first, _has(b"before"))
    cursor = first.cursor
    assert cursor == seen[-1].cursor
    first.close()
    _say(systemd_host, unit, "while away")
    _written(systemd_host, unit, "while away")
    again = follow(unit, cursor=cursor)
    entries = _read_until(again, _has(b"while away"))
    assert [e.message for e in entries].count(b"while away") == 1
    assert all(e.cursor not in {s.cursor for s in seen} for e in entries)


def test_a_lost_cursor_starts_at_the_end(
    systemd_host: BootedSystemd, follow: Callable[..., JournalFollower]
) -> None:
    unit = _unit()
    _say(systemd_host, unit, "old")
    _written(systemd_host, unit, "old")
    follower = follow(unit, cursor="s=0;i=1;b=0;m=0;t=0;x=0")
    assert list(follower.read()) == []
    _say(systemd_host, unit, "new")
    assert _has(b"new")(_read_until(follower, _has(b"new")))


def test_follows_across_journal_rotation(
    systemd_host: BootedSystemd, follow: Callable[..., JournalFollower]
) -> None:
    unit = _unit()
    follower = follow(unit)
    _say(systemd_host, unit, "before rotation")
    assert _has(b"before rotation")(_read_until(follower, _has(b"before rotation")))
    systemd_host.run(["journalctl", "--rotate"], check=True)
    _say(systemd_host, unit, "after rotation")
    entries = _read_until(follower, _has(b"after rotation"))
    assert [e.message for e in entries].count(b"after rotation") == 1
