"""Detectors: pure functions of the events they were fed and the clock they are given.

No I/O, no threads, no wall clock. The same objects run live (``now`` is ``time.monotonic()``
at arrival), in ``replay`` (``now`` is the log line's own time) and in tests (``now`` is set).

Memory is bounded whatever the traffic: counts are kept in time buckets (a tenth of a second
wide, or wider for long windows, at most ``MAX_BUCKETS`` per window), never per event. Fine
buckets matter for verification, which counts only the requests made after an action.
"""

from __future__ import annotations

import collections
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from remediator import fpmdetect
from remediator.fpmdetect import FpmState
from remediator.playbook import (
    AllOf,
    AnyOf,
    Condition,
    DnsMismatch,
    ErrorCause,
    FpmHung,
    FpmSaturated,
    FpmSlow,
    FpmStuck,
    HostCondition,
    NotOf,
    ProbeFailing,
    ServiceDown,
    StatusRate,
    StatusSpike,
)

MAX_BUCKETS = 600
MIN_RESOLUTION = 0.1


class _Bucket:
    """Counts of one time bucket: since when, per key, and in all."""

    __slots__ = ("counts", "start", "total")

    def __init__(self, start: float, counts: dict[Any, int], total: int) -> None:
        self.start, self.counts, self.total = start, counts, total


class Window:
    """Counts of keys (statuses, causes) in time buckets covering ``horizon`` seconds.

    Plain dicts and loops, not ``Counter`` arithmetic: replay adds a second's statuses to
    every window of a source about once a second of log, and judges them as often."""

    __slots__ = ("_buckets", "_sum", "_total", "horizon", "resolution")

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self.resolution = max(MIN_RESOLUTION, horizon / MAX_BUCKETS)
        self._buckets: collections.deque[_Bucket] = collections.deque()  # newest last
        self._sum: dict[Any, int] = {}  # of every kept bucket
        self._total = 0  # and of all its counts

    def add(self, now: float, key: Any, n: int = 1) -> None:
        """Count ``n`` events of ``key`` at ``now`` (times may only move forward, roughly)."""
        self.add_many(now, {key: n}, n)

    def add_many(self, now: float, counts: Mapping[Any, int], total: int | None = None) -> None:
        """``add`` of every key and count, at once (``total``: their sum, if known)."""
        if not counts:
            return
        n = sum(counts.values()) if total is None else total
        buckets = self._buckets
        start = now - now % self.resolution
        if buckets and buckets[-1].start >= start:
            last = buckets[-1]  # same bucket, or a slightly late event: keep it here
            into = last.counts
            for k, v in counts.items():
                into[k] = into.get(k, 0) + v
            last.total += n
        else:
            buckets.append(_Bucket(start, dict(counts), n))
            self._expire(now)
        into = self._sum
        for k, v in counts.items():
            into[k] = into.get(k, 0) + v
        self._total += n

    def _expire(self, now: float) -> None:
        """Drop buckets no window of this length can reach (a bucket counts while its start
        is inside the window, as in ``count``)."""
        oldest = now - self.horizon
        buckets = self._buckets
        total = self._sum
        while buckets and buckets[0].start <= oldest:
            gone = buckets.popleft()
            for k, v in gone.counts.items():
                total[k] = total.get(k, 0) - v
            self._total -= gone.total
        if len(total) > 64:  # keys that left the window: keep the running sum small
            for k in [k for k, n in total.items() if n <= 0]:
                del total[k]

    def count(
        self, now: float, window: float, keys: frozenset[Any] | None = None, *, until: float = 0
    ) -> tuple[int, int]:
        """(events with one of ``keys``, all events) in ``(now - window, now - until]``.

        Edges are as precise as the buckets: a bucket counts when its start is in the range.
        """
        if until == 0 and window >= self.horizon:  # the whole window: the running sum
            self._expire(now)
            if keys is None:
                return 0, self._total
            return _matching(self._sum, keys), self._total
        lo, hi = now - window, now - until
        matched = total = 0
        for b in reversed(self._buckets):
            if b.start <= lo:
                break
            if b.start > hi:
                continue
            total += b.total
            if keys is not None:
                matched += _matching(b.counts, keys)
        return matched, total

    def __len__(self) -> int:
        return len(self._buckets)


def _matching(counts: dict[Any, int], keys: frozenset[Any]) -> int:
    """The sum of ``counts`` of ``keys``, in C."""
    return sum(itertools.compress(counts.values(), map(keys.__contains__, counts)))


