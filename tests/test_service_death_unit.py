"""Service death as an event under a real systemd: the shipped unit watching Debian's php8.2-fpm.

The daemon runs as ``systemd/remediator.service`` (the drop-in of tests/test_service_unit.py:
only what must differ here), so ``ProtectControlGroups=yes`` and the rest of the sandbox are in
force: it holds a pidfd of the unit's main process and watches the unit's ``cgroup.events``
read-only. The playbook waits ``lasting: 30s``, beyond every deadline here, so an incident can
only come from a death seen as a crash; no load runs, so no log line tells either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack import wait_for
from tests.sysd import BootedSystemd
from tests.test_service_unit import (
    FPM,
    PLAYBOOKS,
    SITE,
    UNIT,
    Service,
    _write_config,
    installed,
)

pytestmark = pytest.mark.systemd

__all__ = ["installed"]  # the module's fixture, shared

GUARDS = "/var/lib/remediator/guards.json"
_FIELD = re.compile(r"\b(down|seen_by|pidfd_for)=(\S+)")
PLAYBOOK = {
    "name": "php-fpm-crashed",
    "when": {"service_down": {"service": "php-fpm", "lasting": "30s"}},
    "steps": [{"restart": "php-fpm", "verify": {"probe": "site", "within": "10s"}}],
    "limits": {"cooldown": "1s", "max_runs": 5, "per": "1m", "backoff": False},
}


@pytest.fixture
def service(installed: BootedSystemd) -> Iterator[Service]:
    """The daemon (shipped unit) watching php8.2-fpm with :data:`PLAYBOOK` alone."""
    host = installed
    host.systemctl("stop", UNIT, check=True)
    (host.root / GUARDS[1:]).unlink(missing_ok=True)
    _write_config(host, playbooks=())
    host.write(f"{PLAYBOOKS}/15-crashed.yaml", json.dumps(PLAYBOOK))
    host.systemctl("reset-failed", UNIT, FPM)
    host.systemctl("start", FPM, "nginx.service", check=True)
    host.systemctl("start", UNIT, check=True)
    svc = Service(host)
    svc.wait_serving()
    yield svc
    host.systemctl("start", FPM)


def _seen(service: Service) -> list[dict[str, Any]]:
    """The daemon's ``service_seen`` log events, from its journal (``key=value`` lines)."""
    res = service.host.run(["journalctl", "-u", UNIT, "-b", "-o", "cat", "--no-pager"])
    out = []
    for line in res.stdout.splitlines():
        if not line.startswith("service_seen "):
            continue
        fields = dict(_FIELD.findall(line))
        out.append(
            {
                "down": fields.get("down") == "True",
                "seen_by": fields.get("seen_by"),
                "pidfd_for": int(fields["pidfd_for"])
                if fields.get("pidfd_for", "").isdigit()
                else None,
            }
        )
    return out


def _armed(service: Service, pid: int) -> bool:
    return any(r.get("pidfd_for") == pid for r in _seen(service))


def _main_armed(service: Service) -> int:
    pid = service.host.main_pid(FPM)
    assert pid
    wait_for(lambda: _armed(service, pid), 15, f"a pidfd for php8.2-fpm's main {pid}")
    return pid


def test_a_unit_killed_with_no_log_evidence_is_a_crash_and_restarted(service: Service) -> None:
    host = service.host
    old = _main_armed(service)
    before = len(service.actions())
    host.run(["kill", "-9", str(old)], check=True)
    wait_for(
        lambda: any(r["event"] == "incident_closed" for r in service.actions()[before:]),
        20,
        "the incident to close",
    )
    recs = service.actions()[before:]
    opened = next(r for r in recs if r["event"] == "incident_opened")
    reading = opened["evidence"]["readings"][0]
    assert reading["condition"] == "service_down" and reading["definitive"] is True
    assert reading["seen_by"] in ("pidfd", "cgroup.events")
    assert "result=signal" in reading["detail"]
    result = next(r for r in recs if r["event"] == "action_result")
    assert result["outcome"] == "ok", result["reason"]
    assert result["details"]["state_before"]["properties"]["Result"] == "signal"
    assert next(r for r in recs if r["event"] == "incident_closed")["outcome"] == "resolved"
    assert host.main_pid(FPM) not in (0, old)
    assert host.http_get(SITE) == (200, "ok\n")
    _main_armed(service)  # and the new main process is watched in turn


def test_an_operators_systemctl_stop_is_not_an_outage(service: Service) -> None:
    host = service.host
    old = _main_armed(service)
    looked, before = len(_seen(service)), len(service.actions())
    host.systemctl("stop", FPM, check=True)
    wait_for(
        lambda: any(
            r.get("seen_by") in ("pidfd", "cgroup.events") and not r["down"]
            for r in _seen(service)[looked:]
        ),
        15,
        "the stop to be looked at",
    )
    assert host.show(FPM, "ActiveState")["ActiveState"] == "inactive"  # left stopped
    assert not any(r["down"] for r in _seen(service)[looked:])
    assert not any(r["event"] == "incident_opened" for r in service.actions()[before:])
    assert host.main_pid(FPM) == 0 != old


def test_an_operators_systemctl_restart_is_not_an_outage(service: Service) -> None:
    host = service.host
    old = _main_armed(service)
    looked, before = len(_seen(service)), len(service.actions())
    host.systemctl("restart", FPM, check=True)
    new = host.main_pid(FPM)
    assert new not in (0, old)
    wait_for(lambda: _armed(service, new), 15, "a pidfd for the restarted main process")
    seen = _seen(service)[looked:]
    assert any(r.get("seen_by") in ("pidfd", "cgroup.events") for r in seen)
    assert not any(r["down"] for r in seen)
    assert not any(r["event"] == "incident_opened" for r in service.actions()[before:])
