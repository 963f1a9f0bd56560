"""A stateful model of the tailer: random writes, rotations, truncations and restarts on real files.

A writer holds its log open and appends to it (whole lines, or a line in two pieces) as a web
server does; rotations rename, delete, copy and truncate the real files, and the writer reopens the
path only when told (until then it goes on writing into the old file). The tailer is looked at
("an observation": ``process()`` while running, or the first one after a restart) at random points
and stopped (checkpoint, close) and started again from its saved state.

At every observation the model checks that the lines returned so far are written lines, in write
order, each at most once, none from before the first start, and that they include every line
written since the previous observation except those that are lost by nature or by design:

- a file that came and went between two observations (never at the path when anyone looked);
- bytes destroyed by a truncation before they were read (logrotate's copy at ``path.1`` may bring
  them back: allowed, not required), and anything written to a rotated-away file after it was cut;
- a rotated-away file written to after ``linger`` seconds with no write to it (the tailer let it
  go, so its space can be freed), or while more than four rotated-away files are held open; the
  same for a file removed from the path and not replaced;
- across a restart, a file other than the saved one (found at the path, or renamed to ``path.1``)
  and the one at the path at restart; and lines of the saved file written after it was cut.

Every other line must be there, including lines appended to the old file after the tailer already
switched to the new one, and a half line completed after a restart.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from remediator.sources.tail import Backend, FollowState, Tailer

LINGER = 3.0  # in observations: the model's clock moves one second per observation
MAX_RETIRED = 4


class TailModel(RuleBasedStateMachine):
    backend: ClassVar[Backend]

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tail-model-"))
        self.path = self.dir / "app.log"
        self.dot1 = self.dir / "app.log.1"
        self.dot2 = self.dir / "app.log.2"
        self.state_dir = self.dir / "state"
        self.path.write_bytes(b"old-1\nold-2\n")  # before the first start: never to be seen
        self.now = 0.0
        self.counter = 0
        # Files: generation ids; epoch = how many times a generation was truncated.
        self.epoch: dict[int, int] = {0: 0}
        self.next_gen = 1
        self.at_path: int | None = 0
        self.at_dot1: int | None = None
        # The writer.
        self.wfd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.w_gen = 0
        self.partial: bytes | None = None
        # What was written and seen.
        self.written: list[bytes] = []
        self.seen: list[bytes] = []
        self.since: list[tuple[bytes, int, int]] = []  # (line, generation, epoch)
        self.touched: set[tuple[int, int]] = set()  # (generation, epoch) given bytes since
        # What the tailer holds, as the model predicts it.
        self.cur: int | None = 0
        self.cur_last = 0.0
        self.missing_since: float | None = None
        self.retired: list[list[float]] = []  # [generation, last data, epoch when retired]
        self.saved: tuple[int, int] | None = None  # (generation, epoch) at the last stop
        self.tailer: Tailer | None = self._start()
        self._observe_start(first=True)

    def teardown(self) -> None:
        os.close(self.wfd)
        if self.tailer is not None:
            self.tailer.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------

    def _start(self) -> Tailer:
        return Tailer(
            [self.path],
            state_dir=self.state_dir,
            backend=self.backend,
            poll_interval=1.0,
            rescan_interval=None,  # with inotify, events alone must be enough
            linger=LINGER,
        )

    def _new_gen(self) -> int:
        gen = self.next_gen
        self.next_gen += 1
        self.epoch[gen] = 0
        return gen

    def _write(self, data: bytes, completed: list[bytes]) -> None:
        os.write(self.wfd, data)
        ep = self.epoch[self.w_gen]
        self.touched.add((self.w_gen, ep))
        for line in completed:
            self.written.append(line)
            self.since.append((line, self.w_gen, ep))

    def _fresh(self, gen: int | None, epoch: int | None = None) -> set[bytes]:
        """Lines written since the last observation into ``gen`` in its current epoch."""
        if gen is None:
            return set()
        ep = self.epoch[gen] if epoch is None else epoch
        return {line for line, g, e in self.since if g == gen and e == ep}

    def _got_data(self, gen: int, epoch: int | None = None) -> bool:
        return (gen, self.epoch[gen] if epoch is None else epoch) in self.touched

    def _shift_dot1(self) -> None:
        if self.dot1.exists():
            self.dot1.rename(self.dot2)
        self.at_dot1 = None

    def _reopen(self) -> None:
        assert self.at_path is not None
        os.close(self.wfd)
        self.wfd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.w_gen = self.at_path

    # -- observations --------------------------------------------------------------------------

    def _expect_running(self) -> set[bytes]:
        """What one look must return, and the tailer's holdings after it (as ``Follower._check``
        does it: read the current file, look at the path, read the retired files)."""
        now, must = self.now, set()
        if self.cur is not None:
            must |= self._fresh(self.cur)
            if self._got_data(self.cur):
                self.cur_last = now
        if self.at_path is None:
            if self.cur is not None:
                self.missing_since = self.missing_since or now
                quiet_since = max(self.missing_since, self.cur_last)
                if now >= self.missing_since + LINGER and now >= quiet_since + LINGER:
                    self.cur, self.missing_since = None, None
        else:
            self.missing_since = None
            if self.at_path != self.cur:
                if self.cur is not None:
                    self.retired.append([self.cur, now, self.epoch[self.cur]])
                    if len(self.retired) > MAX_RETIRED:
                        self.retired.pop(0)
                self.cur, self.cur_last = self.at_path, now
                must |= self._fresh(self.at_path)
        for entry in list(self.retired):
            gen, epoch = int(entry[0]), int(entry[2])
            if self.epoch[gen] != epoch:
                self.retired.remove(entry)  # cut after rotation: finished
                continue
            must |= self._fresh(gen, epoch)
            if self._got_data(gen, epoch):
                entry[1] = now
            if now >= entry[1] + LINGER:
                self.retired.remove(entry)
        return must

    def _expect_start(self) -> set[bytes]:
        """What the first look after a restart must return, and the tailer's holdings after it."""
        must: set[bytes] = set()
        self.cur, self.cur_last, self.missing_since, self.retired = None, 0.0, None, []
        if self.saved is not None:
            gen, epoch = self.saved
            intact = self.epoch[gen] == epoch
            if self.at_path == gen and intact:
                self.cur = gen
                if self._got_data(gen):
                    self.cur_last = self.now
                return self._fresh(gen)
            if self.at_dot1 == gen:  # renamed away while stopped: its rest, or all of it if cut
                must |= self._fresh(gen)
                self.retired.append([gen, self.now, self.epoch[gen]])
        if self.at_path is not None:
            self.cur = self.at_path
            if self._got_data(self.at_path):
                self.cur_last = self.now
            must |= self._fresh(self.at_path)
        return must

    def _observe(self, must: set[bytes], got: list[bytes]) -> None:
        assert self.tailer is not None
        self.seen += got
        positions = {line: i for i, line in enumerate(self.written)}
        assert all(line in positions for line in got), f"never written as a line: {got}"
        order = [positions[line] for line in self.seen]
        assert order == sorted(set(order)), "a line returned twice, or out of order"
        lost = must - set(self.seen)
        assert not lost, f"lost {sorted(lost)}"
        self.since, self.touched = [], set()
        status = self.tailer.followers[self.path].status.state
        if self.at_path is not None:
            assert status is FollowState.OK
        elif self.cur is None:
            assert status is FollowState.WAITING
        assert self.missing_since is None or status is (
            FollowState.WAITING if self.now >= self.missing_since + LINGER else FollowState.OK
        )

    def _look(self) -> list[bytes]:
        assert self.tailer is not None
        self.now += 1.0
        return self.tailer.process(self.now).get(self.path, [])

    def _observe_running(self) -> None:
        got = self._look()
        self._observe(self._expect_running(), got)

    def _observe_start(self, *, first: bool) -> None:
        got = self._look()
        must = set() if first else self._expect_start()
        self._observe(must, got)

    # -- rules ---------------------------------------------------------------------------------

    @rule(count=st.integers(0, 4), leave_partial=st.booleans())
    def write(self, count: int, leave_partial: bool) -> None:
        data, completed = b"", []
        if self.partial is not None:
            completed.append(self.partial + b"-end")
            data += b"-end\n"
            self.partial = None
        for _ in range(count):
            self.counter += 1
            completed.append(b"L%05d" % self.counter)
            data += completed[-1] + b"\n"
        if leave_partial:
            self.counter += 1
            self.partial = b"L%05d-part" % self.counter
            data += self.partial
        if data:
            self._write(data, completed)

    @precondition(lambda self: self.partial is None and self.at_path not in (None, self.w_gen))
    @rule()
    def reopen(self) -> None:
        """The writer's log reopen (nginx USR1, a postrotate reload)."""
        self._reopen()

    @precondition(lambda self: self.at_path is not None)
    @rule(reopen=st.booleans())
    def rotate_rename(self, reopen: bool) -> None:
        """logrotate's default: rename to .1 (an older .1 to .2), create a new file."""
        self._shift_dot1()
        self.path.rename(self.dot1)
        self.at_dot1 = self.at_path
        self.path.touch()
        self.at_path = self._new_gen()
        if reopen and self.partial is None:
            self._reopen()

    @precondition(lambda self: self.at_path is not None)
    @rule(reopen=st.booleans())
    def delete_recreate(self, reopen: bool) -> None:
        self.path.unlink()
        self.path.touch()
        self.at_path = self._new_gen()
        if reopen and self.partial is None:
            self._reopen()

    @precondition(lambda self: self.at_path is not None and self.partial is None)
    @rule()
    def copytruncate(self) -> None:
        assert self.at_path is not None
        self._shift_dot1()
        shutil.copyfile(self.path, self.dot1)
        self.at_dot1 = self._new_gen()  # a copy: no line is ever written to it
        os.truncate(self.path, 0)
        self.epoch[self.at_path] += 1

    @precondition(lambda self: self.at_path is not None and self.partial is None)
    @rule()
    def truncate(self) -> None:
        assert self.at_path is not None
        os.truncate(self.path, 0)
        self.epoch[self.at_path] += 1

    @precondition(lambda self: self.at_path is not None)
    @rule()
    def remove(self) -> None:
        self.path.unlink()
        self.at_path = None

    @precondition(lambda self: self.at_path is None)
    @rule(reopen=st.booleans())
    def create(self, reopen: bool) -> None:
        self.path.touch()
        self.at_path = self._new_gen()
        if reopen and self.partial is None:
            self._reopen()

    @precondition(lambda self: self.tailer is not None)
    @rule()
    def look(self) -> None:
        self._observe_running()

    @precondition(lambda self: self.tailer is not None)
    @rule()
    def stop(self) -> None:
        self._observe_running()
        assert self.tailer is not None
        self.tailer.checkpoint()
        self.tailer.close()
        self.tailer = None
        self.saved = None if self.cur is None else (self.cur, self.epoch[self.cur])

    @precondition(lambda self: self.tailer is None)
    @rule()
    def start(self) -> None:
        self.tailer = self._start()
        self._observe_start(first=False)


_SETTINGS = settings(max_examples=100, stateful_step_count=40, deadline=None)


class InotifyModel(TailModel):
    backend = Backend.INOTIFY


class PollingModel(TailModel):
    backend = Backend.POLLING


TestTailModelInotify = InotifyModel.TestCase
TestTailModelInotify.settings = _SETTINGS
TestTailModelPolling = PollingModel.TestCase
TestTailModelPolling.settings = _SETTINGS