class Windows:
    """One source's counts at every window length its conditions use.

    Each length gets a :class:`Window` of its own, so a 30-minute baseline does not make a
    20-second window coarse; ``count`` reads the smallest one that covers what is asked.
    """

    __slots__ = ("_by_span", "_for")

    def __init__(self, spans: Iterable[float]) -> None:
        self._by_span = sorted((Window(s) for s in set(spans)), key=lambda w: w.horizon)
        self._for: dict[float, Window] = {}  # the window that answers for a length

    def add(self, now: float, key: Any, n: int = 1) -> None:
        for w in self._by_span:
            w.add(now, key, n)

    def add_many(self, now: float, counts: Mapping[Any, int]) -> None:
        total = sum(counts.values())
        for w in self._by_span:
            w.add_many(now, counts, total)

    def count(
        self, now: float, window: float, keys: frozenset[Any] | None = None, *, until: float = 0
    ) -> tuple[int, int]:
        w = self._for.get(window)
        if w is None:
            w = next((w for w in self._by_span if w.horizon >= window), self._by_span[-1])
            if len(self._for) < 64:  # the lengths conditions ask for; cut ones vary
                self._for[window] = w
        return w.count(now, window, keys, until=until)

    def __len__(self) -> int:
        return sum(len(w) for w in self._by_span)

    @property
    def horizons(self) -> list[float]:
        return [w.horizon for w in self._by_span]


@dataclass
class ProbeState:
    """Consecutive failures and the last result of one HTTP probe."""

    consecutive_failures: int = 0
    last_ok: bool | None = None
    last_detail: str = ""
    last_at: float | None = None  # when the last result came in (the caller's clock)
    last_failed_at: float | None = None  # when it last failed (corroboration looks back)
    last_failure: str = ""  # and what it saw then

    def record(self, ok: bool, detail: str = "", now: float | None = None) -> None:
        self.last_ok = ok
        self.last_detail = detail
        self.last_at = now
        self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
        if not ok:
            self.last_failed_at, self.last_failure = now, detail


@dataclass
class ServiceWatch:
    """Whether a service's master is down (as its backend last said), and since when."""

    down_since: float | None = None
    detail: str = ""
    last_at: float | None = None
    last_down_at: float | None = None  # when it was last seen down (corroboration looks back)
    last_down: str = ""  # and what was seen then
    on_demand: bool = False  # only corroboration asks about it: polled when asked, and slowly
    definitive: bool = False  # down by a crash (not a stop in progress): no `lasting` wait
    seen_by: str = ""  # how the outage was seen: pidfd, cgroup.events, poll, asked
    seen_at: str = ""  # and when (RFC 3339)

    def record(
        self,
        down: bool,
        detail: str,
        now: float,
        *,
        definitive: bool = False,
        seen_by: str = "poll",
        seen_at: str = "",
    ) -> None:
        if down and self.down_since is None:
            self.down_since = now
            self.seen_by, self.seen_at = seen_by, seen_at
        elif not down:
            self.down_since = None
        self.definitive = down and definitive
        if down:
            self.last_down_at, self.last_down = now, detail
        self.detail = detail
        self.last_at = now


@dataclass
class DnsWatch:
    """Whether a dns source's names resolve as expected (as its last lookups said), since
    when they do not, and what each name resolved to."""

    mismatch_since: float | None = None
    detail: str = ""
    answers: list[dict[str, Any]] = field(default_factory=list)
    last_at: float | None = None

    def record(
        self, mismatch: bool, detail: str, answers: list[dict[str, Any]], now: float
    ) -> None:
        if mismatch and self.mismatch_since is None:
            self.mismatch_since = now
        elif not mismatch:
            self.mismatch_since = None
        self.detail, self.answers, self.last_at = detail, answers, now


@dataclass(frozen=True)
class HostReading:
    """What host conditions are judged on (from the host snapshot)."""

    memory_total: int
    memory_available: int
    swap_used_ratio: float
    load_per_cpu: float


SAMPLE_LINES = 20


