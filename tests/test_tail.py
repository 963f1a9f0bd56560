"""The tailer on real files: appends, every rotation form, permissions, restarts, both backends.

Every test that tails runs twice, with inotify and with polling. A test looks at the files with a
clock it sets (one poll interval per look), so polling is deterministic; inotify events are queued
by the kernel during the write, so they are there when the test looks. The tests with a writer
thread use the real clock and ``select()`` as the daemon's loop does.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from remediator.sources.offsets import STATE_FILE
from remediator.sources.tail import MAX_LINE, Backend, Follower, FollowState, FollowStatus, Tailer
from tests.require import lacking
from tests.unprivileged import NOBODY, NobodyPython

BACKENDS = [Backend.INOTIFY, Backend.POLLING]
LINGER = 5.0


class Follow:
    """A tailer of one path, looked at one poll interval (1 s of its own clock) at a time."""

    def __init__(self, path: Path, backend: Backend, state_dir: Path | None = None) -> None:
        self.path = path
        self.backend = backend
        self.state_dir = state_dir
        self.now = 100.0
        self.start()

    def start(self) -> None:
        self.tailer = Tailer(
            [self.path],
            backend=self.backend,
            state_dir=self.state_dir,
            poll_interval=1.0,
            rescan_interval=None,  # with inotify, events alone must do
            linger=LINGER,
        )

    def stop(self) -> None:
        self.tailer.checkpoint()
        self.tailer.close()

    @property
    def follower(self) -> Follower:
        return self.tailer.followers[self.path]

    def lines(self, advance: float = 1.0) -> list[bytes]:
        self.now += advance
        return self.tailer.process(self.now).get(self.path, [])


@pytest.fixture(params=BACKENDS, ids=str)
def backend(request: pytest.FixtureRequest) -> Backend:
    value: Backend = request.param
    return value


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "access.log"
    path.write_bytes(b"old 1\nold 2\n")
    return path


@pytest.fixture
def follow(backend: Backend) -> Iterator[Callable[..., Follow]]:
    made: list[Follow] = []

    def make(path: Path, state_dir: Path | None = None) -> Follow:
        f = Follow(path, backend, state_dir)
        made.append(f)
        return f

    yield make
    for f in made:
        f.tailer.close()


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def dot1(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def open_inodes() -> set[tuple[int, int]]:
    """(device, inode) of every file this process has open."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            st = fd.stat()
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


# -- reading -------------------------------------------------------------------------------------


