"""The fpm_status source against a real PHP-FPM (over its unix socket, and through a real
nginx): the status is read, a pool filled with slow requests is saturated, SIGSTOPped workers
are hung; and a hostile FastCGI server on loopback is refused with a reason, within bounds."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from remediator.config import FpmStatusSource
from remediator.detect import Signals, evaluate, holds
from remediator.fpmwatch import FpmStatusThreads
from remediator.playbook import Condition, FpmHung, FpmSaturated
from remediator.sources import fastcgi
from remediator.sources.fastcgi import Failure
from remediator.sources.fpmprocs import PoolWatch, Workers
from remediator.sources.fpmstatus import MAX_ANSWER, StatusReader, parse
from tests.stack import LOCK, Nginx, PhpFpm, Stack, http_get, wait_for

STATUS_PATH = "/fpm-status"  # tests/stack.py's pm.status_path


def _socket_source(fpm: PhpFpm, **kw: float) -> FpmStatusSource:
    return FpmStatusSource(socket=str(fpm.socket), path=STATUS_PATH, **kw)  # type: ignore[arg-type]


def _until(source: FpmStatusSource, cond: Condition, timeout: float) -> Signals:
    """Read ``source`` in its own thread, as the daemon does, until ``cond`` holds."""
    signals = Signals.for_conditions([cond])
    threads = FpmStatusThreads({"fpm": source}, wake=lambda: None)
    threads.start()
    try:

        def held() -> bool:
            now = time.monotonic()
            threads.drain(signals, now)
            return holds(cond, signals, now)

        wait_for(held, timeout, f"{cond} to hold", interval=0.02)
    finally:
        threads.stop()
    return signals


def _fill(url: str, n: int) -> list[threading.Thread]:
    """``n`` requests that take a while, each in a thread of its own (joined by the caller)."""
    threads = [threading.Thread(target=_get_quietly, args=(url,), daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def _get_quietly(url: str) -> None:
    with contextlib.suppress(OSError):
        http_get(url, timeout=15)


def test_status_is_read_from_the_pools_socket(fpm: PhpFpm) -> None:
    reader = StatusReader("fpm", _socket_source(fpm))
    # A static pool forks its workers one by one after the master is up: until then the
    # status counts the ones there are (its "(null)" slots are not workers yet).
    wait_for(
        lambda: (r := reader.read()).status is not None and r.status.total == fpm.max_children,
        10,
        "every worker of the pool",
    )
    result = reader.read()
    assert result.ok, result.detail
    assert result.status is not None
    assert result.status.pool == "www"
    assert result.status.total == fpm.max_children
    assert result.status.busy == 0  # the worker that answered is not counted as busy
    assert result.status.idle == fpm.max_children - 1
    assert "pool www" in result.detail


def test_status_is_read_through_nginx(nginx_fpm: Nginx) -> None:
    source = FpmStatusSource(url=nginx_fpm.url(STATUS_PATH))
    result = StatusReader("fpm", source).read()
    assert result.ok, result.detail
    assert result.status is not None and result.status.busy == 0


def test_a_wrong_status_path_is_refused_with_the_pools_own_reason(fpm: PhpFpm) -> None:
    source = FpmStatusSource(socket=str(fpm.socket), path="/not-the-status")
    result = StatusReader("fpm", source).read()
    assert result.failure is Failure.PROTOCOL
    assert "404" in result.detail and "pm.status_path" in result.detail


def test_a_pool_that_is_not_there_is_refused_not_saturated(fpm: PhpFpm) -> None:
    source = _socket_source(fpm)
    fpm.kill_all()
    fpm.socket.unlink(missing_ok=True)
    result = StatusReader("fpm", source).read()
    assert result.failure is Failure.REFUSED


@pytest.mark.parametrize("via", ["socket", "nginx"])
def test_slow_requests_filling_every_worker_saturate_the_pool(nginx_fpm: Nginx, via: str) -> None:
    fpm = nginx_fpm.fpm
    assert fpm is not None
    cond = FpmSaturated(source="fpm", lasting=0.3)
    source = (
        _socket_source(fpm, interval=0.1, timeout=0.1)
        if via == "socket"
        else FpmStatusSource(url=nginx_fpm.url(STATUS_PATH), interval=0.1, timeout=0.1)
    )
    hogs = _fill(nginx_fpm.url("/slow.php?s=3"), fpm.max_children + 1)
    try:
        signals = _until(source, cond, timeout=10)
        ok, readings = evaluate(cond, signals, time.monotonic())
        assert ok
        assert readings[0].detail["saturated_for_s"] >= 0.3
    finally:
        for t in hogs:
            t.join(timeout=15)


def test_a_busy_but_not_full_pool_is_not_saturated(stack_fpm4: PhpFpm) -> None:
    fpm = stack_fpm4
    cond = FpmSaturated(source="fpm", lasting=0.0)
    signals = Signals.for_conditions([cond])
    reader = StatusReader("fpm", _socket_source(fpm, timeout=1.0))
    for _ in range(3):
        r = reader.read()
        signals.fpm["fpm"].record(r.status, r.failure, r.detail, time.monotonic(), r.elapsed)
    assert not holds(cond, signals, time.monotonic())


@pytest.fixture
def stack_fpm4(stack: Stack) -> PhpFpm:
    return stack.fpm(max_children=4)


def test_stopped_workers_are_hung_after_older_than(fpm: PhpFpm) -> None:
    cond = FpmHung(source="fpm", older_than=0.5)
    source = _socket_source(fpm, interval=0.1, timeout=0.1)
    workers = fpm.worker_pids()
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        signals = _until(source, cond, timeout=10)
        ok, readings = evaluate(cond, signals, time.monotonic())
        assert ok
        assert readings[0].detail["unanswered_for_s"] >= 0.5
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)


def test_workers_all_on_old_requests_are_hung_while_one_answers(stack: Stack) -> None:
    fpm = stack.fpm(max_children=3)
    nginx = stack.nginx(fpm)
    cond = FpmHung(source="fpm", older_than=0.5)
    hogs = _fill(nginx.url("/slow.php?s=3"), 2)  # two of three workers, the third answers
    try:
        signals = _until(_socket_source(fpm, interval=0.1, timeout=0.5), cond, timeout=10)
        latest = signals.fpm["fpm"].latest
        assert latest is not None and latest.busy == 2 and latest.idle == 0
    finally:
        for t in hogs:
            t.join(timeout=15)


# --- a hostile FastCGI server ----------------------------------------------------------------

_HEADER = struct.Struct("!BBHHBx")
_GOOD_JSON = (
    b'{"pool":"www","process manager":"static","start time":1,"start since":1,'
    b'"accepted conn":1,"listen queue":0,"max listen queue":0,"listen queue len":0,'
    b'"idle processes":1,"active processes":1,"total processes":2,'
    b'"max active processes":1,"max children reached":0,"slow requests":0,'
    b'"processes":[{"pid":1,"state":"Idle","request duration":0,"request uri":"-"},'
    b'{"pid":2,"state":"Running","request duration":5,"request uri":"/s?json&full"}]}'
)


def _rec(kind: int, content: bytes, *, req: int = 1, version: int = 1) -> bytes:
    return _HEADER.pack(version, kind, req, len(content), 0) + content


def _stdout(body: bytes, headers: bytes = b"Content-Type: application/json\r\n\r\n") -> bytes:
    data = headers + body
    out = b"".join(_rec(6, data[i : i + 65535]) for i in range(0, len(data), 65535))
    return out + _rec(3, struct.pack("!IB3x", 0, 0))


def _huge(conn: socket.socket) -> None:
    chunk = _rec(6, b"x" * 65535)
    with_headers = _rec(6, b"Content-Type: application/json\r\n\r\n")
    conn.sendall(with_headers)
    for _ in range((MAX_ANSWER // 65535) + 4):
        conn.sendall(chunk)


def _drip(conn: socket.socket) -> None:
    for byte in _stdout(_GOOD_JSON):
        conn.sendall(bytes((byte,)))
        time.sleep(0.02)


def _empty_records(conn: socket.socket) -> None:
    for _ in range(200_000):  # a flood of empty records, each only a header
        conn.sendall(_rec(7, b"") * 64)


def _not_found_with_an_escape(conn: socket.socket) -> None:
    conn.sendall(_rec(7, b"\x1b[2J\x1b]0;owned\x07 gone\n"))
    conn.sendall(_stdout(b"x", b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\n"))


HOSTILE: dict[str, tuple[Callable[[socket.socket], None], Failure, str]] = {
    "404 with an escape on stderr": (_not_found_with_an_escape, Failure.PROTOCOL, "\\x1b[2J"),
    "huge answer": (_huge, Failure.PROTOCOL, "larger than"),
    "endless empty records": (_empty_records, Failure.PROTOCOL, "records"),
    "drip": (_drip, Failure.TIMEOUT, "no answer within"),
    "other request id": (
        lambda c: c.sendall(_rec(6, b"x", req=7)),
        Failure.PROTOCOL,
        "not ours",
    ),
    "other version": (lambda c: c.sendall(_rec(6, b"x", version=2)), Failure.PROTOCOL, "version"),
    "unexpected record": (lambda c: c.sendall(_rec(9, b"")), Failure.PROTOCOL, "type 9"),
    "closed early": (lambda c: c.sendall(_rec(6, b"x")), Failure.CLOSED, "closed"),
    "not json": (lambda c: c.sendall(_stdout(b"<html>")), Failure.PROTOCOL, "not JSON"),
    "deep nesting": (
        lambda c: c.sendall(_stdout(b"[" * 200_000 + b"]" * 200_000)),
        Failure.PROTOCOL,
        "refused",
    ),
    "NaN": (
        lambda c: c.sendall(
            _stdout(_GOOD_JSON.replace(b'"listen queue":0', b'"listen queue":NaN'))
        ),
        Failure.PROTOCOL,
        "not a number",
    ),
    "negative count": (
        lambda c: c.sendall(_stdout(_GOOD_JSON.replace(b'"listen queue":0', b'"listen queue":-1'))),
        Failure.PROTOCOL,
        "'listen queue' is not a count",
    ),
    "duplicate key": (
        lambda c: c.sendall(
            _stdout(_GOOD_JSON.replace(b'{"pool":"www"', b'{"pool":"a","pool":"www"'))
        ),
        Failure.PROTOCOL,
        "twice",
    ),
    "escape in the pool name": (
        lambda c: c.sendall(_stdout(_GOOD_JSON.replace(b'"pool":"www"', b'"pool":"\\u001b[2J"'))),
        Failure.PROTOCOL,
        "not a pool name",
    ),
    "html instead of json": (
        lambda c: c.sendall(_stdout(_GOOD_JSON, b"Content-Type: text/html\r\n\r\n")),
        Failure.PROTOCOL,
        "not JSON",
    ),
    "processes not a list": (
        lambda c: c.sendall(
            _stdout(
                _GOOD_JSON.replace(b'"processes":[', b'"processes":{"a":[').replace(b"}]}", b"}]}}")
            )
        ),
        Failure.PROTOCOL,
        "list of the pool's processes",
    ),
    "a process without a duration": (
        lambda c: c.sendall(
            _stdout(_GOOD_JSON.replace(b'"request duration":5', b'"request duration":"5"'))
        ),
        Failure.PROTOCOL,
        "'request duration' is not a duration",
    ),
}


@pytest.fixture
def fake_fcgi() -> Iterator[tuple[str, list[Callable[[socket.socket], None]]]]:
    """A FastCGI 'pool' on loopback that answers each connection with the next behaviour."""
    server = socket.create_server(("127.0.0.1", 0))
    behaviours: list[Callable[[socket.socket], None]] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)  # the request (ours is one small write)
                    behaviours.pop(0)(conn)
                except OSError:
                    pass  # the client gave up: what a bounded client does

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    port = server.getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", behaviours
    finally:
        stop.set()
        t.join(timeout=10)
        server.close()


def test_a_well_formed_answer_from_the_fake_is_read(
    fake_fcgi: tuple[str, list[Callable[[socket.socket], None]]],
) -> None:
    """The fake speaks the protocol well enough: what follows is refused for its faults."""
    addr, behaviours = fake_fcgi
    behaviours.append(lambda c: c.sendall(_stdout(_GOOD_JSON)))
    result = StatusReader("f", FpmStatusSource(socket=addr, path="/s", timeout=1.0)).read()
    assert result.ok, result.detail
    assert result.status is not None and (result.status.busy, result.status.idle) == (0, 1)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_answer_is_refused_with_a_reason(
    case: str, fake_fcgi: tuple[str, list[Callable[[socket.socket], None]]]
) -> None:
    addr, behaviours = fake_fcgi
    behave, failure, reason = HOSTILE[case]
    behaviours.append(behave)
    source = FpmStatusSource(socket=addr, path="/s", timeout=0.5, interval=1.0)
    result = StatusReader("f", source).read()
    assert result.status is None
    assert result.failure is failure, result.detail
    assert reason in result.detail
    assert "\x1b" not in result.detail


def test_a_quiet_pool_wakes_the_main_loop_once_a_busy_one_at_every_read(
    nginx_fpm: Nginx,
) -> None:
    fpm = nginx_fpm.fpm
    assert fpm is not None
    wakes: list[float] = []
    threads = FpmStatusThreads(
        {"fpm": _socket_source(fpm, interval=0.1, timeout=0.1)}, wake=lambda: wakes.append(1)
    )
    threads.start()
    try:
        wait_for(lambda: len(threads.results) >= 5, 10, "five reads")
        assert len(wakes) == 1  # the first read; the same quiet status after it
        hog = _fill(nginx_fpm.url("/slow.php?s=2"), 1)
        wait_for(lambda: len(wakes) >= 4, 10, "wake-ups while a worker is busy")
    finally:
        threads.stop()
    signals = Signals.for_conditions([FpmSaturated(source="fpm")])
    threads.drain(signals, time.monotonic())
    reads = signals.fpm["fpm"].reads
    assert len(reads) >= 8
    assert all(a.at <= b.at for a, b in zip(reads, list(reads)[1:], strict=False))
    for t in hog:
        t.join(timeout=15)


def test_slots_still_spawning_and_status_requests_finishing_are_not_busy_workers() -> None:
    """What PHP-FPM 8.2 shows while a static pool starts, and right after a read: slots with
    state ``(null)``, and the worker that served the previous read still ``Finishing``."""
    body = (
        b'{"pool":"www","process manager":"static","start time":1,"start since":0,'
        b'"accepted conn":3,"listen queue":0,"max listen queue":0,"listen queue len":0,'
        b'"idle processes":0,"active processes":2,"total processes":2,'
        b'"max active processes":2,"max children reached":0,"slow requests":0,"processes":['
        b'{"pid":11,"state":"Finishing","request duration":90,"request uri":"\\/s?json&full"},'
        b'{"pid":0,"state":"(null)","request duration":0,"request uri":"-"},'
        b'{"pid":0,"state":"(null)","request duration":0,"request uri":"-"},'
        b'{"pid":12,"state":"Running","request duration":40,"request uri":"\\/s?json&full"}]}'
    )
    status = parse(body, "/s")
    assert (status.busy, status.idle, status.total) == (0, 1, 2)
    busy = body.replace(
        b'"Finishing","request duration":90,"request uri":"\\/s?json&full"',
        b'"Running","request duration":3000000,"request uri":"\\/slow.php"',
    )
    assert parse(busy, "/s").busy == 1
    assert parse(busy, "/s").oldest_busy == 3.0


# --- looking at the workers when the pool does not answer (fpm_stuck) ------------------------


def test_a_look_is_taken_once_while_the_answer_is_late_and_may_end_the_read(
    fake_fcgi: tuple[str, list[Callable[[socket.socket], None]]],
) -> None:
    addr, behaviours = fake_fcgi
    looks: list[float] = []

    def late(conn: socket.socket) -> None:
        time.sleep(0.3)  # the scenario: an answer that comes late
        conn.sendall(_stdout(_GOOD_JSON))

    behaviours.append(late)
    answer = fastcgi.request(
        addr,
        {"SCRIPT_NAME": "/s"},
        timeout=2.0,
        max_bytes=MAX_ANSWER,
        on_wait=(0.05, lambda: looks.append(time.monotonic())),
    )
    assert b'"pool":"www"' in answer.stdout
    assert len(looks) == 1  # late, so looked at; once

    def stopped() -> None:
        raise fastcgi.FastCGIError(Failure.STOPPED, "every worker stopped")

    behaviours.append(lambda _: time.sleep(1.0))
    with pytest.raises(fastcgi.FastCGIError) as caught:
        fastcgi.request(
            addr, {"SCRIPT_NAME": "/s"}, timeout=2.0, max_bytes=MAX_ANSWER, on_wait=(0.05, stopped)
        )
    assert caught.value.failure is Failure.STOPPED


@pytest.mark.parametrize("fpm", [{"max_children": 2}], indirect=True)
def test_a_pool_whose_workers_are_all_stopped_is_read_as_stopped(fpm: PhpFpm) -> None:
    watch = PoolWatch(fpm.master_pid)
    reader = StatusReader("fpm", _socket_source(fpm, interval=0.5, timeout=0.5), watch)
    assert reader.read().ok
    fpm.stop_workers()
    try:
        result = reader.read()
        assert result.failure is Failure.STOPPED, result.detail
        assert "every worker of pool www is stopped" in result.detail
        assert result.workers is not None and (result.workers.count, result.workers.stopped) == (
            2,
            2,
        )
    finally:
        fpm.cont_workers()
    assert reader.read().ok


@pytest.mark.parametrize("fpm", [{"max_children": 2}], indirect=True)
def test_workers_blocked_on_a_lock_make_no_progress_until_it_is_released(
    nginx_fpm: Nginx,
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    lock = nginx_fpm.docroot / LOCK
    lock.touch(mode=0o644)
    reader = StatusReader(
        "fpm", _socket_source(fpm, interval=0.2, timeout=0.2), PoolWatch(fpm.master_pid)
    )
    assert reader.read().ok
    with lock.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        blocked = _fill(nginx_fpm.url("/lock.php"), 2)
        # looks while both workers are taken (the status read finds no free worker: it times
        # out), until two in a row see their counts stand still; polled with a deadline (a
        # loaded machine takes its time to hand both requests to the workers)
        looks: list[Workers] = []
        deadline = time.monotonic() + 10
        while len(looks) < 2 or looks[-1].quiet_since != looks[-2].quiet_since:
            result = reader.read()
            taken = result.failure is Failure.TIMEOUT and result.workers is not None
            looks = [*looks, result.workers] if result.workers is not None and taken else []
            assert time.monotonic() < deadline, f"never both taken and still: {result.detail}"
        assert looks[-1].count == 2 and looks[-1].stopped == 0  # blocked, not stopped
    for t in blocked:
        t.join(timeout=10)
    assert reader.read().ok