class Evidence:
    """The newest SAMPLE_LINES lines of a source. Lines may be kept lazily: one as a callable
    that gives it, or several as :class:`Lazy` (how many, and a callable that gives them):
    found cheaply, decoded (and found in their block, in replay) only if read, since most are
    pushed out by newer ones first. Reading gives the lines as text."""

    __slots__ = ("_n", "_q")

    def __init__(self) -> None:
        self._q: collections.deque[str | Callable[[], str] | Lazy] = collections.deque()
        self._n = 0  # lines in _q; only its oldest entry may hold some beyond SAMPLE_LINES

    def append(self, line: str | Callable[[], str] | Lazy) -> None:
        q = self._q
        q.append(line)
        self._n += line.n if isinstance(line, Lazy) else 1
        while self._n - _size(q[0]) >= SAMPLE_LINES:
            self._n -= _size(q.popleft())

    def __len__(self) -> int:
        return min(self._n, SAMPLE_LINES)

    def __iter__(self) -> Iterator[str]:
        skip = max(0, self._n - SAMPLE_LINES)  # of the oldest entry, pushed out already
        for item in self._q:
            if isinstance(item, Lazy):
                yield from item.lines()[skip:]
            elif not skip:
                yield item if isinstance(item, str) else item()
            skip = 0


@dataclass(frozen=True, slots=True)
class Lazy:
    """``n`` evidence lines, given by ``lines`` when read."""

    n: int
    lines: Callable[[], list[str]]


def _size(item: str | Callable[[], str] | Lazy) -> int:
    return item.n if isinstance(item, Lazy) else 1


@dataclass
class Signals:
    """Everything detectors know: per-source windows, probe states, the latest host reading,
    and the last few matching log lines of each source (evidence for an incident)."""

    statuses: dict[str, Windows] = field(default_factory=dict)
    causes: dict[str, Windows] = field(default_factory=dict)
    probes: dict[str, ProbeState] = field(default_factory=dict)
    services: dict[str, ServiceWatch] = field(default_factory=dict)
    dns: dict[str, DnsWatch] = field(default_factory=dict)
    fpm: dict[str, FpmState] = field(default_factory=dict)  # fpm_status sources' reads
    host: HostReading | None = None
    samples: dict[str, Evidence] = field(default_factory=dict)
    # While a step is verified: when it acted, and per access-log source the requests logged
    # since that had started before it (by their logged duration), to leave out of the count
    acted_at: float | None = None
    early: dict[str, Window] = field(default_factory=dict)

    def verifying(self, acted_at: float | None) -> None:
        """Start (or with None, end) counting requests that straddle the action."""
        self.acted_at = acted_at
        self.early.clear()

    def sample(self, source: str, line: str | Callable[[], str] | Lazy) -> None:
        """Keep ``line`` as evidence (bounded: the newest SAMPLE_LINES per source)."""
        q = self.samples.get(source)
        if q is None:
            q = self.samples[source] = Evidence()
        q.append(line)

    @classmethod
    def for_conditions(cls, conditions: Iterable[Condition]) -> Signals:
        """Windows for every window length a condition needs of each source."""
        horizons: dict[tuple[str, str], set[float]] = {}
        sig = cls()
        for cond in conditions:
            if isinstance(cond, StatusRate):
                key, span = ("status", cond.source), cond.window
            elif isinstance(cond, StatusSpike):
                horizons.setdefault(("status", cond.source), set()).add(cond.window)
                key, span = ("status", cond.source), cond.baseline
            elif isinstance(cond, ErrorCause):
                key, span = ("cause", cond.source), cond.window
            elif isinstance(cond, ProbeFailing):
                sig.probes.setdefault(cond.probe, ProbeState())
                continue
            elif isinstance(cond, ServiceDown):
                sig.services.setdefault(cond.service, ServiceWatch())
                continue
            elif isinstance(cond, DnsMismatch):
                sig.dns.setdefault(cond.source, DnsWatch())
                continue
            elif isinstance(cond, FpmSaturated | FpmHung | FpmStuck | FpmSlow):
                sig.fpm.setdefault(cond.source, FpmState())
                continue
            else:
                continue
            horizons.setdefault(key, set()).add(span)
        for (kind, source), spans in horizons.items():
            (sig.statuses if kind == "status" else sig.causes)[source] = Windows(spans)
        return sig


@dataclass(frozen=True)
class Reading:
    """One condition's verdict and the numbers behind it (evidence for the incident)."""

    condition: str
    holds: bool
    detail: dict[str, Any]
    # Under a ``not``: what is judged is the opposite of this leaf, and only when it is
    # ``known`` (evidence came in) can the opposite hold.
    negated: bool = False
    known: bool = True


