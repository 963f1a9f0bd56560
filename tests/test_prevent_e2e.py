"""Prevention, end to end: slow requests rising past a static pool's capacity behind a real
nginx and PHP-FPM. Without remediator the listen backlog overflows and users get 502s; with the
shipped saturation playbook (config/playbooks.d/20-php-fpm-saturated.yaml, read from the file)
the daemon sees the pool's own status saturated, raises ``pm.max_children`` within the memory
the host has, and the backlog never overflows."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.e2e import DaemonProcess, only
from tests.saturation import RAMP, run_ramp, shipped_config
from tests.stack import Nginx, PhpFpm, http_get, wait_for
from tests.webhook import receiving

pytestmark = pytest.mark.servers

WORKERS = 2  # a static pool: capacity WORKERS requests a second of SLOW seconds each
BACKLOG = 16
SLOW = 1.0
CAP = 12  # the test's max_children (the shipped 80 would start 80 workers here)


@pytest.mark.parametrize(
    "fpm",
    [
        {
            "pm": pm,
            "max_children": WORKERS,
            "listen_backlog": BACKLOG,
            "process_control_timeout": 10,
        }
        for pm in ("static", "dynamic")
    ],
    indirect=True,
    ids=["static", "dynamic"],
)
def test_rising_slow_load_is_met_by_more_workers_before_the_backlog_overflows(
    nginx_fpm: Nginx, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    url = nginx_fpm.url(f"/slow.php?s={SLOW:g}")

    # Doing nothing: the same ramp overflows the backlog of the pool as it is.
    alone = run_ramp(url, RAMP)
    assert alone[502] > 0, f"the ramp must overflow the pool without remediator: {alone}"
    wait_for(lambda: http_get(nginx_fpm.url(), timeout=5)[0] == 200, 20, "the pool to drain")

    daemon = DaemonProcess(
        tmp_path / "daemon",
        shipped_config(tmp_path / "daemon", nginx_fpm, max_children=CAP, min_children=WORKERS),
    )
    daemons.append(daemon)
    daemon.start()
    guarded = run_ramp(url, RAMP)
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
    held = {r["condition"] for r in opened["evidence"]["readings"] if r["holds"]}
    assert "fpm_saturated" in held and "status_rate" not in held  # the pool's status, no 502s
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
    if fpm.pm == "static":
        assert len(fpm.worker_pids()) == details["after"]  # the reloaded master runs them all
    else:  # the spares scaled with it: the reloaded pool starts as big, relative to its max
        start = int(fpm.pool_option("pm.start_servers") or 0)
        assert fpm.start_servers in (None, 1) and 1 < start <= details["after"]
    assert only(daemon.records("incident_closed"))["outcome"] == "resolved"


@pytest.mark.parametrize("fpm", [{"max_children": WORKERS}], indirect=True)
def test_a_saturated_pool_with_no_memory_to_scale_into_is_left_alone_and_oncall_told(
    nginx_fpm: Nginx, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    before = fpm.pool_file.read_bytes()
    with receiving() as hook:
        cfg = shipped_config(
            tmp_path / "daemon",
            nginx_fpm,
            hook=hook.url(),
            max_children=CAP,
            min_children=WORKERS,
            memory_reserve="1024TiB",
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
