"""fpm_saturated, fpm_hung and fpm_slow on a clock set by the test; the fast ``holds`` agrees
with ``evaluate``; a pool that could not serve corroborates a log trigger; the source's config
is checked with located errors."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from remediator import corroborate
from remediator.corroborate import Need
from remediator.detect import Reading, Signals, evaluate, holds
from remediator.events import JudgedOn
from remediator.playbook import (
    AllOf,
    AnyOf,
    Corroborate,
    FpmHung,
    FpmSaturated,
    FpmSlow,
    Verify,
)
from remediator.sources.fastcgi import Failure
from remediator.sources.fpmstatus import FpmStatus
from remediator.verify import Health, Verifier
from tests.wired import load_text


def _status(
    *,
    busy: int = 0,
    idle: int = 1,
    queue: int = 0,
    mcr: int = 0,
    slow: int = 0,
    youngest: float | None = None,
) -> FpmStatus:
    return FpmStatus(
        pool="www",
        manager="static",
        listen_queue=queue,
        idle=idle,
        busy=busy,
        total=busy + idle + 1,
        max_children_reached=mcr,
        slow_requests=slow,
        youngest_busy=youngest,
        oldest_busy=youngest,
    )


SAT = FpmSaturated(source="fpm", lasting=1.0)
HUNG = FpmHung(source="fpm", older_than=2.0, lasting=0.0)
SLOW = FpmSlow(source="fpm", window=10.0, at_least=2, lasting=0.0)


def _signals() -> Signals:
    return Signals.for_conditions([SAT, HUNG, SLOW])


def _answer(sig: Signals, now: float, **kw: float | int | None) -> None:
    sig.fpm["fpm"].record(_status(**kw), None, "ok", now)  # type: ignore[arg-type]


def _fail(sig: Signals, now: float, failure: Failure, elapsed: float = 0.2) -> None:
    sig.fpm["fpm"].record(None, failure, str(failure), now, elapsed)


def test_unanswered_reads_saturate_the_pool_only_once_they_lasted() -> None:
    sig = _signals()
    _answer(sig, 10.0)
    for t in (10.2, 10.4, 10.6, 10.8, 11.0):
        _fail(sig, t, Failure.TIMEOUT)
    assert not holds(SAT, sig, 11.0)  # saturated since 10.2: 0.8 s
    _fail(sig, 11.2, Failure.BACKLOG_FULL)
    ok, [reading] = evaluate(SAT, sig, 11.25)
    assert ok and reading.detail["saturated_for_s"] == 1.05


def test_an_answer_with_nothing_queued_ends_the_saturation() -> None:
    sig = _signals()
    for t in (10.0, 10.5, 11.0):
        _fail(sig, t, Failure.TIMEOUT)
    _answer(sig, 11.5)
    assert not holds(SAT, sig, 12.0)


def test_a_listen_queue_or_rising_max_children_reached_is_saturation() -> None:
    sig = _signals()
    _answer(sig, 10.0, queue=3)
    _answer(sig, 10.5, queue=1)
    _answer(sig, 11.0, mcr=1)  # rose since 10.5's answer
    assert holds(SAT, sig, 11.0)
    _answer(sig, 11.5, mcr=1)  # no longer rising, nothing queued
    assert not holds(SAT, sig, 11.5)


def test_a_pool_that_is_not_there_is_not_saturated_nor_hung() -> None:
    sig = _signals()
    for t in (10.0, 11.0, 12.0, 13.0):
        _fail(sig, t, Failure.REFUSED)
    assert not holds(SAT, sig, 13.0)
    assert not holds(HUNG, sig, 13.0)


def test_a_malformed_answer_is_neither() -> None:
    sig = _signals()
    for t in (10.0, 11.0, 12.0, 13.0):
        _fail(sig, t, Failure.PROTOCOL)
    assert not holds(SAT, sig, 13.0)
    assert not holds(HUNG, sig, 13.0)


def test_no_answer_for_older_than_is_hung() -> None:
    sig = _signals()
    _answer(sig, 10.0)
    _fail(sig, 10.7, Failure.TIMEOUT, elapsed=0.5)  # asked at 10.2
    _fail(sig, 11.4, Failure.TIMEOUT, elapsed=0.5)
    _fail(sig, 12.1, Failure.TIMEOUT, elapsed=0.5)
    assert not holds(HUNG, sig, 12.1)  # 1.9 s without a free worker
    ok, [reading] = evaluate(HUNG, sig, 12.25)
    assert ok
    assert reading.detail["unanswered_for_s"] == 2.05


def test_every_busy_worker_on_an_old_request_is_hung_while_one_answers() -> None:
    sig = _signals()
    _answer(sig, 10.0, busy=3, idle=0, youngest=1.9)
    assert not holds(HUNG, sig, 10.0)
    _answer(sig, 10.2, busy=3, idle=0, youngest=2.1)
    assert holds(HUNG, sig, 10.2)
    _answer(sig, 10.4, busy=3, idle=1, youngest=2.3)  # a worker came free
    assert not holds(HUNG, sig, 10.4)


def test_hung_with_lasting_waits_that_long() -> None:
    cond = FpmHung(source="fpm", older_than=1.0, lasting=1.0)
    sig = Signals.for_conditions([cond])
    _answer(sig, 10.0, busy=2, idle=0, youngest=1.5)
    assert not holds(cond, sig, 10.5)
    _answer(sig, 11.0, busy=2, idle=0, youngest=2.5)
    assert holds(cond, sig, 11.0)


def test_slow_requests_rising_in_the_window() -> None:
    sig = _signals()
    _answer(sig, 10.0, slow=5)
    _answer(sig, 11.0, slow=6)
    assert not holds(SLOW, sig, 11.0)
    _answer(sig, 12.0, slow=7)
    ok, [reading] = evaluate(SLOW, sig, 12.0)
    assert ok and reading.detail["slow_requests_rise"] == 2
    assert not holds(SLOW, sig, 21.5)  # both rises left the window


def test_a_counter_reset_by_a_restart_is_not_a_fall_nor_a_rise() -> None:
    sig = _signals()
    _answer(sig, 10.0, slow=50)
    _answer(sig, 11.0, slow=0)  # php-fpm restarted
    _answer(sig, 12.0, slow=1)
    assert evaluate(SLOW, sig, 12.0)[1][0].detail["slow_requests_rise"] == 1


def test_slow_with_lasting_must_keep_holding() -> None:
    cond = FpmSlow(source="fpm", window=5.0, at_least=1, lasting=2.0)
    sig = Signals.for_conditions([cond])
    _answer(sig, 10.0, slow=0)
    _answer(sig, 11.0, slow=1)
    assert not holds(cond, sig, 11.0)
    _answer(sig, 12.0, slow=1)
    _answer(sig, 13.0, slow=1)
    assert holds(cond, sig, 13.0)


def test_no_read_yet_holds_nothing() -> None:
    sig = _signals()
    for cond in (SAT, HUNG, SLOW):
        ok, [reading] = evaluate(cond, sig, 100.0)
        assert not ok and not holds(cond, sig, 100.0)
        assert isinstance(reading, Reading)


_READS = st.lists(
    st.tuples(
        st.floats(0.05, 1.0),
        st.one_of(
            st.sampled_from([Failure.TIMEOUT, Failure.BACKLOG_FULL, Failure.REFUSED]),
            st.tuples(
                st.integers(0, 4),
                st.integers(0, 2),
                st.integers(0, 2),
                st.integers(0, 3),
                st.integers(0, 9),
                st.floats(0, 5),
            ),
        ),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    reads=_READS,
    lasting=st.floats(0, 3),
    older_than=st.floats(0.1, 3),
    window=st.floats(1, 10),
    at_least=st.integers(1, 4),
    after=st.floats(0, 3),
)
def test_the_fast_holds_agrees_with_evaluate_on_fpm_conditions(
    reads: list[tuple[float, Failure | tuple[int, int, int, int, int, float]]],
    lasting: float,
    older_than: float,
    window: float,
    at_least: int,
    after: float,
) -> None:
    sat = FpmSaturated(source="fpm", lasting=lasting)
    hung = FpmHung(source="fpm", older_than=older_than, lasting=lasting)
    slow = FpmSlow(source="fpm", window=max(1.0, window), at_least=at_least, lasting=lasting)
    sig = Signals.for_conditions([sat, hung, slow])
    now = 100.0
    mcr = slow_n = 0
    for gap, what in reads:
        now += gap
        if isinstance(what, Failure):
            sig.fpm["fpm"].record(None, what, str(what), now, min(gap, 0.5))
        else:
            busy, idle, queue, dm, ds, youngest = what
            mcr, slow_n = mcr + dm, slow_n + ds
            status = _status(
                busy=busy, idle=idle, queue=queue, mcr=mcr, slow=slow_n, youngest=youngest
            )
            sig.fpm["fpm"].record(status, None, "ok", now)
    now += after
    for cond in (sat, hung, slow, AnyOf((sat, AllOf((hung, slow)))), AllOf((sat, hung))):
        assert holds(cond, sig, now) == evaluate(cond, sig, now)[0]


# --- corroboration ----------------------------------------------------------------------------

_CONFIG = """
sources:
  acc: {type: access_log, path: /var/log/nginx/access.log}
  pool: {type: fpm_status, socket: /run/php/php8.2-fpm.sock, path: /status, interval: 200ms}