def holds(cond: Condition, sig: Signals, now: float, *, since: float | None = None) -> bool:
    """Whether ``cond`` holds at ``now``: the hot question, short-circuited and without
    readings (``evaluate`` gives those, once it is worth telling why).

    ``since``: count log evidence (statuses, causes) only from then on, whatever the windows
    (the engine passes the end of the last incident: what came before was acted on).
    """
    if isinstance(cond, AllOf):  # loops, not all(): no generator per judgement
        for c in cond.conditions:  # noqa: SIM110
            if not holds(c, sig, now, since=since):
                return False
        return True
    if isinstance(cond, AnyOf):
        for c in cond.conditions:  # noqa: SIM110
            if holds(c, sig, now, since=since):
                return True
        return False
    if isinstance(cond, NotOf):
        return _truth(cond.condition, sig, now, since) is False
    if isinstance(cond, StatusRate):  # the log conditions, judged every second: no reading
        win = sig.statuses.get(cond.source)
        matched, total = (
            win.count(now, _span(cond.window, now, since), cond.status)
            if win is not None
            else (0, 0)
        )
        if matched < cond.at_least:
            return False
        if cond.ratio is None or (cond.count_alone is not None and matched >= cond.count_alone):
            return True
        return _ratio_met(cond.ratio, cond.min_sample, matched, total)
    if isinstance(cond, ErrorCause):
        cwin = sig.causes.get(cond.source)
        span = _span(cond.window, now, since)
        return (
            cwin.count(now, span, _causes(cond.cause))[0] if cwin is not None else 0
        ) >= cond.at_least
    if isinstance(cond, StatusSpike):
        return _spike(cond, sig.statuses.get(cond.source), now, since)[0]
    if isinstance(cond, ProbeFailing):
        probe = sig.probes.get(cond.probe)
        return probe is not None and probe.consecutive_failures >= cond.consecutive
    if isinstance(cond, ServiceDown):
        sw = sig.services.get(cond.service)
        return (
            sw is not None
            and sw.down_since is not None
            and (sw.definitive or now - sw.down_since >= cond.lasting)  # a crash: at once
        )
    return _leaf(cond, sig, now, since).holds


def evaluate(
    cond: Condition, sig: Signals, now: float, *, since: float | None = None
) -> tuple[bool, list[Reading]]:
    """Whether ``cond`` holds at ``now``, with the readings of every leaf that was judged."""
    truth, readings = _evaluate(cond, sig, now, since, negated=False)
    return truth is True, readings


Truth = bool | None
"""A condition's value in three: it holds, it is known not to hold, or nothing says (a probe
that never answered, a log window with too few requests). ``all``/``any`` combine them as
Kleene's logic does and ``not`` swaps True and False, leaving None; a trigger fires only on
True. Without ``not`` this is exactly the two-valued logic (None and False both fail)."""


def _both(values: list[Truth], every: bool) -> Truth:
    if every:
        return False if False in values else (None if None in values else True)
    return True if True in values else (None if None in values else False)


def _truth(cond: Condition, sig: Signals, now: float, since: float | None) -> Truth:
    """``cond``'s value in three (see :data:`Truth`), short-circuited like ``holds``."""
    if isinstance(cond, AllOf | AnyOf):
        every = isinstance(cond, AllOf)
        values: list[Truth] = []
        for c in cond.conditions:
            v = _truth(c, sig, now, since)
            if v is (not every):  # all: a False decides; any: a True does
                return v
            values.append(v)
        return _both(values, every)
    if isinstance(cond, NotOf):
        v = _truth(cond.condition, sig, now, since)
        return None if v is None else not v
    if holds(cond, sig, now, since=since):
        return True
    return False if _known(cond, sig, now, since) else None


def _evaluate(
    cond: Condition, sig: Signals, now: float, since: float | None, *, negated: bool
) -> tuple[Truth, list[Reading]]:
    if isinstance(cond, AllOf | AnyOf):
        readings: list[Reading] = []
        values = []
        for c in cond.conditions:
            v, sub = _evaluate(c, sig, now, since, negated=negated)
            values.append(v)
            readings.extend(sub)
        return _both(values, isinstance(cond, AllOf)), readings
    if isinstance(cond, NotOf):
        v, readings = _evaluate(cond.condition, sig, now, since, negated=not negated)
        return (None if v is None else not v), readings
    reading = _leaf(cond, sig, now, since)
    known = reading.holds or _known(cond, sig, now, since)
    if negated or not known:
        reading = Reading(reading.condition, reading.holds, reading.detail, negated, known)
    return (True if reading.holds else (False if known else None)), [reading]


