"""fpm_saturated, fpm_hung, fpm_stuck and fpm_slow on a clock set by the test; the fast ``holds`` agrees
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
from remediator.fpmdetect import DURATIONS_MIN, UNKNOWN_SPAN
from remediator.playbook import (
    AllOf,
    AnyOf,
    Corroborate,
    FpmHung,
    FpmSaturated,
    FpmSlow,
    FpmStuck,
    Verify,
)
from remediator.sources.fastcgi import Failure
from remediator.sources.fpmprocs import Workers
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
    done: tuple[tuple[int, int, float], ...] = (),
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
        done=done,
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


STUCK = FpmStuck(source="fpm", factor=4.0, at_least=0.25)


def _stuck_signals(usual: float | None = 0.05, at: float = 5.0) -> Signals:
    """A pool that was seen finishing requests of ``usual`` seconds (None: too few seen)."""
    sig = Signals.for_conditions([STUCK])
    n = DURATIONS_MIN if usual is not None else DURATIONS_MIN - 1
    for i in range(n):  # one worker, one more request done at each read
        status = _status(done=((100, i + 1, usual or 0.05),))
        sig.fpm["fpm"].record(status, None, "ok", at + i * 0.1)
    return sig


def _unanswered(
    sig: Signals, now: float, workers: Workers | None, failure: Failure = Failure.TIMEOUT
) -> None:
    sig.fpm["fpm"].record(None, failure, str(failure), now, 0.1, workers)


def test_every_worker_stopped_is_stuck_at_once() -> None:
    sig = _stuck_signals()
    _unanswered(sig, 10.0, Workers(4, 4, 10.0), Failure.STOPPED)
    ok, [reading] = evaluate(STUCK, sig, 10.0)
    assert ok and holds(STUCK, sig, 10.0)
    assert (reading.detail["workers"], reading.detail["stopped"]) == (4, 4)


def test_some_workers_stopped_is_not_stuck_while_others_progress() -> None:
    sig = _stuck_signals()
    _unanswered(sig, 10.0, Workers(4, 3, 10.0))
    _unanswered(sig, 10.2, Workers(4, 3, 10.2))  # a worker's counters moved
    assert not holds(STUCK, sig, 10.3)


def test_no_worker_finishing_for_the_span_is_stuck() -> None:
    sig = _stuck_signals(usual=0.05)  # span: max(0.25, 4 x 0.05) = 0.25 s
    _unanswered(sig, 10.1, Workers(4, 0, 10.05))
    assert not holds(STUCK, sig, 10.2)  # 0.15 s without progress
    _unanswered(sig, 10.3, Workers(4, 0, 10.05))
    ok, [reading] = evaluate(STUCK, sig, 10.3)
    assert ok and reading.detail["span_s"] == 0.25 and reading.detail["usual_s"] == 0.05


def test_the_span_follows_the_pools_own_request_durations() -> None:
    sig = _stuck_signals(usual=1.0)  # requests of 1 s: 4 s without one finishing
    _unanswered(sig, 10.0, Workers(2, 0, 9.0))
    assert not holds(STUCK, sig, 12.9)
    assert holds(STUCK, sig, 13.0)
    assert evaluate(STUCK, sig, 13.0)[1][0].detail["span_s"] == 4.0


def test_without_enough_durations_seen_the_span_is_at_least_the_unknown_span() -> None:
    sig = _stuck_signals(usual=None)
    _unanswered(sig, 10.0, Workers(2, 0, 10.0))
    assert not holds(STUCK, sig, 10.0 + UNKNOWN_SPAN - 0.01)
    assert holds(STUCK, sig, 10.0 + UNKNOWN_SPAN)


def test_an_answer_or_a_read_without_a_look_at_the_workers_is_never_stuck() -> None:
    sig = _stuck_signals()
    _unanswered(sig, 10.0, None)  # the source names no service: blind
    ok, [reading] = evaluate(STUCK, sig, 30.0)
    assert not ok and "blind" in reading.detail
    _unanswered(sig, 30.0, Workers(2, 0, 10.0))
    assert holds(STUCK, sig, 30.0)
    _answer(sig, 30.1)
    assert not holds(STUCK, sig, 40.0)


def test_a_request_seen_done_twice_is_counted_once() -> None:
    sig = Signals.for_conditions([STUCK])
    for i in range(DURATIONS_MIN * 2):  # the same idle worker, the same request, every read
        sig.fpm["fpm"].record(_status(done=((7, 3, 9.0),)), None, "ok", 5.0 + i * 0.1)
    assert list(sig.fpm["fpm"].durations) == [(5.0, 9.0)]
    assert sig.fpm["fpm"].usual(10.0) == (None, 1)


_READS = st.lists(
    st.tuples(
        st.floats(0.05, 1.0),
        st.one_of(
            st.sampled_from(
                [Failure.TIMEOUT, Failure.BACKLOG_FULL, Failure.REFUSED, Failure.STOPPED]
            ),
            st.tuples(
                st.integers(0, 4),
                st.integers(0, 2),
                st.integers(0, 2),
                st.integers(0, 3),
                st.integers(0, 9),
                st.floats(0, 5),
            ),
        ),
        # the workers' look with an unanswered read: (count, stopped, progress this read)
        st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(0, 4), st.booleans())),
        st.floats(0, 3),  # a duration seen done with an answered read
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    reads=_READS,
    lasting=st.floats(0, 3),
    older_than=st.floats(0.1, 3),
    window=st.floats(1, 10),
    at_least=st.integers(1, 4),
    after=st.floats(0, 3),
    factor=st.floats(1, 10),
)
def test_the_fast_holds_agrees_with_evaluate_on_fpm_conditions(
    reads: list[
        tuple[
            float,
            Failure | tuple[int, int, int, int, int, float],
            tuple[int, int, bool] | None,
            float,
        ]
    ],
    lasting: float,
    older_than: float,
    window: float,
    at_least: int,
    after: float,
    factor: float,
) -> None:
    sat = FpmSaturated(source="fpm", lasting=lasting)
    hung = FpmHung(source="fpm", older_than=older_than, lasting=lasting)
    slow = FpmSlow(source="fpm", window=max(1.0, window), at_least=at_least, lasting=lasting)
    stuck = FpmStuck(source="fpm", factor=factor, at_least=max(0.1, older_than / 4))
    sig = Signals.for_conditions([sat, hung, slow, stuck])
    now = 100.0
    mcr = slow_n = 0
    quiet_since = now
    for i, (gap, what, look, duration) in enumerate(reads):
        now += gap
        if isinstance(what, Failure):
            workers = None
            if look is not None:
                count, stopped, progressed = look
                quiet_since = now if progressed else quiet_since
                workers = Workers(count, min(stopped, count), quiet_since)
            sig.fpm["fpm"].record(None, what, str(what), now, min(gap, 0.5), workers)
        else:
            busy, idle, queue, dm, ds, youngest = what
            mcr, slow_n = mcr + dm, slow_n + ds
            status = _status(
                busy=busy,
                idle=idle,
                queue=queue,
                mcr=mcr,
                slow=slow_n,
                youngest=youngest,
                done=((1000 + i % 3, i, duration),),
            )
            sig.fpm["fpm"].record(status, None, "ok", now)
            quiet_since = now
    now += after
    for cond in (
        sat,
        hung,
        slow,
        stuck,
        AnyOf((sat, AllOf((hung, slow)))),
        AllOf((sat, hung)),
        AnyOf((stuck, sat)),
    ):
        assert holds(cond, sig, now) == evaluate(cond, sig, now)[0]
    # stuck only ever on an unanswered newest read that looked at the workers
    newest = sig.fpm["fpm"].reads[-1] if sig.fpm["fpm"].reads else None
    if holds(stuck, sig, now):
        assert newest is not None and newest.status is None and newest.workers is not None


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


def test_fpm_stuck_on_a_source_without_its_service_is_a_check_warning(tmp_path: Path) -> None:
    text = """
    services:
      fpm: {kind: php-fpm, pid_file: /run/php/php-fpm.pid, start: [/bin/true]}
    sources:
      pool: {type: fpm_status, socket: /run/php/php8.2-fpm.sock, path: /status%s}
    playbooks:
      - name: stuck
        when: {fpm_stuck: pool}
        steps: [{restart: fpm}]
    """
    blind = load_text(tmp_path, text % "")
    assert blind.ok, blind.all_errors()
    assert any("fpm_stuck on source 'pool' can never hold" in w for w in blind.warnings)
    seeing = load_text(tmp_path, text % ", service: fpm")
    assert seeing.ok and not any("fpm_stuck" in w for w in seeing.warnings)
    wrong = load_text(tmp_path, text.replace("kind: php-fpm", "kind: nginx") % ", service: fpm")
    [err] = [str(e) for e in wrong.all_errors()]
    assert "service 'fpm' is a nginx; an fpm_status source needs a php-fpm" in err


def test_check_warns_about_a_changing_playbook_on_pool_numbers_read_through_a_url(
    tmp_path: Path,
) -> None:
    """Whoever answers the URL writes the numbers, and corroboration does not guard them."""
    text = """\
