"""Detectors over PHP-FPM's status: saturated, hung, stuck, slow. Pure: fed reads and a clock.

Each read of an ``fpm_status`` source is kept (bounded: ``HISTORY`` reads, enough for the
longest ``lasting`` at the shortest interval) with the time it came in; a condition holds when
what it looks for was in every read of the last ``lasting`` seconds. ``holds`` and the readings
(the detail) are one computation, so the fast path and the evidence never disagree.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from remediator.playbook import FpmHung, FpmSaturated, FpmSlow, FpmStuck
from remediator.sources.fastcgi import Failure
from remediator.sources.fpmprocs import Workers
from remediator.sources.fpmstatus import FpmStatus

HISTORY = 4096
# No answer because no worker took the request: the pool is full (or stuck, or stopped).
UNANSWERED = frozenset({Failure.TIMEOUT, Failure.BACKLOG_FULL, Failure.STOPPED})
# Failures that say the pool cannot serve, which nothing but the pool itself can cause
# (what corroboration accepts; a refused or malformed answer is not among them).
NOT_SERVING = frozenset({Failure.TIMEOUT, Failure.BACKLOG_FULL, Failure.STOPPED, Failure.REFUSED})
# How long this pool's requests take (fpm_stuck): the durations of the requests its status
# showed done, the newest DURATIONS of the last DURATIONS_FOR seconds; with fewer than
# DURATIONS_MIN of them the pool's usual is not known, and a stuck pool is not said before
# UNKNOWN_SPAN.
DURATIONS = 1024
DURATIONS_FOR = 600.0
DURATIONS_MIN = 20
UNKNOWN_SPAN = 2.0


@dataclass(frozen=True, slots=True)
class Read:
    """One read as the detectors keep it: when it was asked (``started``) and answered
    (``at``), the status or why none."""

    at: float
    started: float
    status: FpmStatus | None
    failure: Failure | None
    mcr_rose: bool  # "max children reached" went up since the previous answer
    workers: Workers | None = None  # the pool's workers in /proc, when it went unanswered


@dataclass
class FpmState:
    """Recent reads of one fpm_status source, and its last result (for status and records)."""

    reads: collections.deque[Read] = field(
        default_factory=lambda: collections.deque(maxlen=HISTORY)
    )
    last_ok: bool | None = None
    last_detail: str = ""
    last_at: float | None = None
    last_failed_at: float | None = None  # when it last could not serve (corroboration)
    last_failure: str = ""
    consecutive_failures: int = 0
    # (when, seconds): the requests seen done, each once (fpm_stuck's usual duration)
    durations: collections.deque[tuple[float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=DURATIONS)
    )
    _last_status: FpmStatus | None = None
    _done: dict[int, int] = field(default_factory=dict)  # pid -> its requests, seen done

    def record(
        self,
        status: FpmStatus | None,
        failure: Failure | None,
        detail: str,
        now: float,
        elapsed: float = 0.0,
        workers: Workers | None = None,
    ) -> None:
        prev = self._last_status
        rose = (
            status is not None
            and prev is not None
            and status.max_children_reached > prev.max_children_reached
        )
        self.reads.append(Read(now, now - elapsed, status, failure, rose, workers))
        if status is not None:
            self._last_status = status
            self._durations(status, now)
        self.last_ok = status is not None
        self.last_detail = detail
        self.last_at = now
        self.consecutive_failures = 0 if status is not None else self.consecutive_failures + 1
        if failure in NOT_SERVING:
            self.last_failed_at, self.last_failure = now, detail

    def _durations(self, status: FpmStatus, now: float) -> None:
        done: dict[int, int] = {}
        for pid, requests, duration in status.done:
            if requests > 0 and self._done.get(pid) != requests:
                self.durations.append((now, duration))
            done[pid] = requests
        self._done = done

    @property
    def latest(self) -> FpmStatus | None:
        return self._last_status

    def usual(self, now: float) -> tuple[float | None, int]:
        """The 99th percentile of the request durations seen done in the last DURATIONS_FOR
        seconds (None with fewer than DURATIONS_MIN), and how many there were."""
        recent = sorted(d for at, d in self.durations if at >= now - DURATIONS_FOR)
        if len(recent) < DURATIONS_MIN:
            return None, len(recent)
        return recent[min(len(recent) - 1, (len(recent) * 99) // 100)], len(recent)


def _since(reads: collections.deque[Read], pred: Any) -> Read | None:
    """The oldest read of the newest unbroken run of reads for which ``pred`` holds."""
    first = None
    for r in reversed(reads):
        if not pred(r):
            break
        first = r
    return first


def _saturated(r: Read) -> bool:
    """No room for a new request. The read itself needs a worker: with every worker busy
    (active processes at pm.max_children) it waits in the listen queue, so it is seen as no
    answer in time, or a late answer with others still queued behind it."""
    if r.failure in UNANSWERED:
        return True
    return r.status is not None and (r.status.listen_queue > 0 or r.mcr_rose)


def saturated(cond: FpmSaturated, st: FpmState | None, now: float) -> tuple[bool, dict[str, Any]]:
    first = _since(st.reads, _saturated) if st else None
    for_s = 0.0 if first is None else now - first.at
    latest = st.latest if st else None
    detail: dict[str, Any] = {
        "source": cond.source,
        "saturated_for_s": round(for_s, 3),
        "lasting": cond.lasting,
        "last": st.last_detail if st else "no read yet",
    }
    if latest is not None:
        detail |= _numbers(latest)
    return first is not None and for_s >= cond.lasting, detail


def _stuck(cond: FpmHung, r: Read) -> bool:
    s = r.status
    return (
        s is not None
        and s.idle == 0
        and s.busy > 0
        and s.youngest_busy is not None
        and s.youngest_busy >= cond.older_than
    )


def hung(cond: FpmHung, st: FpmState | None, now: float) -> tuple[bool, dict[str, Any]]:
    """Stuck since: the first stuck read of the run, or ``older_than`` after the first
    unanswered read of it was asked (no worker finished a request in that time)."""
    run = _run(st.reads, lambda r: _stuck(cond, r) or r.failure in UNANSWERED) if st else []
    since: float | None = None
    for r in run:  # oldest first
        at = r.at if _stuck(cond, r) else r.started + cond.older_than
        since = at if since is None else min(since, at)
    for_s = 0.0 if since is None else max(0.0, now - since)
    latest = st.latest if st else None
    unanswered = [r for r in run if r.failure in UNANSWERED]
    detail: dict[str, Any] = {
        "source": cond.source,
        "hung_for_s": round(for_s, 3),
        "older_than": cond.older_than,
        "lasting": cond.lasting,
        "unanswered_for_s": round(now - unanswered[0].started, 3) if unanswered else 0.0,
        "last": st.last_detail if st else "no read yet",
    }
    if latest is not None:
        detail |= _numbers(latest)
    holds = since is not None and now >= since and for_s >= cond.lasting
    return holds, detail


def stuck(cond: FpmStuck, st: FpmState | None, now: float) -> tuple[bool, dict[str, Any]]:
    """Stuck, not busy: the newest read went unanswered and its look at the workers found
    every one stopped, or none that finished a request for the span (``factor`` times the
    pool's usual longest request, ``at_least`` at least, UNKNOWN_SPAN while that is unknown)."""
    newest = st.reads[-1] if st and st.reads else None
    workers = newest.workers if newest is not None and newest.failure in UNANSWERED else None
    # the usual duration matters (and is worth sorting for) only while the pool is unanswered
    usual, samples = st.usual(now) if st is not None and workers is not None else (None, 0)
    span = max(cond.at_least, UNKNOWN_SPAN if usual is None else cond.factor * usual)
    quiet_for = 0.0 if workers is None else max(0.0, now - workers.quiet_since)
    stopped = workers is not None and workers.all_stopped
    detail: dict[str, Any] = {
        "source": cond.source,
        "stuck_for_s": round(quiet_for, 3),
        "span_s": round(span, 3),
        "usual_s": None if usual is None else round(usual, 3),
        "durations_seen": samples,
        "workers": None if workers is None else workers.count,
        "stopped": None if workers is None else workers.stopped,
        "last": st.last_detail if st else "no read yet",
    }
    if newest is not None and newest.failure in UNANSWERED and workers is None:
        detail["blind"] = "no look at the workers (does the source name its service?)"
    return stopped or (workers is not None and quiet_for >= span), detail


def _run(reads: collections.deque[Read], pred: Any) -> list[Read]:
    out: list[Read] = []
    for r in reversed(reads):
        if not pred(r):
            break
        out.append(r)
    out.reverse()
    return out


def _newer(reads: collections.deque[Read], since: float, *, inclusive: bool = False) -> list[Read]:
    """The reads after ``since``, oldest first, found from the newest end (the deque holds
    minutes of reads; a condition looks at seconds of them)."""
    out: list[Read] = []
    for r in reversed(reads):
        if r.at < since or (r.at == since and not inclusive):
            break
        out.append(r)
    out.reverse()
    return out


def _rise(reads: list[Read], at: float, window: float) -> int:
    """New slow requests counted in ``(at - window, at]`` (counter resets ignored)."""
    rise = 0
    prev: FpmStatus | None = None
    for r in reads:
        if r.at > at:
            break
        if r.status is None:
            continue
        if prev is not None and r.at > at - window:
            rise += max(0, r.status.slow_requests - prev.slow_requests)
        prev = r.status
    return rise


def slow(cond: FpmSlow, st: FpmState | None, now: float) -> tuple[bool, dict[str, Any]]:
    reads = _newer(st.reads, now - cond.window - cond.lasting - 60) if st else []
    rise = _rise(reads, now, cond.window)
    holds = rise >= cond.at_least
    if holds and cond.lasting > 0:
        # every read of the last `lasting` must have seen the rise too, and there must be
        # reads from before then
        holds = bool(reads) and reads[0].at <= now - cond.lasting
        for r in reads:
            if holds and r.at >= now - cond.lasting:
                holds = _rise(reads, r.at, cond.window) >= cond.at_least
    latest = st.latest if st else None
    detail: dict[str, Any] = {
        "source": cond.source,
        "slow_requests_rise": rise,
        "window_s": cond.window,
        "at_least": cond.at_least,
        "lasting": cond.lasting,
    }
    if latest is not None:
        detail["slow_requests"] = latest.slow_requests
    return holds, detail


def _numbers(s: FpmStatus) -> dict[str, Any]:
    return {
        "pool": s.pool,
        "busy": s.busy,
        "idle": s.idle,
        "total": s.total,
        "listen_queue": s.listen_queue,
        "max_children_reached": s.max_children_reached,
        "oldest_busy_s": None if s.oldest_busy is None else round(s.oldest_busy, 3),
    }


def after(
    cond: FpmSaturated | FpmHung | FpmStuck | FpmSlow, st: FpmState | None, since: float
) -> bool | None:
    """What the reads made after ``since`` say of ``cond`` (verification): True while the
    newest still shows it (saturated, stuck, slow requests rising), False once it does not,
    None without a read that tells (none yet; refused: a pool restarting)."""
    reads = _newer(st.reads, since, inclusive=True) if st else []
    if isinstance(cond, FpmSlow):
        answered = [r for r in reads if r.status is not None]
        if len(answered) < 2:
            return None
        return _rise(answered, answered[-1].at, cond.window) >= cond.at_least
    if not reads:
        return None
    newest = reads[-1]
    if isinstance(cond, FpmSaturated):
        shows = _saturated(newest)
    elif isinstance(cond, FpmStuck):
        shows = newest.failure in UNANSWERED
    else:
        shows = _stuck(cond, newest) or newest.failure in UNANSWERED
    if shows:
        return True
    return False if newest.status is not None else None