def _known(cond: Condition, sig: Signals, now: float, since: float | None) -> bool:
    """Whether a leaf that does not hold is known not to: evidence came in to say so."""
    if isinstance(cond, StatusRate | StatusSpike):
        win = sig.statuses.get(cond.source)
        if win is None:
            return False
        total = win.count(now, _span(cond.window, now, since))[1]
        need = cond.min_sample if isinstance(cond, StatusRate) else cond.at_least
        return total >= need
    if isinstance(cond, ProbeFailing):
        st = sig.probes.get(cond.probe)
        return st is not None and st.last_at is not None
    if isinstance(cond, ServiceDown):
        sw = sig.services.get(cond.service)
        return sw is not None and sw.last_at is not None
    if isinstance(cond, DnsMismatch):
        dw = sig.dns.get(cond.source)
        return dw is not None and dw.last_at is not None
    if isinstance(cond, FpmSaturated | FpmHung | FpmStuck | FpmSlow):
        pool = sig.fpm.get(cond.source)
        return pool is not None and pool.last_at is not None
    if isinstance(cond, HostCondition):
        return sig.host is not None
    return False  # error_cause: quiet and blind look the same (refused under `not` anyway)


@functools.cache
def _causes(causes: tuple[str, ...]) -> frozenset[str]:
    return frozenset(causes)


def _span(window: float, now: float, since: float | None) -> float:
    """``window``, cut so that it starts no earlier than ``since``."""
    return window if since is None else max(0.0, min(window, now - since))


def _leaf(cond: Condition, sig: Signals, now: float, since: float | None = None) -> Reading:
    if isinstance(cond, StatusRate):
        return _status_rate(cond, sig.statuses.get(cond.source), now, since)
    if isinstance(cond, StatusSpike):
        return _status_spike(cond, sig.statuses.get(cond.source), now, since)
    if isinstance(cond, ErrorCause):
        win = sig.causes.get(cond.source)
        span = _span(cond.window, now, since)
        matched = win.count(now, span, _causes(cond.cause))[0] if win is not None else 0
        return Reading(
            "error_cause",
            matched >= cond.at_least,
            {
                "source": cond.source,
                "causes": list(cond.cause),
                "count": matched,
                "window_s": cond.window,
                "at_least": cond.at_least,
            },
        )
    if isinstance(cond, ProbeFailing):
        st = sig.probes.get(cond.probe, ProbeState())
        return Reading(
            "probe_failing",
            st.consecutive_failures >= cond.consecutive,
            {
                "probe": cond.probe,
                "consecutive_failures": st.consecutive_failures,
                "needed": cond.consecutive,
                "last": st.last_detail,
            },
        )
    if isinstance(cond, ServiceDown):
        sw = sig.services.get(cond.service, ServiceWatch())
        down_for = 0.0 if sw.down_since is None else now - sw.down_since
        detail = {"service": cond.service, "down_for_s": round(down_for, 3), "detail": sw.detail}
        if sw.down_since is not None:
            detail |= {"definitive": sw.definitive, "seen_by": sw.seen_by, "seen_at": sw.seen_at}
        return Reading(
            "service_down",
            sw.down_since is not None and (sw.definitive or down_for >= cond.lasting),
            detail,
        )
    if isinstance(cond, FpmSaturated):
        return Reading("fpm_saturated", *fpmdetect.saturated(cond, sig.fpm.get(cond.source), now))
    if isinstance(cond, FpmHung):
        return Reading("fpm_hung", *fpmdetect.hung(cond, sig.fpm.get(cond.source), now))
    if isinstance(cond, FpmStuck):
        return Reading("fpm_stuck", *fpmdetect.stuck(cond, sig.fpm.get(cond.source), now))
    if isinstance(cond, FpmSlow):
        return Reading("fpm_slow", *fpmdetect.slow(cond, sig.fpm.get(cond.source), now))
    if isinstance(cond, HostCondition):
        return _host(cond, sig.host)
    if isinstance(cond, DnsMismatch):
        dw = sig.dns.get(cond.source, DnsWatch())
        wrong_for = 0.0 if dw.mismatch_since is None else now - dw.mismatch_since
        return Reading(
            "dns_mismatch",
            dw.mismatch_since is not None and wrong_for >= cond.lasting,
            {
                "source": cond.source,
                "wrong_for_s": round(wrong_for, 3),
                "lasting_s": cond.lasting,
                "detail": dw.detail,
                "answers": dw.answers,
            },
        )
    raise TypeError(f"not a leaf condition: {cond!r}")


