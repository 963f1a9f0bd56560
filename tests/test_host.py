"""Host snapshots on this real host, and process-group stats of a real process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil

from remediator.sources.host import process_group, reading, snapshot

TREE = """
import os, sys, time
r, w = os.pipe()
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        blob = bytearray(8 * 1024 * 1024)  # each worker holds 8 MiB
        blob[::4096] = b"x" * len(blob[::4096])
        os.write(w, b"k")  # touched: its RSS counts now
        time.sleep(60)
        os._exit(0)
got = b""
while len(got) < 3:
    got += os.read(r, 3 - len(got))
print("ready", flush=True)
time.sleep(60)
"""


def test_snapshot_reports_this_hosts_memory_and_load() -> None:
    snap = snapshot()
    assert 0 < snap["memory_available"] <= snap["memory_total"] == psutil.virtual_memory().total
    assert len(snap["load"]) == 3
    r = reading(snap)
    assert 0 <= r.swap_used_ratio <= 1
    assert r.load_per_cpu >= 0


def test_process_group_counts_workers_and_their_average_rss() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"  # after every worker touched its RAM
        stats = process_group(proc.pid)
        assert stats is not None
        assert stats.workers == 3
        assert stats.rss_worker_avg > 8 * 1024 * 1024
        assert stats.rss_total > 3 * stats.rss_worker_avg
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_process_group_of_a_dead_master_is_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert process_group(proc.pid) is None
