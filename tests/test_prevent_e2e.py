"""Prevention, end to end: slow requests rising past a static pool's capacity behind a real
nginx and PHP-FPM. Without remediator the listen backlog overflows and users get 502s; with the
shipped saturation playbook (config/playbooks.d/20-php-fpm-saturated.yaml, read from the file)
the daemon sees the pool's own status saturated, raises ``pm.max_children`` within the memory
the host has, and the backlog never overflows."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import DaemonProcess, config, fpm_service, nginx_sources, only, probe
from tests.stack import Nginx, PhpFpm, Stack, http_get, wait_for
from tests.webhook import receiving

pytestmark = pytest.mark.servers

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "playbooks.d"
PLAYBOOK = SHIPPED / "20-php-fpm-saturated.yaml"

WORKERS = 2  # a static pool: capacity WORKERS requests a second of SLOW seconds each
BACKLOG = 16
SLOW = 1.0
RAMP = (1.0, 10.0, 8.0)  # requests a second, from, to, over seconds: past 2/s after ~1 s
CAP = 12  # the test's max_children (the shipped 80 would start 80 workers here)


def ramp_times(start: float, end: float, over: float) -> list[float]:
    """Send offsets for a request rate rising linearly from ``start`` to ``end`` a second."""
    times: list[float] = []
    t, step = 0.0, 0.001
    due = 0.0
    while t < over:
        due += (start + (end - start) * t / over) * step
        if due >= 1.0:
            times.append(t)
            due -= 1.0
        t += step
    return times


def run_ramp(url: str) -> Counter[int]:
    """Send the ramp of slow requests, each on its own thread; their statuses (0: no answer)."""
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            status, _ = http_get(url, timeout=60)
        except OSError:
            status = 0
        with lock:
            statuses.append(status)

    threads = []
    t0 = time.monotonic()
    for offset in ramp_times(*RAMP):
        delay = t0 + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not synchronising on the system under test
        th = threading.Thread(target=one, daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join(timeout=90)
    assert len(statuses) == len(threads), "a request of the ramp never returned"
    return Counter(statuses)


def shipped_playbook(**scale: Any) -> dict[str, Any]:
    """The shipped playbook as it is, but for the cap on workers (a test host's resources)."""
    pb = yaml.safe_load(PLAYBOOK.read_text())
    [step] = pb["steps"]
    step["scale_workers"] |= {"max_children": CAP, "min_children": WORKERS, **scale}
    return dict(pb)


@pytest.fixture
def daemons(stack: Stack) -> Iterator[list[DaemonProcess]]:
    """Daemons the test started, SIGKILLed before the servers are cleaned up."""
    started: list[DaemonProcess] = []
    try:
        yield started
    finally:
        for d in started:
            d.kill()


def _config(
    workdir: Path, nginx: Nginx, fpm: PhpFpm, *, hook: str = "http://127.0.0.1:9/", **scale: Any
) -> dict[str, Any]:
    """The shipped names (nginx_access, fpm_pool, php-fpm, site, oncall) on the bed's servers."""
    logs = nginx_sources(nginx)
    return config(
        workdir,
        sources={
            "nginx_access": logs["access"],
            "nginx_error": logs["errors"],
            "fpm_log": {"type": "error_log", "path": str(fpm.error_log), "format": "php-fpm"},
            "site": probe(nginx.url(), interval="2s", timeout="1s"),
            "fpm_pool": {
                "type": "fpm_status",
                "socket": str(fpm.socket),
                "path": "/fpm-status",
                "interval": "200ms",
            },
        },
        services={"php-fpm": fpm_service(fpm)},
        notifiers={"oncall": {"url": hook}},
        playbooks=[shipped_playbook(**scale)],
    )


@pytest.mark.parametrize(
    "fpm",
    [{"max_children": WORKERS, "listen_backlog": BACKLOG, "process_control_timeout": 10}],
    indirect=True,
)
def test_rising_slow_load_is_met_by_more_workers_before_the_backlog_overflows(
    nginx_fpm: Nginx, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    url = nginx_fpm.url(f"/slow.php?s={SLOW:g}")

    # Doing nothing: the same ramp overflows the backlog of the pool as it is.
    alone = run_ramp(url)
    assert alone[502] > 0, f"the ramp must overflow the pool without remediator: {alone}"
    wait_for(lambda: http_get(nginx_fpm.url(), timeout=5)[0] == 200, 20, "the pool to drain")

    daemon = DaemonProcess(tmp_path / "daemon", _config(tmp_path / "daemon", nginx_fpm, fpm))
    daemons.append(daemon)
    daemon.start()
    guarded = run_ramp(url)
    daemon.wait_record("incident_closed", 30)
    result = only(daemon.records("action_result"))
    print(
        f"\nramp {RAMP}: doing nothing {dict(alone)}; with the playbook {dict(guarded)}; "
        f"{result['reason']}"
    )

    assert guarded[502] <= alone[502] // 2  # far fewer (none in practice: docs/benchmarks.md)
    assert guarded[200] > alone[200]
    opened = only(daemon.records("incident_opened"))
    assert opened["playbook"] == "php-fpm-saturated"
    held = [r for r in opened["evidence"]["readings"] if r["holds"]]
    assert [r["condition"] for r in held] == ["fpm_saturated"]  # the pool's status, no 502 yet
    assert (result["action"], result["target"], result["outcome"]) == (
        "scale_workers",
        "php-fpm",
        "ok",
    )
    details = result["details"]
    budget = details["budget"]
    assert details["before"] == WORKERS
    assert WORKERS < details["after"] <= min(CAP, budget["fits"])  # within memory and the cap
    assert budget["workers"] == WORKERS
    assert fpm.pool_option("pm.max_children") == str(details["after"])  # the real pool file
    assert len(fpm.worker_pids()) == details["after"]  # pm static: the reloaded master runs all
    assert only(daemon.records("incident_closed"))["outcome"] == "resolved"


@pytest.mark.parametrize("fpm", [{"max_children": WORKERS}], indirect=True)
def test_a_saturated_pool_with_no_memory_to_scale_into_is_left_alone_and_oncall_told(
    nginx_fpm: Nginx, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    before = fpm.pool_file.read_bytes()
    with receiving() as hook:
        cfg = _config(
            tmp_path / "daemon", nginx_fpm, fpm, hook=hook.url(), memory_reserve="1024TiB"
        )
        daemon = DaemonProcess(tmp_path / "daemon", cfg)
        daemons.append(daemon)
        daemon.start()
        hogs = [
            threading.Thread(target=_get, args=(nginx_fpm.url("/slow.php?s=4"),), daemon=True)
            for _ in range(WORKERS + 1)
        ]
        for t in hogs:
            t.start()
        daemon.wait_record("incident_closed", 30)
        wait_for(lambda: bool(hook.received), 10, "oncall to be told")
        for t in hogs:
            t.join(timeout=30)
    result = only(daemon.records("action_result"))
    assert (result["action"], result["outcome"]) == ("scale_workers", "refused")
    assert "below the reserve" in result["reason"]
    assert result["details"]["budget"]["headroom"] < 0
    assert fpm.pool_file.read_bytes() == before  # nothing edited, nothing reloaded
    assert only(daemon.records("incident_closed"))["outcome"] == "exhausted"
    [(_, _, alert)] = hook.received
    assert "php-fpm-saturated" in str(alert)


def _get(url: str) -> None:
    try:
        http_get(url, timeout=30)
    except OSError:
        return
