"""The whole daemon (``remediator run`` as a process) against real nginx + PHP-FPM under load.

The operators' faults, one test each, are in ``test_e2e_faults.py``; the helpers in ``e2e.py``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import (
    DaemonProcess,
    config,
    failed,
    fpm_down_when,
    fpm_service,
    nginx_sources,
    probe,
    recovered_after,
)
from tests.stack import LoadGenerator, Nginx, PhpFpm

pytestmark = pytest.mark.servers

PLAYBOOK = {
    "name": "fpm-down",
    "when": fpm_down_when(),
    "steps": [{"restart": "fpm", "verify": {"probe": "site", "within": "5s"}}],
    "limits": {"cooldown": "30s", "max_runs": 3, "per": "1h"},
}  # fmt: skip


def _config(workdir: Path, nginx: Nginx, probe_path: str = "/index.php") -> dict[str, Any]:
    fpm = nginx.fpm
    assert isinstance(fpm, PhpFpm)
    site = probe(nginx.url(probe_path), interval="1s", timeout="500ms")
    return config(
        workdir,
        sources={**nginx_sources(nginx), "site": site},
        services={"fpm": fpm_service(fpm, startup_grace="1s")},
        playbooks=[PLAYBOOK],
    )


@pytest.fixture
def daemon(nginx_fpm: Nginx, tmp_path: Path) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path, _config(tmp_path, nginx_fpm)) as running:
        yield running


def test_php_fpm_killed_under_load_is_restarted_verified_and_logged(
    nginx_fpm: Nginx, daemon: DaemonProcess
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    with LoadGenerator(nginx_fpm.url(), rate=100) as load:
        load.wait_ok()
        killed_at = time.monotonic()
        fpm.kill_all()
        recovered = recovered_after(load, killed_at, settle=1.5, timeout=10)
        daemon.wait_record("incident_closed", 15)  # verified, then settled
    print(f"kill -> 200 again: {recovered - killed_at:.3f}s, failed: {failed(load, killed_at)}")
    recs = daemon.records()
    events = [r["event"] for r in recs]
    assert events[:3] == ["incident_opened", "action_intent", "action_result"]
    assert recs[2]["outcome"] == "ok" and recs[2]["target"] == "fpm"
    closed = daemon.records("incident_closed")
    assert [r["outcome"] for r in closed] == ["resolved"]
    assert events.index("verify_passed") < events.index("incident_closed")
    # the outage's 502s are still in the trigger's window: the cooldown holds, nothing repeats
    assert events.count("action_intent") == 1
    assert recs[0]["evidence"]["lines"]["access"]  # the 502 lines that tripped it
    # SIGTERM: a clean stop, offsets and state saved
    assert daemon.stop() == 0
    status = json.loads((daemon.state_dir / "status.json").read_text())
    assert status["sources"]["access"]["state"] == "ok"


def test_an_old_outage_in_the_log_before_start_triggers_nothing(
    nginx_fpm: Nginx, tmp_path: Path
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    fpm.kill_all()
    for _ in range(20):  # 502s written before the daemon starts: history, not evidence
        subprocess.run(["curl", "-s", "-o", "/dev/null", nginx_fpm.url()], check=False)
    # The probe asks nginx's stub_status (not logged): only the history is in the logs.
    cfg = _config(tmp_path, nginx_fpm, probe_path="/nginx-status")
    with DaemonProcess(tmp_path, cfg, dry_run=True) as daemon:
        time.sleep(2.0)  # the scenario: two probes' worth of running, and nothing may open
        daemon.stop()
    assert not daemon.records("incident_opened")
