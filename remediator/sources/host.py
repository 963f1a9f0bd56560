"""Host snapshots through psutil: memory, swap, load, and a service's processes and RSS.

The average PHP-FPM worker's RSS is what worker scaling divides the memory budget by.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psutil

from remediator.detect import HostReading


@dataclass(frozen=True)
class ProcessGroupStats:
    """A service's master and its children."""

    master_pid: int
    processes: int
    workers: int
    rss_total: int
    rss_worker_avg: int


def snapshot() -> dict[str, Any]:
    """Host resources now, as evidence for an incident record."""
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    load1, load5, load15 = os.getloadavg()
    return {
        "cpu_count": psutil.cpu_count() or 1,
        "load": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "memory_total": vm.total,
        "memory_available": vm.available,
        "swap_total": sw.total,
        "swap_used": sw.used,
    }


def reading(snap: dict[str, Any]) -> HostReading:
    """What host conditions are judged on, from a snapshot."""
    return HostReading(
        memory_total=snap["memory_total"],
        memory_available=snap["memory_available"],
        swap_used_ratio=snap["swap_used"] / snap["swap_total"] if snap["swap_total"] else 0.0,
        load_per_cpu=snap["load"][0] / snap["cpu_count"],
    )


def process_group(master_pid: int) -> ProcessGroupStats | None:
    """A master process and its children (live ones: zombies do not count), or None if gone."""
    try:
        master = psutil.Process(master_pid)
        if master.status() == psutil.STATUS_ZOMBIE:
            return None
        children = [c for c in master.children() if _alive(c)]
        rss = [c.memory_info().rss for c in children]
        total = master.memory_info().rss + sum(rss)
    except psutil.Error:
        return None
    avg = sum(rss) // len(rss) if rss else 0
    return ProcessGroupStats(master_pid, 1 + len(children), len(children), total, avg)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
