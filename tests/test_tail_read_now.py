"""``Tailer.read_now``: what is already written is read at once, batch interval or not."""

from __future__ import annotations

import select
import time
from pathlib import Path

from remediator.sources.tail import Backend, Tailer


def test_read_now_returns_lines_held_back_by_the_batch_interval(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    with Tailer([log], backend=Backend.INOTIFY, state_dir=tmp_path, batch_interval=30.0) as t:
        t.process(time.monotonic())
        with log.open("ab") as f:
            f.write(b"first\n")
        select.select([t.fileno()], [], [], 2.0)
        assert t.process(time.monotonic()) == {log: [b"first"]}  # after quiet: no pause
        with log.open("ab") as f:
            f.write(b"second\n")
        select.select([t.fileno()], [], [], 2.0)
        assert t.process(time.monotonic()) == {log: [b"second"]}  # the batch interval begins
        with log.open("ab") as f:
            f.write(b"third\n")
        assert t.process(time.monotonic()) == {}  # held back for 30 s
        assert t.read_now(time.monotonic()) == {log: [b"third"]}
        assert t.process(time.monotonic()) == {}  # nothing twice
