"""The shipped playbooks that read the pool's own status (source fpm_pool), together, on a real
nginx and PHP-FPM saturated by slow requests that keep finishing. A stuck pool and a saturated
one both leave the status unanswered, so a playbook on ``fpm_hung`` (with a lower priority
number than php-fpm-saturated's 20, as the cookbook says) could take a merely busy pool for a
hung one and restart it, cutting off every request in flight, instead of adding workers. This
guards the shipped set against that: whatever fpm_pool playbooks config/playbooks.d holds, a
busy pool is scaled and never restarted."""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.e2e import DaemonProcess
from tests.saturation import PLAYBOOK, RAMP, run_ramp, shipped_config, shipped_playbook
from tests.stack import LOCK, LoadGenerator, Nginx, PhpFpm, http_get, wait_for

pytestmark = pytest.mark.servers


def _pool_playbooks() -> list[dict[str, Any]]:
    """Every shipped playbook on fpm_pool; the saturated one with this host's cap on workers."""
    out = [shipped_playbook(max_children=12, min_children=2)]
    for path in sorted(PLAYBOOK.parent.glob("*.yaml")):
        if path != PLAYBOOK and "fpm_pool" in path.read_text():
            out.append(dict(yaml.safe_load(path.read_text())))
    return out


@pytest.mark.parametrize(
    "fpm",
    [{"max_children": 2, "listen_backlog": 16, "process_control_timeout": 10}],
    indirect=True,
)
def test_a_pool_only_busy_with_slow_requests_is_scaled_never_restarted(
    nginx_fpm: Nginx, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    workdir = tmp_path / "daemon"
    cfg = shipped_config(workdir, nginx_fpm, playbooks=_pool_playbooks())
    daemon = DaemonProcess(workdir, cfg)
    daemons.append(daemon)
    daemon.start()
    run_ramp(nginx_fpm.url("/slow.php?s=1"), RAMP)  # 1 s requests: they keep finishing
    daemon.wait_record("incident_closed", 30)
    assert {r["playbook"] for r in daemon.records("incident_opened")} == {"php-fpm-saturated"}
    assert [r["action"] for r in daemon.records("action_result")] == ["scale_workers"]


def _start(
    nginx: Nginx, tmp_path: Path, daemons: list[DaemonProcess], *, usual: bool = False
) -> DaemonProcess:
    """The daemon on the shipped fpm_pool playbooks, once it has read the pool answering
    (``usual``: and knows how long its requests usually take, from a light load)."""
    daemon = DaemonProcess(
        tmp_path / "daemon", shipped_config(tmp_path / "daemon", nginx, playbooks=_pool_playbooks())
    )
    daemons.append(daemon)
    daemon.start()
    wait_for(lambda: _pool(daemon).get("state") == "ok", 20, "the daemon's first read of the pool")
    if usual:
        with LoadGenerator(nginx.url(), rate=50, threads=2, timeout=2):
            wait_for(
                lambda: _pool(daemon).get("usual_request_s") is not None,
                30,
                "the pool's usual request duration known to the daemon",
            )
    return daemon


def _pool(daemon: DaemonProcess) -> dict[str, Any]:
    """What ``status.json`` says of the source fpm_pool (rewritten every 2 s)."""
    try:
        status = json.loads((daemon.state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return dict(status.get("sources", {}).get("fpm_pool", {}))


def _healed(daemon: DaemonProcess, nginx: Nginx) -> dict[str, Any]:
    """The one incident, php-fpm-stuck, closed after a successful restart; the site answers."""
    [closed] = daemon.wait_record("incident_closed", 30)
    assert closed["outcome"] == "resolved", daemon.report()
    [opened] = daemon.records("incident_opened")
    assert opened["playbook"] == "php-fpm-stuck", daemon.report()
    assert [(r["action"], r["outcome"]) for r in daemon.records("action_result")] == [
        ("restart", "ok")
    ], daemon.report()
    assert http_get(nginx.url(), timeout=5) == (200, "ok\n")
    return opened


@pytest.mark.parametrize("fpm", [{"max_children": 2}], indirect=True)
def test_a_pool_whose_workers_are_all_stopped_is_restarted_and_the_record_says_so(
    nginx_fpm: Nginx, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    daemon = _start(nginx_fpm, tmp_path, daemons)
    stopped = fpm.stop_workers()
    assert len(stopped) == 2
    opened = _healed(daemon, nginx_fpm)
    assert "every worker of pool www is stopped" in opened["reason"], opened["reason"]
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in stopped)


@pytest.mark.parametrize("fpm", [{"max_children": 2}], indirect=True)
def test_a_pool_whose_workers_all_wait_on_a_lock_in_php_is_restarted(
    nginx_fpm: Nginx, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    lock = nginx_fpm.docroot / LOCK
    lock.touch(mode=0o644)
    daemon = _start(nginx_fpm, tmp_path, daemons, usual=True)
    with lock.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        blocked = [
            threading.Thread(target=_get, args=(nginx_fpm.url("/lock.php"),), daemon=True)
            for _ in range(2)
        ]
        for t in blocked:
            t.start()
        opened = _healed(daemon, nginx_fpm)
    for t in blocked:
        t.join(timeout=10)
    assert "no request finished for" in opened["reason"], opened["reason"]


@pytest.mark.parametrize("fpm", [{"max_children": 2}], indirect=True)
def test_a_full_pool_that_keeps_finishing_slow_requests_is_not_stuck(
    nginx_fpm: Nginx, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """Twice as many 0.3 s requests as the pool serves, for 3 s: its status goes unanswered
    (a read waits behind the queue), but its workers finish a request every 0.15 s or so:
    busy, not stuck. The stuck playbook alone is loaded, and never runs."""
    stuck = yaml.safe_load((PLAYBOOK.parent / "18-php-fpm-stuck.yaml").read_text())
    workdir = tmp_path / "daemon"
    daemon = DaemonProcess(workdir, shipped_config(workdir, nginx_fpm, playbooks=[stuck]))
    daemons.append(daemon)
    daemon.start()
    run_ramp(nginx_fpm.url("/slow.php?s=0.3"), (13.0, 13.0, 3.0))
    failing = [e for e in daemon.log_events() if e.get("event") == "fpm_status_failing"]
    assert failing, "the pool's status was always answered: the pool was never full"
    assert daemon.records("incident_opened") == [], daemon.report()


def _get(url: str) -> None:
    with contextlib.suppress(OSError):
        http_get(url, timeout=30)