playbooks:
  - name: fpm-502
    when: {status_rate: {source: acc, status: 502, window: 20s, at_least: 10}}
    steps:
      - command: [/bin/true]
"""


def _need(tmp_path: Path) -> tuple[Need, Signals]:
    loaded = load_text(tmp_path, _CONFIG)
    assert loaded.ok, loaded.all_errors()
    assert loaded.config is not None
    need = corroborate.need_of(loaded.playbooks[0], loaded.config)
    assert need is not None
    signals = Signals()
    corroborate.prepare(signals, [need])
    return need, signals


def test_an_fpm_status_source_makes_corroboration_possible(tmp_path: Path) -> None:
    need, _ = _need(tmp_path)
    assert need.mode is Corroborate.ANY
    assert need.fpm == ("pool",)
    assert "pool status pool not served" in need.wanted()


def test_a_pool_that_could_not_serve_its_status_corroborates(tmp_path: Path) -> None:
    need, signals = _need(tmp_path)
    reading = Reading("status_rate", True, {})
    assert not corroborate.judge(need, [reading], signals, 50.0).ok
    signals.fpm["pool"].record(None, Failure.TIMEOUT, "no answer within 0.5s", 45.0, 0.5)
    judged = corroborate.judge(need, [reading], signals, 50.0)
    assert judged.ok
    assert "pool status pool not served 5.0s ago: no answer within 0.5s" in judged.by


def test_a_malformed_status_answer_does_not_corroborate(tmp_path: Path) -> None:
    """Whatever answers on the status URL could make a malformed answer at will."""
    need, signals = _need(tmp_path)
    signals.fpm["pool"].record(None, Failure.PROTOCOL, "refused: not JSON", 45.0)
    judged = corroborate.judge(need, [Reading("status_rate", True, {})], signals, 50.0)
    assert not judged.ok
    assert judged.seen is not None and "failing" in judged.seen["pool status pool"]


# --- config -----------------------------------------------------------------------------------


def _errors(tmp_path: Path, source: str) -> list[str]:
    loaded = load_text(tmp_path, f"sources:\n  pool: {source}\n")
    return [str(e).split(": ", 1)[1] for e in loaded.all_errors()]


def test_the_source_needs_a_socket_or_a_url(tmp_path: Path) -> None:
    [err] = _errors(tmp_path, "{type: fpm_status}")
    assert "give the pool's 'socket' (and 'path'), or a 'url'" in err
    [err] = _errors(
        tmp_path, '{type: fpm_status, socket: /run/x.sock, path: /s, url: "http://h/s"}'
    )
    assert "one of them" in err


def test_a_socket_needs_the_status_path(tmp_path: Path) -> None:
    [err] = _errors(tmp_path, "{type: fpm_status, socket: 127.0.0.1:9000}")
    assert "give the pool's pm.status_path" in err


def test_a_bad_socket_is_a_located_error(tmp_path: Path) -> None:
    [err] = _errors(tmp_path, "{type: fpm_status, socket: 'localhost', path: /s}")
    assert "'localhost' is not a socket path or host:port" in err


def test_intervals_go_down_to_100ms_and_the_timeout_fits_in_them(tmp_path: Path) -> None:
    assert (
        _errors(
            tmp_path,
            "{type: fpm_status, socket: /r.sock, path: /s, interval: 100ms, timeout: 100ms}",
        )
        == []
    )
    [err] = _errors(tmp_path, "{type: fpm_status, socket: /r.sock, path: /s, interval: 50ms}")
    assert "interval" in err
    [err] = _errors(
        tmp_path, "{type: fpm_status, socket: /r.sock, path: /s, interval: 1s, timeout: 2s}"
    )
    assert "must not be longer than interval" in err


# --- verification ------------------------------------------------------------------------------


def test_verification_reads_only_the_pools_answers_after_the_action() -> None:
    sig = _signals()
    verifier = Verifier(sig)
    for t in (10.0, 10.2, 10.4):
        _fail(sig, t, Failure.TIMEOUT)
    judged = verifier.judge(Verify(), HUNG, since=10.5, now=10.5)
    assert judged.health is Health.UNKNOWN  # nothing read since the action
    _fail(sig, 10.6, Failure.REFUSED)  # the pool restarting
    assert verifier.judge(Verify(), HUNG, since=10.5, now=10.6).health is Health.UNKNOWN
    _fail(sig, 10.8, Failure.TIMEOUT)
    judged = verifier.judge(Verify(), HUNG, since=10.5, now=10.8)
    assert judged.health is Health.FAILING and judged.judged_on == (JudgedOn.POOL,)
    _answer(sig, 11.0)
    judged = verifier.judge(Verify(), AnyOf((SAT, HUNG)), since=10.5, now=11.0)
    assert judged.health is Health.HEALTHY
    assert "pool fpm not hung" in judged.detail