def _ratio_met(ratio: float, min_sample: int, matched: int, total: int) -> bool:
    """Whether ``matched`` of ``total`` requests make ``ratio``. A window holding fewer than
    ``min_sample`` requests (a quiet site; a daemon just started, whose windows hold nothing
    from before) is judged as if the requests it lacks had succeeded: one failure of one
    request is not 100%, but 12 failures of 13 requests are at least 12 of 20."""
    return matched / max(total, min_sample, 1) >= ratio


def _status_rate(
    cond: StatusRate, win: Windows | None, now: float, since: float | None = None
) -> Reading:
    span = _span(cond.window, now, since)
    matched, total = win.count(now, span, cond.status) if win is not None else (0, 0)
    holds = matched >= cond.at_least
    ratio = matched / total if total else 0.0
    if cond.ratio is not None:
        by_ratio = _ratio_met(cond.ratio, cond.min_sample, matched, total)
        by_count = cond.count_alone is not None and matched >= cond.count_alone
        holds = holds and (by_ratio or by_count)
    detail = {
        "source": cond.source,
        "statuses": _statuses(cond.status),
        "count": matched,
        "total": total,
        "ratio": round(ratio, 4),
        "window_s": cond.window,
        "at_least": cond.at_least,
        "min_ratio": cond.ratio,
    }
    if cond.ratio is not None:
        detail["min_sample"] = cond.min_sample  # fewer requests: judged as if they succeeded
    if cond.count_alone is not None:
        detail["count_alone"] = cond.count_alone
    return Reading("status_rate", holds, detail)


def _spike(
    cond: StatusSpike, win: Windows | None, now: float, since: float | None, *, full: bool = False
) -> tuple[bool, int, float, float]:
    """(holds, recent count, its rate, the baseline's rate). Not ``full``: without enough
    recent statuses the baseline is not counted (it could not make the spike hold) and 0."""
    if win is None:
        recent = before = 0
    else:
        recent = win.count(now, cond.window, cond.status)[0]
        if recent < cond.at_least and not full:
            return False, recent, recent / cond.window, 0.0
        before = win.count(now, cond.baseline, cond.status)[0] - recent
        if since is not None:
            recent = win.count(now, _span(cond.window, now, since), cond.status)[0]
    base_span = cond.baseline - cond.window
    baseline_rate = max(before / base_span, 1.0 / base_span)  # never divide by an empty past
    rate = recent / cond.window
    holds = recent >= cond.at_least and rate >= cond.factor * baseline_rate
    return holds, recent, rate, baseline_rate


def _status_spike(
    cond: StatusSpike, win: Windows | None, now: float, since: float | None = None
) -> Reading:
    holds, recent, rate, baseline_rate = _spike(cond, win, now, since, full=True)
    return Reading(
        "status_spike",
        holds,
        {
            "source": cond.source,
            "statuses": _statuses(cond.status),
            "count": recent,
            "rate_per_s": round(rate, 3),
            "baseline_per_s": round(baseline_rate, 4),
            "factor": cond.factor,
        },
    )


def _host(cond: HostCondition, host: HostReading | None) -> Reading:
    if host is None:  # no snapshot yet: blind, which is never "holds"
        return Reading("host", False, {"blind": True})
    checks = []
    detail: dict[str, Any] = {}
    if cond.memory_available_below is not None:
        limit = cond.memory_available_below
        threshold = (
            limit.bytes if limit.bytes is not None else int((limit.ratio or 0) * host.memory_total)
        )
        checks.append(host.memory_available < threshold)
        detail |= {"memory_available": host.memory_available, "threshold": threshold}
    if cond.swap_used_above is not None:
        checks.append(host.swap_used_ratio > cond.swap_used_above)
        detail["swap_used_ratio"] = round(host.swap_used_ratio, 4)
    if cond.load_above is not None:
        checks.append(host.load_per_cpu > cond.load_above)
        detail["load_per_cpu"] = round(host.load_per_cpu, 3)
    return Reading("host", all(checks), detail)


def _statuses(codes: frozenset[int]) -> str:
    """Compact text for a status set: ``5xx`` for a whole class, else a list."""
    lo = min(codes)
    if len(codes) == 100 and lo % 100 == 0 and max(codes) == lo + 99:
        return f"{lo // 100}xx"
    return ",".join(str(c) for c in sorted(codes))