def test_appended_lines_are_returned_without_their_newline(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    append(log_path, b"GET / 200\nGET /x 502\n")
    assert f.lines() == [b"GET / 200", b"GET /x 502"]


def test_lines_there_before_start_are_skipped_without_saved_state(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    assert f.lines() == []
    append(log_path, b"new\n")
    assert f.lines() == [b"new"]


def test_line_half_written_at_start_is_skipped(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    append(log_path, b"begun before start")
    f = follow(log_path)
    append(log_path, b" and ended after\nnext\n")
    assert f.lines() == [b"next"]


def test_partial_line_is_returned_once_its_newline_arrives(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    append(log_path, b"GET /slo")
    assert f.lines() == []
    append(log_path, b"w 200\n")
    assert f.lines() == [b"GET /slow 200"]


def test_overlong_line_is_cut_at_the_cap_and_its_rest_dropped(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    append(log_path, b"a" * (MAX_LINE - 10))
    assert f.lines() == []
    append(log_path, b"b" * 100)
    assert f.lines() == [b"a" * (MAX_LINE - 10) + b"b" * 10]
    append(log_path, b"c" * 100_000 + b"\nafter\n")
    assert f.lines() == [b"after"]
    assert f.follower.counters.overlong == 1


def test_overlong_line_written_at_once_is_cut_and_counted(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    append(log_path, b"x" * (3 * MAX_LINE) + b"\nshort\n")
    assert f.lines() == [b"x" * MAX_LINE, b"short"]
    assert f.follower.counters.overlong == 1


def test_invalid_utf8_is_returned_as_bytes(log_path: Path, follow: Callable[..., Follow]) -> None:
    f = follow(log_path)
    append(log_path, b"GET /\xff\xfe\xc3( 200\n\x00\x80\n")
    assert f.lines() == [b"GET /\xff\xfe\xc3( 200", b"\x00\x80"]


def test_counters_count_lines_and_bytes(log_path: Path, follow: Callable[..., Follow]) -> None:
    f = follow(log_path)
    append(log_path, b"one\ntwo\nthr")
    f.lines()
    counters = f.follower.counters
    assert (counters.lines, counters.bytes) == (2, 11)


# -- rotation ------------------------------------------------------------------------------------


def test_rename_rotation_finishes_old_file_then_reads_new_one_from_start(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    append(log_path, b"1\n")
    assert f.lines() == [b"1"]
    append(log_path, b"2\n")
    log_path.rename(dot1(log_path))
    append(dot1(log_path), b"3 written before the writer reopened\n")
    log_path.write_bytes(b"4\n5\n")
    assert f.lines() == [b"2", b"3 written before the writer reopened", b"4", b"5"]
    assert f.follower.counters.rotations == 1


def test_lines_appended_to_rotated_file_after_the_switch_are_read(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    log_path.rename(dot1(log_path))
    log_path.write_bytes(b"new 1\n")
    assert f.lines() == [b"new 1"]
    append(dot1(log_path), b"late\n")
    assert f.lines() == [b"late"]


def test_rotated_file_is_closed_once_quiet_for_the_linger_time(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    old = log_path.stat()
    log_path.rename(dot1(log_path))
    log_path.write_bytes(b"")
    f.lines()
    assert (old.st_dev, old.st_ino) in open_inodes()
    f.lines(advance=LINGER)
    assert (old.st_dev, old.st_ino) not in open_inodes()


def test_copytruncate_reads_the_file_again_from_its_start(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    append(log_path, b"1\n")
    assert f.lines() == [b"1"]
    shutil.copyfile(log_path, dot1(log_path))
    os.truncate(log_path, 0)
    append(log_path, b"2\n")
    assert f.lines() == [b"2"]
    assert f.follower.counters.truncations == 1


def test_copytruncate_takes_lines_not_read_yet_from_the_copy(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    append(log_path, b"1\n")
    assert f.lines() == [b"1"]
    append(log_path, b"2 unread when copied\n")
    shutil.copyfile(log_path, dot1(log_path))
    os.truncate(log_path, 0)
    append(log_path, b"3\n")
    assert f.lines() == [b"2 unread when copied", b"3"]


def test_truncation_starts_again_from_zero(log_path: Path, follow: Callable[..., Follow]) -> None:
    f = follow(log_path)
    os.truncate(log_path, 0)
    assert f.lines() == []
    append(log_path, b"after\n")
    assert f.lines() == [b"after"]
    assert f.follower.counters.truncations == 1


def test_truncated_file_rewritten_past_our_offset_is_noticed_by_its_first_bytes(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    with log_path.open("wb") as w:  # truncates, then writes more than we had read
        w.write(b"a much longer first line than before\n")
    assert f.lines() == [b"a much longer first line than before"]


def test_delete_and_recreate_finishes_old_file_then_reads_new_one(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    writer = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    log_path.unlink()
    os.write(writer, b"into the deleted file\n")
    os.close(writer)
    log_path.write_bytes(b"new\n")
    assert f.lines() == [b"into the deleted file", b"new"]
    assert f.follower.counters.rotations == 1


def test_missing_file_is_waiting_then_read_from_its_start(
    tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    path = tmp_path / "later.log"
    f = follow(path)
    assert f.lines() == []
    assert f.follower.status == FollowStatus(FollowState.WAITING, "does not exist")
    path.write_bytes(b"first\n")
    assert f.lines() == [b"first"]
    assert f.follower.status == FollowStatus(FollowState.OK)


def test_file_in_a_directory_that_does_not_exist_yet_is_followed_once_created(
    tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    path = tmp_path / "nginx" / "error.log"
    f = follow(path)
    assert f.lines() == []
    path.parent.mkdir()
    path.write_bytes(b"first\n")
    assert f.lines() == [b"first"]
    append(path, b"second\n")
    assert f.lines() == [b"second"]


def test_directory_removed_and_made_again_is_watched_again(
    tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    path = tmp_path / "site" / "access.log"
    path.parent.mkdir()
    path.write_bytes(b"")
    f = follow(path)
    shutil.rmtree(path.parent)
    f.lines(advance=LINGER)
    path.parent.mkdir()
    path.write_bytes(b"first\n")
    assert f.lines() == [b"first"]
    append(path, b"second\n")
    assert f.lines() == [b"second"]


def test_removed_file_is_ok_during_the_linger_time_then_waiting(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    log_path.unlink()
    f.lines()
    assert f.follower.status.state is FollowState.OK
    f.lines(advance=LINGER)
    assert f.follower.status == FollowStatus(FollowState.WAITING, "removed")


def test_removed_file_is_let_go_once_quiet_for_the_linger_time(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    st = log_path.stat()
    log_path.unlink()
    f.lines()
    assert (st.st_dev, st.st_ino) in open_inodes()
    f.lines(advance=LINGER)
    assert (st.st_dev, st.st_ino) not in open_inodes()


def test_path_replaced_by_a_directory_is_blind(
    log_path: Path, follow: Callable[..., Follow]
) -> None:
    f = follow(log_path)
    log_path.unlink()
    log_path.mkdir()
    f.lines()
    assert f.follower.status.state is FollowState.BLIND
    assert f.follower.status.reason == "not a regular file (a directory)"


def test_one_tailer_follows_many_files(tmp_path: Path, backend: Backend) -> None:
    paths = [tmp_path / f"site{i}.log" for i in range(3)]
    for path in paths:
        path.write_bytes(b"")
    with Tailer(paths, backend=backend, poll_interval=1.0, rescan_interval=None) as tailer:
        for i, path in enumerate(paths):
            append(path, b"line of %d\n" % i)
        got = tailer.process(10.0)
    assert got == {path: [b"line of %d" % i] for i, path in enumerate(paths)}


def test_unfollowed_file_is_closed(log_path: Path, follow: Callable[..., Follow]) -> None:
    f = follow(log_path)
    st = log_path.stat()
    assert (st.st_dev, st.st_ino) in open_inodes()
    f.tailer.unfollow(log_path)
    assert (st.st_dev, st.st_ino) not in open_inodes()


def test_state_changes_are_logged_once_each(tmp_path: Path, follow: Callable[..., Follow]) -> None:
    path = tmp_path / "later.log"
    with capture_logs() as logs:
        f = follow(path)
        f.lines()
        f.lines()
        path.write_bytes(b"")
        f.lines()
        f.lines()
    events = [(e["event"], e.get("reason")) for e in logs if e["event"].startswith("source_")]
    assert events == [("source_waiting", "does not exist"), ("source_recovered", None)]


# -- permissions, for real: as an unprivileged user ---------------------------------------------

_AS_NOBODY = r"""
import json, os, sys
from pathlib import Path
from structlog.testing import capture_logs
from remediator.sources.tail import Backend, Tailer

root, backend, scenario = Path(sys.argv[1]), Backend(sys.argv[2]), sys.argv[3]
path = root / "app.log"
seen = []

def look(tailer, now):
    lines = tailer.process(now).get(path, [])
    status = tailer.followers[path].status
    seen.append([status.state.value, status.reason, [x.decode() for x in lines]])

with capture_logs() as logs:
    path.write_bytes(b"old\n")
    writer = os.open(path, os.O_WRONLY | os.O_APPEND)
    if scenario == "unreadable_at_start":
        os.chmod(path, 0)
        tailer = Tailer([path], backend=backend, rescan_interval=None)
        look(tailer, 1.0)
        os.write(writer, b"written while blind\n")
        look(tailer, 2.0)
        os.chmod(path, 0o644)
        look(tailer, 3.0)
    else:  # a rotation creates a new file we may not read
        tailer = Tailer([path], backend=backend, rescan_interval=None)
        look(tailer, 1.0)
        os.write(writer, b"last of old\n")
        path.rename(root / "app.log.1")
        os.close(writer)
        writer = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.chmod(path, 0)
        os.write(writer, b"first of new\n")
        look(tailer, 2.0)
        os.chmod(path, 0o600)
        look(tailer, 3.0)
    os.write(writer, b"after\n")
    look(tailer, 4.0)
events = [e["event"] for e in logs if e["event"].startswith("source_")]
print(json.dumps({"euid": os.geteuid(), "seen": seen, "events": events}))
"""


@pytest.fixture(scope="module")
def nobody_python() -> Iterator[NobodyPython]:
    """The tailer and structlog where nobody can read them (the checkout may be under /root)."""
    with NobodyPython(["remediator.sources.tail", "structlog.testing"]) as py:
        yield py


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory an unprivileged user owns (pytest's tmp_path is closed to other users)."""
    path = Path(tempfile.mkdtemp(prefix="tail-nobody-"))
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_unprivileged(
    py: NobodyPython, root: Path, backend: Backend, scenario: str
) -> dict[str, Any]:
    proc = py.run(["-c", _AS_NOBODY, str(root), backend.value, scenario])
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    assert result["euid"] != 0, "permission checks do not apply to root"
    return result


def test_unreadable_file_is_blind_then_read_from_where_it_ended(
    nobody_python: NobodyPython, nobody_dir: Path, backend: Backend
) -> None:
    result = _run_unprivileged(nobody_python, nobody_dir, backend, "unreadable_at_start")
    assert result["seen"] == [
        ["blind", "permission denied", []],
        ["blind", "permission denied", []],
        ["ok", "", ["written while blind"]],
        ["ok", "", ["after"]],
    ]
    assert result["events"] == ["source_blind", "source_recovered"]


def test_unreadable_new_file_after_rotation_is_blind_then_read_from_its_start(
    nobody_python: NobodyPython, nobody_dir: Path, backend: Backend
) -> None:
    result = _run_unprivileged(nobody_python, nobody_dir, backend, "unreadable_after_rotation")
    assert result["seen"] == [
        ["ok", "", []],
        ["blind", "permission denied", ["last of old"]],
        ["ok", "", ["first of new"]],
        ["ok", "", ["after"]],
    ]
    assert result["events"] == [
        "source_following",
        "source_rotated",
        "source_blind",
        "source_recovered",
    ]


# -- offsets across restarts ---------------------------------------------------------------------


def test_restart_resumes_at_the_checkpoint(
    log_path: Path, tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    state = tmp_path / "state"
    f = follow(log_path, state)
    append(log_path, b"1\n")
    assert f.lines() == [b"1"]
    f.stop()
    f.start()
    append(log_path, b"2 written while stopped\n")
    assert f.lines() == [b"2 written while stopped"]


def test_restart_reads_again_a_half_line_it_had_not_returned(
    log_path: Path, tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    state = tmp_path / "state"
    f = follow(log_path, state)
    append(log_path, b"1\nhalf")
    assert f.lines() == [b"1"]
    f.stop()
    f.start()
    append(log_path, b" done\n")
    assert f.lines() == [b"half done"]


def test_restart_after_rotation_reads_rest_of_old_file_from_dot_one_then_new_file(
    log_path: Path, tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    state = tmp_path / "state"
    f = follow(log_path, state)
    f.stop()
    append(log_path, b"1 before rotation\n")
    log_path.rename(dot1(log_path))
    log_path.write_bytes(b"2 new file\n")
    f.start()
    assert f.lines() == [b"1 before rotation", b"2 new file"]
    assert f.follower.counters.rotations == 1


def test_restart_on_same_inode_with_other_first_bytes_reads_from_start(
    log_path: Path, tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    """Inode reuse: a file deleted while we were stopped, and a new one given its number."""
    state = tmp_path / "state"
    f = follow(log_path, state)
    f.stop()
    with log_path.open("r+b") as w:  # same inode, other content, longer than the offset
        w.write(b"NEW 1\nNEW 2\nNEW 3\n")
    f.start()
    assert f.lines() == [b"NEW 1", b"NEW 2", b"NEW 3"]


def test_restart_on_file_shorter_than_saved_offset_reads_from_start(
    log_path: Path, tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    state = tmp_path / "state"
    f = follow(log_path, state)
    f.stop()
    os.truncate(log_path, 0)
    append(log_path, b"x\n")
    f.start()
    assert f.lines() == [b"x"]


def test_restart_after_file_appeared_while_stopped_reads_it_from_start(
    tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    path, state = tmp_path / "later.log", tmp_path / "state"
    f = follow(path, state)
    f.lines()
    f.stop()
    path.write_bytes(b"written while stopped\n")
    f.start()
    assert f.lines() == [b"written while stopped"]


def test_corrupt_state_is_reported_and_taken_as_no_state(
    log_path: Path, tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_bytes(b'{"version": 1, "files": {"x": {"dev": "')
    with capture_logs() as logs:
        f = follow(log_path, state)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["offset_state_corrupt"]
    append(log_path, b"new\n")
    assert f.lines() == [b"new"]


def test_checkpoint_replaces_the_state_file_by_rename(
    log_path: Path, tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    state = tmp_path / "state"
    f = follow(log_path, state)
    assert f.tailer.checkpoint()
    first = (state / STATE_FILE).stat().st_ino
    append(log_path, b"1\n")
    f.lines()
    assert f.tailer.checkpoint()
    saved = json.loads((state / STATE_FILE).read_bytes())
    assert saved["files"][str(log_path)]["offset"] == log_path.stat().st_size
    assert (state / STATE_FILE).stat().st_ino != first
    assert sorted(p.name for p in state.iterdir()) == [STATE_FILE]


def test_checkpoint_writes_nothing_when_no_offset_moved(
    log_path: Path, tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    state = tmp_path / "state"
    f = follow(log_path, state)
    assert f.tailer.checkpoint()
    f.lines()
    assert not f.tailer.checkpoint()


def test_reading_lines_never_writes_state(
    log_path: Path, tmp_path: Path, follow: Callable[..., Follow]
) -> None:
    state = tmp_path / "state"
    f = follow(log_path, state)
    append(log_path, b"1\n2\n")
    assert f.lines() == [b"1", b"2"]
    assert not state.exists()


# -- the descriptor and the clock ----------------------------------------------------------------


def _readable(fd: int, wait: float) -> bool:
    return bool(select.select([fd], [], [], wait)[0])


def test_inotify_descriptor_becomes_readable_when_a_line_is_appended(log_path: Path) -> None:
    with Tailer([log_path], backend=Backend.INOTIFY, rescan_interval=None) as tailer:
        tailer.process(1.0)
        assert not _readable(tailer.fileno(), 0)
        append(log_path, b"x\n")
        assert _readable(tailer.fileno(), 1.0)


def test_inotify_events_within_the_batch_interval_wait_for_its_end(log_path: Path) -> None:
    with Tailer(
        [log_path], backend=Backend.INOTIFY, rescan_interval=None, batch_interval=0.5
    ) as tailer:
        tailer.process(1.0)
        append(log_path, b"a\n")
        assert tailer.process(2.0) == {log_path: [b"a"]}
        append(log_path, b"b\n")  # close behind a: the batch interval begins with it
        assert _readable(tailer.fileno(), 1.0)
        assert tailer.process(2.1) == {log_path: [b"b"]}
        append(log_path, b"c\n")
        assert not _readable(tailer.fileno(), 0)
        assert tailer.timeout(2.2) == pytest.approx(0.4)
        assert tailer.process(2.2) == {}
        assert tailer.process(2.6) == {log_path: [b"c"]}


def test_the_first_events_after_a_quiet_spell_cost_one_wakeup_not_two(log_path: Path) -> None:
    """An idle site's probe writes a line a second: read at once, and no pause follows whose
    end would wake the loop only to re-arm inotify."""
    with Tailer(
        [log_path], backend=Backend.INOTIFY, rescan_interval=None, batch_interval=0.04
    ) as tailer:
        tailer.process(1.0)
        for n, now in enumerate((2.0, 3.0, 4.0)):
            append(log_path, b"probe %d\n" % n)
            assert _readable(tailer.fileno(), 1.0)
            assert tailer.process(now) == {log_path: [b"probe %d" % n]}
            assert tailer.timeout(now) is None  # nothing to wake up for
            assert not _readable(tailer.fileno(), 0)


def test_inotify_sees_a_new_file_at_once_not_at_the_next_poll(tmp_path: Path) -> None:
    path = tmp_path / "later.log"
    with Tailer([path], backend=Backend.INOTIFY, poll_interval=3600, rescan_interval=None) as t:
        t.process(1.0)
        path.write_bytes(b"first\n")
        assert _readable(t.fileno(), 1.0)
        assert t.process(2.0) == {path: [b"first"]}


def test_idle_inotify_tailer_asks_for_no_wakeup(log_path: Path) -> None:
    with Tailer([log_path], backend=Backend.INOTIFY, rescan_interval=None) as tailer:
        tailer.process(1.0)
        assert tailer.timeout(2.0) is None
        assert not _readable(tailer.fileno(), 0.05)


def test_polling_looks_again_only_once_its_interval_passed(log_path: Path) -> None:
    with Tailer([log_path], backend=Backend.POLLING, poll_interval=2.0) as tailer:
        tailer.process(10.0)
        append(log_path, b"x\n")
        assert tailer.timeout(11.0) == 1.0
        assert tailer.process(11.0) == {}
        assert tailer.process(12.0) == {log_path: [b"x"]}


def test_polling_descriptor_never_becomes_ready(log_path: Path) -> None:
    with Tailer([log_path], backend=Backend.POLLING) as tailer:
        append(log_path, b"x\n")
        assert not _readable(tailer.fileno(), 0.05)


_NO_INOTIFY = r"""
import json, sys
from structlog.testing import capture_logs
from remediator.sources.inotify import InotifyUnavailableError
from remediator.sources.tail import Backend, Tailer
with capture_logs() as logs:
    try:
        Tailer([sys.argv[1]], backend=Backend.INOTIFY)
        forced = "inotify"
    except InotifyUnavailableError:
        forced = "refused"
    auto = Tailer([sys.argv[1]], backend=Backend.AUTO).backend.value
warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
print(json.dumps([forced, auto, warnings]))
"""


def test_auto_backend_polls_where_inotify_is_refused(log_path: Path) -> None:
    """In a user namespace whose inotify instance limit is 0, inotify_init1 fails for real."""
    script = 'echo 0 > /proc/sys/user/max_inotify_instances && exec "$0" "$@"'
    cmd = ["unshare", "--user", "--map-root-user", "sh", "-c", script]
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [*cmd, sys.executable, "-c", _NO_INOTIFY, str(log_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo,
        check=False,
    )
    if proc.returncode != 0 and "unshare" in proc.stderr:
        lacking("userns", proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["refused", "polling", ["inotify_unavailable"]]


# -- rotations while a writer is writing ---------------------------------------------------------


class Writer(threading.Thread):
    """Appends numbered lines, one write() each, as a web server does; reopens the path when
    asked (its log reopen after a rotation), until then writing into the old file."""

    def __init__(self, path: Path, count: int) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.count = count
        self.reopen = threading.Event()
        self.written: list[bytes] = []

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for i in range(self.count):
            if self.reopen.is_set():
                os.close(fd)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self.reopen.clear()
            line = b"line %06d" % i
            os.write(fd, line + b"\n")
            self.written.append(line)
            if i % 5 == 4:
                time.sleep(0.001)
        os.close(fd)


def _follow_while_writing(
    path: Path, backend: Backend, rotate: Callable[[Writer, int], None], count: int = 2000
) -> list[bytes]:
    """Follow ``path`` like the daemon's loop (default batching) while a writer writes ``count``
    lines; call ``rotate`` three times, each once the follower has read another fifth of them
    (so it has looked at the current file: a file rotated away before anyone looked at it is
    not what is tested here)."""
    seen: list[bytes] = []

    def look(until: float) -> None:
        nonlocal seen
        while (now := time.monotonic()) < until:
            wait = tailer.timeout(now)
            wait = until - now if wait is None else min(wait, until - now)
            select.select([tailer.fileno()], [], [], wait)
            seen += tailer.process(time.monotonic()).get(path, [])

    with Tailer([path], backend=backend, poll_interval=0.02, rescan_interval=None) as tailer:
        writer = Writer(path, count)
        writer.start()
        rotations = 0
        while writer.is_alive():
            look(time.monotonic() + 0.005)
            due = len(seen) > (rotations + 1) * count // 5
            if rotations < 3 and due and not writer.reopen.is_set():
                rotations += 1
                rotate(writer, rotations)
        writer.join()
        look(time.monotonic() + 0.2)
        assert rotations == 3
        return seen


def test_rename_rotation_while_lines_are_written_loses_none(
    tmp_path: Path, backend: Backend
) -> None:
    path = tmp_path / "busy.log"

    def rotate(writer: Writer, n: int) -> None:
        path.rename(path.with_name(f"busy.log.{n}"))
        path.touch()
        writer.reopen.set()

    seen = _follow_while_writing(path, backend, rotate)
    assert seen == [b"line %06d" % i for i in range(2000)]


def test_delete_and_recreate_while_lines_are_written_loses_none(
    tmp_path: Path, backend: Backend
) -> None:
    path = tmp_path / "busy.log"

    def rotate(writer: Writer, n: int) -> None:
        path.unlink()
        path.touch()
        writer.reopen.set()

    seen = _follow_while_writing(path, backend, rotate)
    assert seen == [b"line %06d" % i for i in range(2000)]


def _in_order_once(seen: list[bytes], count: int) -> bool:
    numbers = [int(line.split()[1]) for line in seen]
    return numbers == sorted(set(numbers)) and all(0 <= n < count for n in numbers)


def test_copytruncate_while_lines_are_written_reads_every_line_left_on_disk(
    tmp_path: Path, backend: Backend
) -> None:
    """What the writer appends between copy and truncate is logrotate's loss; the rest is ours."""
    path = tmp_path / "busy.log"
    copies: list[Path] = []

    def rotate(writer: Writer, n: int) -> None:
        if dot1(path).exists():
            copies.append(dot1(path).rename(path.with_name(f"busy.log.copy{n}")))
        shutil.copyfile(path, dot1(path))
        os.truncate(path, 0)

    seen = _follow_while_writing(path, backend, rotate)
    on_disk = b"".join(p.read_bytes() for p in [*copies, dot1(path), path]).splitlines()
    assert _in_order_once(seen, 2000)
    assert set(on_disk) <= set(seen)


def test_truncation_while_lines_are_written_reads_every_line_after_it(
    tmp_path: Path, backend: Backend
) -> None:
    path = tmp_path / "busy.log"

    def rotate(writer: Writer, n: int) -> None:
        os.truncate(path, 0)

    seen = _follow_while_writing(path, backend, rotate)
    assert _in_order_once(seen, 2000)
    assert set(path.read_bytes().splitlines()) <= set(seen)
