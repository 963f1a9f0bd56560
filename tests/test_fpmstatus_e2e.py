"""The whole daemon reading PHP-FPM's status from the pool's socket: a quiet site (no request,
no log line) whose workers are SIGSTOPped is seen hung by ``fpm_hung`` alone and healed by the
playbook's reload, verified on the pool's own status; a pool filled by slow requests is seen
saturated and the incident's readings say so."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import DaemonProcess, config, fpm_service, nginx_sources, only
from tests.stack import Nginx, PhpFpm, http_get, is_alive

pytestmark = pytest.mark.servers


def _source(fpm: PhpFpm) -> dict[str, Any]:
    return {
        "type": "fpm_status",
        "socket": str(fpm.socket),
        "path": "/fpm-status",
        "interval": "100ms",
    }


def _start(started: list[DaemonProcess], workdir: Path, cfg: dict[str, Any]) -> DaemonProcess:
    daemon = DaemonProcess(workdir, cfg)
    started.append(daemon)
    return daemon.start()


def test_stopped_workers_on_a_quiet_site_are_seen_by_the_pools_status_and_reloaded(
    nginx_fpm: Nginx, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    cfg = config(
        tmp_path / "daemon",
        sources={**nginx_sources(nginx_fpm), "pool": _source(fpm)},
        services={"fpm": fpm_service(fpm)},
        playbooks=[
            {
                "name": "pool-hung",
                "when": {"fpm_hung": {"source": "pool", "older_than": "500ms"}},
                "steps": [{"reload": "fpm", "verify": {"within": "5s", "settle": "500ms"}}],
                "limits": {"cooldown": "30s"},
            }
        ],
    )
    daemon = _start(daemons, tmp_path / "daemon", cfg)
    stopped = fpm.stop_workers()
    assert stopped
    daemon.wait_record("incident_closed", 20)
    assert daemon.events() == [
        "incident_opened", "action_intent", "action_result", "verify_passed", "incident_closed"
    ]  # fmt: skip
    opened = only(daemon.records("incident_opened"))
    [reading] = opened["evidence"]["readings"]
    assert reading["condition"] == "fpm_hung" and reading["holds"]
    assert reading["unanswered_for_s"] >= 0.5
    assert "no answer within" in reading["last"]
    passed = only(daemon.records("verify_passed"))
    assert passed["judged_on"] == "pool"
    assert only(daemon.records("incident_closed"))["outcome"] == "resolved"
    assert not any(is_alive(pid) for pid in stopped)
    assert http_get(nginx_fpm.url(), timeout=5)[0] == 200


def test_a_pool_filled_with_slow_requests_opens_an_incident_with_its_numbers(
    nginx_fpm: Nginx, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    cfg = config(
        tmp_path / "daemon",
        sources={**nginx_sources(nginx_fpm), "pool": _source(fpm)},
        services={},
        notifiers={"hook": {"url": "http://127.0.0.1:9/"}},
        playbooks=[
            {
                "name": "pool-saturated",
                "when": {"fpm_saturated": {"source": "pool", "lasting": "300ms"}},
                "steps": [{"diagnose": {"snapshot": True}}],
                "limits": {"cooldown": "30s"},
            }
        ],
    )
    daemon = _start(daemons, tmp_path / "daemon", cfg)
    hogs = [
        threading.Thread(target=_slow, args=(nginx_fpm.url("/slow.php?s=3"),), daemon=True)
        for _ in range(fpm.max_children + 1)
    ]
    for t in hogs:
        t.start()
    try:
        daemon.wait_record("incident_opened", 15)
        opened = only(daemon.records("incident_opened"))
        [reading] = opened["evidence"]["readings"]
        assert reading["condition"] == "fpm_saturated" and reading["holds"]
        assert reading["saturated_for_s"] >= 0.3
        assert reading["pool"] == "www" and reading["total"] == fpm.max_children
    finally:
        for t in hogs:
            t.join(timeout=15)


def _slow(url: str) -> None:
    try:
        http_get(url, timeout=15)
    except OSError:
        return
