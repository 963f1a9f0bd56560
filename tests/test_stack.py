"""The test bed reproduces the real failures TESTBED.md describes, with the real servers."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import pytest

from tests import stack as stack_mod
from tests.stack import (
    Apache,
    LoadGenerator,
    Nginx,
    PhpFpm,
    Stack,
    StackError,
    find_log_line,
    group_members,
    http_get,
    is_alive,
    read_text,
    wait_for,
)

pytestmark = pytest.mark.servers


def _status(url: str, timeout: float = 2.0) -> int:
    return http_get(url, timeout=timeout)[0]


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


def _busy(pool: ThreadPoolExecutor, url: str, n: int) -> list[Future[tuple[int, str]]]:
    """Start ``n`` requests that each keep a worker busy; answers are awaited at the end."""
    return [pool.submit(http_get, url, 5.0) for _ in range(n)]


def test_nginx_site_answers_200(nginx_fpm: Nginx) -> None:
    assert http_get(nginx_fpm.url()) == (200, "ok\n")
    assert "pool:                 www" in http_get(nginx_fpm.url("/fpm-status"))[1]
    line = find_log_line(nginx_fpm.access_log, r'"GET /index.php HTTP/1.1" 200 ')
    assert " rt=" in line and " us=200 urt=" in line


def test_docroot_scripts_answer_as_documented(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    assert http_get(nginx_fpm.url("/code.php?c=503")) == (503, "code 503\n")
    assert int(http_get(nginx_fpm.url("/pid.php"))[1]) in fpm.worker_pids()
    assert http_get(nginx_fpm.url("/mem.php?mb=8")) == (200, f"{8 * 1048576}\n")
    assert http_get(nginx_fpm.url("/slow.php?s=0.01")) == (200, "slept 0.01\n")
    assert http_get(nginx_fpm.url("/fpm-ping")) == (200, "pong")
    assert "Active connections" in http_get(nginx_fpm.url("/nginx-status"))[1]


def test_stack_context_cleans_up_everything() -> None:
    with Stack() as servers:
        fpm = servers.fpm()
        site = servers.nginx(fpm)
        pids = [fpm.master_pid(), *fpm.worker_pids(), site.master_pid(), *site.worker_pids()]
        assert _status(site.url()) == 200
    assert not any(is_alive(pid) for pid in pids)
    assert not fpm.dir.exists() and not site.dir.exists()


def test_apache_site_answers_200(apache_fpm: Apache) -> None:
    assert http_get(apache_fpm.url()) == (200, "ok\n")
    assert http_get(apache_fpm.url("/")) == (200, "ok\n")


def test_fpm_killed_gives_502_connection_refused(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    workers = [*fpm.worker_pids(), fpm.master_pid()]
    fpm.kill_all()
    assert not any(is_alive(pid) for pid in workers)
    assert fpm.socket.exists()  # left behind, nobody listening
    assert _status(nginx_fpm.url()) == 502
    find_log_line(
        nginx_fpm.error_log, r"\[error\].*connect\(\) to unix:.*\(111: Connection refused\)"
    )
    fpm.start()
    assert _status(nginx_fpm.url()) == 200


def test_fpm_clean_stop_gives_502_no_such_file(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    fpm.stop()
    assert not fpm.socket.exists()
    assert _status(nginx_fpm.url()) == 502
    find_log_line(
        nginx_fpm.error_log, r"\[crit\].*\(2: No such file or directory\) while connecting"
    )
    find_log_line(fpm.error_log, r"NOTICE: Terminating")


def test_only_master_killed_orphans_serve_and_start_fails(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    orphans = fpm.kill_master_only()
    assert orphans and fpm.master() is None
    assert _status(nginx_fpm.url()) == 200
    result = fpm.start(check=False)
    assert result.rc == 70
    assert "Another FPM instance seems to already listen on" in result.output + read_text(
        fpm.error_log
    )
    fpm.kill_all()  # the orphans' group is killed too
    assert not any(is_alive(pid) for pid in orphans)
    assert _status(nginx_fpm.url()) == 502


@pytest.mark.parametrize(
    "fpm", [{"listen_backlog": 1, "max_children": 1}], indirect=True, ids=["backlog1"]
)
def test_small_backlog_all_busy_gives_502_eagain(
    fpm: PhpFpm, nginx_fpm: Nginx, pool: ThreadPoolExecutor
) -> None:
    # One request takes the only worker, two fit the queue, the rest are refused at once.
    busy = _busy(pool, nginx_fpm.url("/slow.php?s=1.5"), 6)
    # the first to finish is a refusal, long before any 1.5 s request could answer 200
    done, _ = wait(busy, timeout=10, return_when=FIRST_COMPLETED)
    assert done and {f.result()[0] for f in done} == {502}
    find_log_line(nginx_fpm.error_log, r"\(11: Resource temporarily unavailable\) while connecting")
    fpm.kill_all()  # the queued slow requests end at once (502)
    assert {f.result()[0] for f in busy} <= {200, 502}


@pytest.mark.parametrize(
    "nginx_fpm", [{"fastcgi_read_timeout": 0.5}], indirect=True, ids=["read_timeout0.5"]
)
def test_hung_workers_give_504_after_read_timeout(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    stopped = fpm.stop_workers()
    assert stopped
    t0 = time.monotonic()
    assert _status(nginx_fpm.url()) == 504
    assert time.monotonic() - t0 > 0.4  # after nginx's 0.5 s read timeout, not before
    find_log_line(nginx_fpm.error_log, r"upstream timed out \(110: Connection timed out\)")
    fpm.cont_workers()
    assert _status(nginx_fpm.url()) == 200


@pytest.mark.parametrize(
    "fpm", [{"request_terminate_timeout": 1}], indirect=True, ids=["terminate1"]
)
def test_request_terminate_timeout_gives_502(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    assert _status(nginx_fpm.url("/slow.php?s=5"), timeout=4.0) == 502
    find_log_line(fpm.error_log, r"execution timed out \(\d\.\d+ sec\), terminating")
    find_log_line(nginx_fpm.error_log, r"recv\(\) failed \(104: Connection reset by peer\)")


def test_big_answers_pass_through_temp_files(nginx_fpm: Nginx, apache_fpm: Apache) -> None:
    for url in (nginx_fpm.url("/big.php?kb=4096"), apache_fpm.url("/big.php?kb=4096")):
        status, body = http_get(url, timeout=5.0)
        assert status == 200 and len(body) == 4096 * 1024


def test_worker_crash_gives_502_reset(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    assert _status(nginx_fpm.url("/crash.php")) == 502
    find_log_line(nginx_fpm.error_log, r"recv\(\) failed \(104: Connection reset by peer\)")
    find_log_line(fpm.error_log, r"WARNING: \[pool www\] child \d+ exited on signal 9 \(SIGKILL\)")
    assert _status(nginx_fpm.url()) == 200  # the master replaced the worker


def test_crash_after_flush_gives_200_with_cut_body(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", nginx_fpm.port, timeout=2.0)
    try:
        conn.request("GET", "/crash.php?flushed=1")
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()
    find_log_line(nginx_fpm.access_log, r'"GET /crash.php\?flushed=1 HTTP/1.1" 200 ')
    find_log_line(nginx_fpm.error_log, r"\(104: Connection reset by peer\) while reading upstream")


def test_apache_fpm_down_gives_503(fpm: PhpFpm, apache_fpm: Apache) -> None:
    fpm.kill_all()
    assert _status(apache_fpm.url()) == 503
    find_log_line(apache_fpm.error_log, r"AH01079: failed to make connection to backend")


def test_apache_worker_crash_gives_503(apache_fpm: Apache) -> None:
    assert _status(apache_fpm.url("/crash.php")) == 503
    find_log_line(apache_fpm.error_log, r"AH01075: Error dispatching request")


def test_broken_nginx_config_is_refused_and_site_stays_up(nginx_fpm: Nginx) -> None:
    master = nginx_fpm.master_pid()
    nginx_fpm.break_config()
    tested = nginx_fpm.test_config()
    assert tested.rc == 1
    assert 'unknown directive "remediator_bogus_directive"' in tested.output
    reloaded = nginx_fpm.reload()
    assert reloaded.rc == 1
    assert nginx_fpm.master_pid() == master
    assert _status(nginx_fpm.url()) == 200
    nginx_fpm.restore_config()
    assert nginx_fpm.test_config().ok
    assert nginx_fpm.reload().ok
    assert _status(nginx_fpm.url()) == 200


def test_fpm_reload_changes_master_and_keeps_serving(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    old = fpm.master_pid()
    assert fpm.reload()
    assert fpm.master_pid() != old
    assert _status(nginx_fpm.url()) == 200


def test_fpm_pool_edit_then_reload_changes_worker_count(fpm: PhpFpm) -> None:
    assert len(fpm.worker_pids()) == 2
    fpm.set_pool_option("pm.max_children", "4")
    assert fpm.pool_option("pm.max_children") == "4"
    assert fpm.test_config().ok
    assert fpm.reload()
    stack_mod.wait_for(lambda: len(fpm.worker_pids()) == 4, 5.0, "4 workers")


def test_fpm_bad_config_is_rc78(stack: Stack) -> None:
    fpm = stack.fpm(start=False)
    fpm.set_pool_option("pm", "bogus")
    result = fpm.test_config()
    assert result.rc == 78
    assert "unable to parse value for entry 'pm'" in result.output


def test_fpm_bad_config_on_reload_takes_the_site_down(fpm: PhpFpm) -> None:
    fpm.set_pool_option("pm", "bogus")
    assert fpm.reload() is False
    assert not fpm.ping()


def test_apache_graceful_keeps_serving(apache_fpm: Apache) -> None:
    assert apache_fpm.test_config().ok
    assert apache_fpm.graceful().ok
    assert _status(apache_fpm.url()) == 200


@pytest.mark.parametrize("make", [Stack.nginx, Stack.apache], ids=["nginx", "apache"])
def test_port_conflict_is_retried_on_another_port(
    stack: Stack,
    fpm: PhpFpm,
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[..., Nginx | Apache],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy])
        real = stack_mod.free_port
        monkeypatch.setattr(stack_mod, "free_port", lambda: next(ports, None) or real())
        server = make(stack, fpm)
        assert server.port != busy
        assert _status(server.url()) == 200


def test_fixed_port_conflict_is_an_error(stack: Stack, fpm: PhpFpm) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(StackError, match="Address already in use"):
            stack.nginx(fpm, port=taken.getsockname()[1])


def test_cleanup_kills_every_process_group(stack: Stack) -> None:
    fpm = stack.fpm()
    first = fpm.master_pid()
    assert first is not None
    fpm.reload()
    second = fpm.master_pid()
    assert second is not None and second != first
    orphans = fpm.kill_master_only()
    fpm.stop_workers()  # stopped processes must die too
    fpm.cleanup()
    assert not any(is_alive(pid) for pid in orphans)
    assert not group_members(first) and not group_members(second)
    assert not fpm.dir.exists()


def test_load_generator_paces_and_records_failures(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    load = LoadGenerator(nginx_fpm.url(), rate=200, threads=4).start()
    load.wait_ok(60)
    t_fault = time.monotonic()
    fpm.kill_all()
    wait_for(lambda: load.statuses(since=t_fault)[502] > 10, 5, "502s", interval=0.01)
    fpm.start()
    t_back = time.monotonic()
    load.wait_ok(40, since=t_back)
    samples = load.stop()
    duration = samples[-1].t - samples[0].t
    # paced: never faster than the rate (no bursts); how close to it a loaded machine keeps is
    # a timing, not asserted here
    assert len(samples) / duration / 200 < 1.15
    recovered = load.first_ok_after(t_fault)
    first_ok_after_start = min(x.t for x in samples if x.t >= t_back and x.status == 200)
    assert recovered is not None and t_fault < recovered <= first_ok_after_start


def test_load_generator_records_connection_errors_as_zero() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with LoadGenerator(f"http://127.0.0.1:{port}/", rate=100, threads=2) as load:
            wait_for(lambda: len(load.samples) >= 3, 5, "refused requests", interval=0.01)
    assert load.samples and all(x.status == 0 for x in load.samples)
    assert "ECONNREFUSED" in load.samples[0].error


def test_http_get_connection_refused_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(ConnectionRefusedError):
            http_get(f"http://127.0.0.1:{s.getsockname()[1]}/")


def test_stopped_workers_accept_but_never_answer(fpm: PhpFpm) -> None:
    stopped = fpm.stop_workers()
    assert stopped and stopped == fpm.worker_pids()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.3)
        s.connect(str(fpm.socket))  # the kernel queues the connection
        s.sendall(_FCGI_BEGIN_REQUEST)
        with pytest.raises(TimeoutError):
            s.recv(1)
    assert fpm.cont_workers() == stopped


# FastCGI record header (version 1, BEGIN_REQUEST, id 1, 8 bytes) and body (role RESPONDER)
_FCGI_BEGIN_REQUEST = bytes([1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
