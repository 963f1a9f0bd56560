"""The memory budget of a PHP-FPM pool: how many workers the host really has room for.

The running pool is measured (:func:`measure_pool`): its workers are the children of the master
titled ``php-fpm: pool NAME``, and their average RSS. The workers already running hold memory
that is *not* in "available", so what fits is
``workers + floor((available - memory_reserve) / avg_worker_rss)`` (:func:`fit_children`). RSS
counts pages shared with the master (code, opcache), so the budget errs on the safe side.
:func:`plan` turns that and the action's bounds into the new ``pm.max_children``.

The master is found through the service's backend (:func:`find_master`), as the
service-control actions see it: a master that cannot be trusted (an untrusted pid file) is
said so, and the action does not act (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psutil

from remediator.actions.base import ActionContext
from remediator.actions.declare import ScaleArgs
from remediator.config import Service
from remediator.services.base import ServiceStatus, control_for
from remediator.sources import host


def fit_children(workers: int, available: int, reserve: int, avg_rss: int) -> int:
    """How many workers memory allows: the running ones already hold theirs, so
    ``workers + floor((available - reserve) / avg_rss)`` (fewer than now if over budget)."""
    return workers + (available - reserve) // avg_rss


@dataclass(frozen=True)
class Plan:
    target: int
    notes: tuple[str, ...]


def plan(current: int, fits: int, args: ScaleArgs) -> Plan:
    """The new ``pm.max_children`` for ``args``, before checking that it changes anything."""
    if args.by is not None and args.by < 0:
        target = current + args.by
        if target < args.min_children:
            return Plan(args.min_children, (f"floored at min_children {args.min_children}",))
        return Plan(target, ())
    target = fits if args.by is None else current + args.by
    notes = []
    if target > args.max_children:
        target = args.max_children
        notes.append(f"capped at max_children {args.max_children}")
    if target > fits:
        notes.append(f"capped at {fits}: what memory allows")
        target = fits
    return Plan(target, tuple(notes))


@dataclass(frozen=True)
class PoolStats:
    master_pid: int
    workers: int
    avg_rss: int


def measure_pool(master_pid: int, pool: str) -> PoolStats | None:
    """The live workers of ``pool`` under ``master_pid`` (a master may run several pools)."""
    if host.process_group(master_pid) is None:
        return None
    title = f"php-fpm: pool {pool}"
    rss: list[int] = []
    try:
        children = psutil.Process(master_pid).children()
    except psutil.Error:
        return None
    for child in children:
        try:
            cmd = child.cmdline()
            if child.status() != psutil.STATUS_ZOMBIE and cmd and cmd[0].strip() == title:
                rss.append(child.memory_info().rss)
        except psutil.Error:
            continue
    return PoolStats(master_pid, len(rss), sum(rss) // len(rss) if rss else 0)


@dataclass(frozen=True)
class Master:
    """The pool's master as the service's backend sees it: its PID, or why there is none, and
    whether that is because the state could not be read at all (``state_error``)."""

    pid: int | None
    why: str = ""
    state_error: str | None = None
    distrust: str = ""  # the master cannot be trusted (an untrusted pid file...): cannot act


def find_master(name: str, svc: Service, ctx: ActionContext) -> Master:
    """The live master: the pid file's (checked to be php-fpm) or the unit's MainPID."""
    try:
        state = control_for(name, svc, ctx.system).state()
    except (OSError, ValueError) as exc:
        return Master(None, f"{type(exc).__name__}: {exc}")
    if state.master_pid is not None:
        return Master(state.master_pid)
    if state.distrust:
        return Master(None, state.distrust, distrust=state.distrust)
    if state.status is ServiceStatus.UNKNOWN:
        return Master(None, state.summary, state.summary)
    return Master(None, f"not running: {state.summary}")


def budget(stats: PoolStats, reserve: int) -> dict[str, Any]:
    """The budget as the record shows it: what was measured, and what fits."""
    available = int(host.snapshot()["memory_available"])
    return {
        "available": available,
        "reserve": reserve,
        "headroom": available - reserve,
        "avg_worker_rss": stats.avg_rss,
        "workers": stats.workers,
        "fits": fit_children(stats.workers, available, reserve, stats.avg_rss),
        "formula": "workers + floor((available - reserve) / avg_worker_rss)",
        "master_pid": stats.master_pid,
    }