sources:
  web: {type: fpm_status, url: "http://127.0.0.1:8080/status"}
  sock: {type: fpm_status, socket: /run/php/php8.2-fpm.sock, path: /status}
playbooks:
  - name: by-url
    when: {fpm_saturated: {source: web}}
    steps: [command: [/bin/true]]
  - name: by-socket
    when: {fpm_saturated: {source: sock}}
    steps: [command: [/bin/true]]
  - name: only-tells
    when: {fpm_hung: {source: web}}
    steps: [diagnose: {snapshot: true}]
"""
    loaded = load_text(tmp_path, text)
    assert loaded.ok, loaded.all_errors()
    assert loaded.config is not None
    [warning] = [
        w for w in corroborate.warnings(loaded.config, loaded.playbooks) if "through a URL" in w
    ]
    assert warning.startswith("playbook 'by-url': its trigger reads pool status web through")
    assert "it acts only when corroborated, as log lines do" in warning
    assert "fix: read the pool's `socket:` instead" in warning
    # and so it does: saturated numbers read through the URL back nothing by themselves;
    # through the socket (its listener checked to be root's) they do
    by_url, by_socket = (
        next(pb for pb in loaded.playbooks if pb.name == n) for n in ("by-url", "by-socket")
    )
    signals = Signals.for_conditions([by_url.when, by_socket.when])
    for pb, source, acts in ((by_url, "web", False), (by_socket, "sock", True)):
        need = corroborate.need_of(pb, loaded.config)
        assert need is not None
        saturated = Reading("fpm_saturated", True, {"source": source})
        judged = corroborate.judge(need, [saturated], signals, 100.0)
        assert judged.ok is acts, judged
    need_url = corroborate.need_of(by_url, loaded.config)
    assert need_url is not None and need_url.forgeable == ("web",)
    assert corroborate.forged_what(need_url) == "log lines or pool numbers read through a URL"
