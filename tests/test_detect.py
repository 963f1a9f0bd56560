"""Detectors are pure: fed events and a clock set by the test."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from remediator.causes import Cause
from remediator.detect import (
    MAX_BUCKETS,
    SAMPLE_LINES,
    Evidence,
    HostReading,
    Lazy,
    Signals,
    Window,
    evaluate,
    holds,
)
from remediator.playbook import (
    AllOf,
    Amount,
    AnyOf,
    ErrorCause,
    HostCondition,
    ProbeFailing,
    ServiceDown,
    StatusRate,
    StatusSpike,
)

S502 = frozenset({502})
RATE = StatusRate(source="acc", status=S502, window=20.0, at_least=10, ratio=0.05, min_sample=20)


def signals(*conds: object) -> Signals:
    return Signals.for_conditions(conds)  # type: ignore[arg-type]


def test_status_rate_holds_once_enough_502s_fall_in_the_window() -> None:
    sig = signals(RATE)
    for i in range(100):
        sig.statuses["acc"].add(1000 + i * 0.1, 200)
    assert not evaluate(RATE, sig, 1010)[0]
    for _ in range(9):
        sig.statuses["acc"].add(1010, 502)
    assert not evaluate(RATE, sig, 1010)[0]
    sig.statuses["acc"].add(1010, 502)
    holds, readings = evaluate(RATE, sig, 1010)
    assert holds
    assert readings[0].detail["count"] == 10
    assert readings[0].detail["total"] == 110


def test_status_rate_stops_holding_when_the_502s_leave_the_window() -> None:
    sig = signals(RATE)
    sig.statuses["acc"].add(1000, 502, 30)
    assert evaluate(RATE, sig, 1000)[0]
    assert evaluate(RATE, sig, 1019)[0]
    assert not evaluate(RATE, sig, 1021)[0]


def test_a_ratio_below_the_minimum_sample_counts_the_missing_requests_as_successes() -> None:
    cond = StatusRate(source="acc", status=S502, window=20.0, at_least=1, ratio=0.5, min_sample=20)
    sig = signals(cond)
    sig.statuses["acc"].add(1000, 502, 5)  # 100 % of 5 requests: only 5 of 20 as judged
    assert not evaluate(cond, sig, 1000)[0] and not holds(cond, sig, 1000)
    sig.statuses["acc"].add(1000, 200, 3)
    sig.statuses["acc"].add(1000, 502, 5)  # 10 of 13 requests: at least 10 of 20
    holding, readings = evaluate(cond, sig, 1000)
    assert holding and holds(cond, sig, 1000)
    d = readings[0].detail
    assert (d["count"], d["total"], d["min_sample"]) == (10, 13, 20)


def test_ratio_below_threshold_does_not_hold_on_a_busy_site() -> None:
    sig = signals(RATE)
    sig.statuses["acc"].add(1000, 200, 10_000)
    sig.statuses["acc"].add(1000, 502, 100)  # 1 % < 5 %
    assert not evaluate(RATE, sig, 1000)[0]


def test_window_memory_is_bounded_whatever_the_traffic() -> None:
    win = Window(3600)
    for i in range(200_000):
        win.add(i * 0.5, 200 + i % 7)
    assert len(win) <= MAX_BUCKETS + 2


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 2000), st.sampled_from([200, 502, 504])), max_size=200),
    st.integers(1, 600),
)
def test_window_counts_match_a_brute_force_count(events: list[tuple[int, int]], span: int) -> None:
    win = Window(600)
    events.sort()
    for t, status in events:
        win.add(float(t), status)
    now = float(events[-1][0]) if events else 0.0
    expected = [s for t, s in events if now - span < t <= now]
    assert win.count(now, span, S502) == (expected.count(502), len(expected))


def test_error_cause_counts_only_the_named_causes() -> None:
    cond = ErrorCause(source="err", cause=("upstream_refused",), window=30.0, at_least=3)
    sig = signals(cond)
    sig.causes["err"].add(10, Cause.UPSTREAM_TIMEOUT, 50)
    sig.causes["err"].add(10, Cause.UPSTREAM_REFUSED, 2)
    assert not evaluate(cond, sig, 10)[0]
    sig.causes["err"].add(11, Cause.UPSTREAM_REFUSED)
    assert evaluate(cond, sig, 11)[0]


def test_probe_failing_needs_consecutive_failures_and_resets_on_success() -> None:
    cond = ProbeFailing(probe="site", consecutive=3)
    sig = signals(cond)
    probe = sig.probes["site"]
    for ok in (False, False, True, False, False):
        probe.record(ok)
    assert not evaluate(cond, sig, 0)[0]
    probe.record(False, "timed out after 1s")
    holds, readings = evaluate(cond, sig, 0)
    assert holds
    assert readings[0].detail["last"] == "timed out after 1s"


def test_spike_compares_with_the_sources_own_baseline() -> None:
    cond = StatusSpike(
        source="acc", status=S502, window=30.0, baseline=1800.0, factor=4.0, at_least=10
    )
    sig = signals(cond)
    win = sig.statuses["acc"]
    for t in range(0, 1770, 10):  # a steady 0.1 502/s background for half an hour
        win.add(float(t), 502)
    win.add(1780.0, 502, 3)  # 0.1/s: same as the baseline
    assert not evaluate(cond, sig, 1799)[0]
    win.add(1790.0, 502, 20)  # ~0.77/s now, > 4 x 0.1/s
    assert evaluate(cond, sig, 1799)[0]


def test_host_condition_without_a_snapshot_is_blind_not_true() -> None:
    cond = HostCondition(memory_available_below=Amount(ratio=0.5))
    sig = signals(cond)
    holds, readings = evaluate(cond, sig, 0)
    assert not holds
    assert readings[0].detail == {"blind": True}
    sig.host = HostReading(
        memory_total=1000, memory_available=400, swap_used_ratio=0, load_per_cpu=0.1
    )
    assert evaluate(cond, sig, 0)[0]


def test_all_and_any_combine_and_report_every_leaf() -> None:
    rate = StatusRate(source="acc", status=S502, window=20.0, at_least=1, ratio=None, min_sample=1)
    probe = ProbeFailing(probe="site", consecutive=1)
    sig = signals(rate, probe)
    sig.statuses["acc"].add(5, 502)
    both = AllOf((rate, probe))
    either = AnyOf((rate, probe))
    assert not evaluate(both, sig, 5)[0]
    holds, readings = evaluate(either, sig, 5)
    assert holds
    assert [r.condition for r in readings] == ["status_rate", "probe_failing"]


def test_service_down_holds_only_after_it_lasted() -> None:
    cond = ServiceDown(service="fpm", lasting=0.5)
    sig = signals(cond)
    sig.services["fpm"].record(True, "master 12 not running, 2 of its processes left", 10.0)
    assert not evaluate(cond, sig, 10.4)[0]
    holds, readings = evaluate(cond, sig, 10.5)
    assert holds and readings[0].detail["down_for_s"] == 0.5
    sig.services["fpm"].record(False, "master 13 running", 10.6)
    assert not evaluate(cond, sig, 11.0)[0]


def test_a_crash_holds_at_once_and_says_how_it_was_seen() -> None:
    cond = ServiceDown(service="fpm", lasting=30.0)
    sig = signals(cond)
    sig.services["fpm"].record(
        True,
        "master 12 not running, 2 of its processes left",
        10.0,
        definitive=True,
        seen_by="pidfd",
        seen_at="2026-12-05T17:00:00.000Z",
    )
    holds, readings = evaluate(cond, sig, 10.0)
    assert holds and readings[0].detail["down_for_s"] == 0.0
    assert readings[0].detail | {"detail": ""} == {
        "service": "fpm",
        "down_for_s": 0.0,
        "detail": "",
        "definitive": True,
        "seen_by": "pidfd",
        "seen_at": "2026-12-05T17:00:00.000Z",
    }


def test_a_down_that_is_not_a_crash_still_waits_lasting() -> None:
    cond = ServiceDown(service="fpm", lasting=0.5)
    sig = signals(cond)
    sig.services["fpm"].record(True, "failed/failed result=start-limit-hit", 10.0, seen_by="poll")
    assert not evaluate(cond, sig, 10.4)[0]
    assert evaluate(cond, sig, 10.5)[0]


def test_short_circuit_holds_agrees_with_the_full_evaluation() -> None:
    rate = StatusRate(source="acc", status=S502, window=20.0, at_least=1, ratio=None, min_sample=1)
    probe = ProbeFailing(probe="site", consecutive=1)
    sig = signals(rate, probe)
    trees: list[AllOf | AnyOf] = [
        AllOf((rate, probe)),
        AnyOf((rate, probe)),
        AllOf((AnyOf((rate, probe)), rate)),
    ]
    for step in range(4):
        if step == 1:
            sig.statuses["acc"].add(5, 502)
        if step == 2:
            sig.probes["site"].record(False, "timed out", 5)
        if step == 3:
            sig.probes["site"].record(True, "status 200", 5)
        for tree in trees:
            assert holds(tree, sig, 5) == evaluate(tree, sig, 5)[0]


@settings(max_examples=300, deadline=None)
@given(
    at_least=st.integers(1, 30),
    ratio=st.one_of(st.none(), st.floats(0.01, 0.9)),
    count_alone=st.one_of(st.none(), st.integers(1, 60)),
    min_sample=st.integers(1, 40),
    events=st.lists(
        st.tuples(st.floats(0, 40), st.sampled_from([200, 404, 502, 503]), st.integers(1, 30)),
        max_size=20,
    ),
    cause_events=st.lists(st.tuples(st.floats(0, 40), st.integers(1, 5)), max_size=5),
    since=st.one_of(st.none(), st.floats(0, 40)),
)
def test_the_fast_holds_agrees_with_the_readings_evaluate_gives(
    at_least: int,
    ratio: float | None,
    count_alone: int | None,
    min_sample: int,
    events: list[tuple[float, int, int]],
    cause_events: list[tuple[float, int]],
    since: float | None,
) -> None:
    """``holds`` judges log conditions every second without building readings; it must never
    say otherwise than ``evaluate`` (which says why, in the records)."""
    if ratio is None or (count_alone is not None and count_alone < at_least):
        count_alone = None
    rate = StatusRate(
        source="acc",
        status=frozenset({502, 503}),
        window=20.0,
        at_least=at_least,
        ratio=ratio,
        min_sample=min_sample,
        count_alone=count_alone,
    )
    cause = ErrorCause(source="err", cause=(Cause.UPSTREAM_REFUSED,), window=10.0, at_least=3)
    cond = AnyOf((AllOf((rate, cause)), rate))
    sig = signals(rate, cause)
    for t, status, n in sorted(events):
        sig.statuses["acc"].add(1000 + t, status, n)
    for t, n in sorted(cause_events):
        sig.causes["err"].add(1000 + t, Cause.UPSTREAM_REFUSED, n)
    now = 1040.0
    at = None if since is None else 1000 + since
    assert holds(cond, sig, now, since=at) == evaluate(cond, sig, now, since=at)[0]
    assert holds(rate, sig, now, since=at) == evaluate(rate, sig, now, since=at)[0]


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(st.tuples(st.floats(0, 1900), st.integers(1, 40)), max_size=30),
    at_least=st.integers(1, 30),
    factor=st.floats(1.1, 10),
    failures=st.integers(0, 4),
    down_at=st.one_of(st.none(), st.floats(1900, 1940)),
    crash=st.booleans(),
    since=st.one_of(st.none(), st.floats(1800, 1940)),
)
def test_the_fast_holds_of_spikes_probes_and_services_agrees_with_evaluate(
    events: list[tuple[float, int]],
    at_least: int,
    factor: float,
    failures: int,
    down_at: float | None,
    crash: bool,
    since: float | None,
) -> None:
    spike = StatusSpike(
        source="acc",
        status=S502,
        window=30.0,
        baseline=1800.0,
        factor=factor,
        at_least=at_least,
    )
    probe = ProbeFailing(probe="site", consecutive=2)
    down = ServiceDown(service="fpm", lasting=5.0)
    sig = signals(spike, probe, down)
    for t, n in sorted(events):
        sig.statuses["acc"].add(t, 502, n)
    for _ in range(failures):
        sig.probes["site"].record(False, "timed out", 1900)
    if down_at is not None:  # a crash (definitive) holds at once, without `lasting`
        sig.services["fpm"].record(True, "master gone", down_at, definitive=crash)
    now = 1940.0
    for cond in (spike, probe, down, AnyOf((spike, probe, down))):
        assert holds(cond, sig, now, since=since) == evaluate(cond, sig, now, since=since)[0]


def test_evidence_keeps_the_newest_lines_and_reads_only_lazy_lines_still_kept() -> None:
    read: list[int] = []

    def lines(start: int, n: int) -> Lazy:
        def give() -> list[str]:
            read.append(start)
            return [f"line {i}" for i in range(start, start + n)]

        return Lazy(n, give)

    ev = Evidence()
    ev.append(lines(0, 15))
    ev.append("line 15")
    ev.append(lambda: "line 16")
    ev.append(lines(17, 20))
    ev.append(lines(37, 3))  # 40 lines in all: the first 20 are out
    assert len(ev) == SAMPLE_LINES
    assert list(ev) == [f"line {i}" for i in range(20, 40)]
    assert read == [17, 37]  # the group of lines 0-14 was never read
