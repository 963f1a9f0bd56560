"""The shipped playbooks that read the pool's own status (source fpm_pool), together, on a real
nginx and PHP-FPM saturated by slow requests that keep finishing. A stuck pool and a saturated
one both leave the status unanswered, so a playbook on ``fpm_hung`` (with a lower priority
number than php-fpm-saturated's 20, as the cookbook says) could take a merely busy pool for a
hung one and restart it, cutting off every request in flight, instead of adding workers. This
guards the shipped set against that: whatever fpm_pool playbooks config/playbooks.d holds, a
busy pool is scaled and never restarted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import DaemonProcess
from tests.saturation import PLAYBOOK, RAMP, run_ramp, shipped_config, shipped_playbook
from tests.stack import Nginx, PhpFpm

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
