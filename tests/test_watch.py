"""The watcher: the feeder (counts of a batch, evidence lines kept in the order written) and
the death watch (a pidfd fires when its process exits; which unit states are a crash)."""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

from remediator.detect import SAMPLE_LINES, Signals
from remediator.feed import Feeder
from remediator.load import load
from remediator.playbook import walk_conditions
from remediator.services.death import DeathWatch, Seen, open_pidfd
from remediator.services.systemd import crashed

LINE = (
    '127.0.0.1 - - [25/Nov/2026:10:00:00 +0000] "GET /{i} HTTP/1.1" {status} 157 "-" "curl" '
    "rt=0.000 us={status} urt=0.000"
)


def test_feeder_counts_5xx_and_keeps_the_newest_evidence_in_written_order(tmp_path: Path) -> None:
    (tmp_path / "playbooks.d").mkdir()
    cfg = tmp_path / "r.yaml"
    cfg.write_text(
        "sources:\n  acc: {type: access_log, path: acc.log, format: nginx-timed}\n"
        "services:\n  fpm: {kind: php-fpm, unit: php8.2-fpm.service}\n"
        "playbooks:\n  - name: p\n    when: {status_rate: {source: acc, status: 502}}\n"
        "    steps: [restart: fpm]\n"
    )
    loaded = load(cfg)
    assert loaded.config is not None
    signals = Signals.for_conditions(walk_conditions(loaded.playbooks[0].when))
    feeder = Feeder(loaded.config, signals)
    lines = [
        LINE.format(i=i, status=502 if i % 2 else 200).encode() for i in range(2 * SAMPLE_LINES + 6)
    ] + [b"not a log line"]
    feeder.feed(tmp_path / "acc.log", lines, 100.0)
    stats = feeder.stats["acc"]
    assert (stats.lines, stats.malformed, stats.matched) == (len(lines), 1, SAMPLE_LINES + 3)
    kept = list(signals.samples["acc"])
    assert len(kept) == SAMPLE_LINES
    numbers = [int(k.split('"GET /')[1].split(" ")[0]) for k in kept]
    assert numbers == sorted(numbers) and numbers[-1] == 2 * SAMPLE_LINES + 5
    assert signals.statuses["acc"].count(100.0, 30, frozenset({502})) == (
        SAMPLE_LINES + 3,
        2 * SAMPLE_LINES + 6,
    )


def test_a_pidfd_in_the_death_watch_fires_when_its_process_exits_and_is_closed() -> None:
    child = subprocess.Popen(["sleep", "60"])
    watch = DeathWatch()
    try:
        fd = open_pidfd(child.pid)
        assert fd is not None
        watch.arm_pidfd("svc", fd, child.pid)
        assert watch.pidfd_of("svc") == child.pid
        assert select.select(watch.fds(), [], [], 0)[0] == []
        child.kill()
        readable = select.select(watch.fds(), [], [], 5)[0]
        assert watch.fired(set(readable)) == [("svc", Seen.PIDFD)]
        assert watch.fds() == [] and watch.pidfd_of("svc") is None
        try:
            os.fstat(fd)
        except OSError:
            pass
        else:
            raise AssertionError("the fired pidfd was left open")
    finally:
        child.kill()
        child.wait()
        watch.close()


def test_a_unit_failed_by_a_signal_or_exit_code_is_a_crash_and_a_stop_is_not() -> None:
    def props(active: str, result: str) -> dict[str, str]:
        return {"LoadState": "loaded", "ActiveState": active, "Result": result}

    for result in ("signal", "core-dump", "exit-code", "watchdog", "oom-kill"):
        assert crashed(props("failed", result)), result
    assert not crashed(props("failed", "start-limit-hit"))  # down, but waits `lasting`
    assert not crashed(props("inactive", "success"))  # `systemctl stop`
    assert not crashed(props("deactivating", "signal"))  # systemd still deciding: look again
    assert not crashed(props("active", "success"))
