"""reload / restart under a real systemd (booted in private namespaces, tests/sysd.py).

The actions run *inside* the namespace, as the daemon would on the host: a small runner calls
``CONTROL_ACTIONS[...]`` with plain ``systemctl``, ``php-fpm8.2 -t`` and ``/sys/fs/cgroup`` of
that systemd, and prints the result as JSON. Debian's own php8.2-fpm and nginx units serve a PHP
site on 127.0.0.1:8080 inside.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack import wait_for, write_docroot
from tests.sysd import BootedSystemd

pytestmark = pytest.mark.systemd

FPM = "php8.2-fpm.service"
URL = "http://127.0.0.1:8080/index.php"
POOL = "/etc/php/8.2/fpm/pool.d/www.conf"
KILLMODE_DROPIN = f"/run/systemd/system/{FPM}.d/killmode.conf"
FLAKY = "rem-flaky.service"

_SITE = """\
server {{
    listen 127.0.0.1:8080;
    root {docroot};
    location ~ \\.php$ {{
        include snippets/fastcgi-php.conf;
        fastcgi_pass unix:/run/php/php8.2-fpm.sock;
    }}
}}
"""

# Runs one action inside the namespace; with "url", also times the first 200 after it.
_RUNNER = """
import json, sys, time, urllib.request
from remediator.actions.base import ActionContext
from remediator.actions.control import CONTROL_ACTIONS
from remediator.actions.declare import ServiceArgs
from remediator.config import Service
from remediator.system import DryRunSystem, System

req = json.loads(sys.argv[1])
ctx = ActionContext(
    system=DryRunSystem() if req["dry_run"] else System(),
    services={"svc": Service(**req["service"])},
    notifiers={}, playbook="test", incident="test",
)
start = time.monotonic()
res = CONTROL_ACTIONS[req["action"]](ServiceArgs(service="svc"), ctx, **req["kwargs"])
to_200 = None
if req["url"]:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(req["url"], timeout=1) as r:
                if r.status == 200:
                    to_200 = (time.monotonic() - start) * 1000
                    break
        except OSError:
            pass
        time.sleep(0.002)
out = {"outcome": str(res.outcome), "reason": res.reason, "restarted": res.restarted,
       "details": res.details, "to_200_ms": to_200}
print(json.dumps(out, default=str))
"""


def _act(
    host: BootedSystemd,
    action: str,
    *,
    unit: str = FPM,
    kind: str = "php-fpm",
    config_test: list[str] | None = None,
    reload: list[str] | None = None,
    dry_run: bool = False,
    url: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    service: dict[str, Any] = {"kind": kind, "unit": unit}
    if config_test is not None:
        service["config_test"] = config_test
    if reload is not None:
        service["reload"] = reload
    req = {
        "action": action,
        "service": service,
        "dry_run": dry_run,
        "url": url,
        "kwargs": kwargs,
    }
    res = host.run([sys.executable, "-c", _RUNNER, json.dumps(req)], timeout=120)
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def _changes(out: dict[str, Any]) -> list[list[str]]:
    return [s["argv"] for s in out["details"]["steps"] if s["kind"] == "change"]


def _cgroup_pids(host: BootedSystemd, unit: str) -> list[int]:
    group = host.show(unit, "ControlGroup")["ControlGroup"]
    if not group:
        return []
    res = host.run(["cat", f"/sys/fs/cgroup{group}/cgroup.procs"])
    return sorted(int(x) for x in res.stdout.split())


def _reloads_logged(host: BootedSystemd, unit: str) -> int:
    """How many times systemd has logged reloading ``unit`` (``systemctl reload``) this boot."""
    return host.journal(unit).count("Reloading ")


def _exists(host: BootedSystemd, pid: int) -> bool:
    """Whether ``pid`` (inside) is a live, non-zombie process."""
    res = host.run(["ps", "-o", "stat=", "-p", str(pid)])
    return res.returncode == 0 and not res.stdout.strip().startswith("Z")


@pytest.fixture
def web(systemd_host: BootedSystemd) -> Iterator[BootedSystemd]:
    """php8.2-fpm and nginx started inside; everything a test changed is put back after."""
    host = systemd_host
    docroot = write_docroot(host.workdir / "www")
    host.write("/etc/nginx/conf.d/remediator-test.conf", _SITE.format(docroot=docroot))
    pool = Path(POOL).read_text()  # the namespace's /etc starts as the host's
    try:
        host.systemctl("start", FPM, "nginx", check=True)
        yield host
    finally:
        host.write(POOL, pool)
        (host.root / KILLMODE_DROPIN.lstrip("/")).unlink(missing_ok=True)
        (host.root / f"run/systemd/system/{FLAKY}").unlink(missing_ok=True)
        host.systemctl("daemon-reload")
        host.systemctl("kill", "--kill-who=all", "--signal=SIGKILL", FPM)  # orphans, if any
        host.systemctl("stop", "nginx", FPM, FLAKY)
        host.systemctl("reset-failed")  # also resets the units' start-rate counters


def _kill_main(host: BootedSystemd) -> int:
    main = host.main_pid(FPM)
    host.run(["kill", "-9", str(main)], check=True)
    host.wait_for(FPM, "ActiveState", ["failed"])
    return main


# --- restart ----------------------------------------------------------------------------------


def test_restart_brings_back_php_fpm_after_its_main_pid_was_killed(web: BootedSystemd) -> None:
    old = _kill_main(web)
    assert web.show(FPM, "Result")["Result"] == "signal"
    assert web.http_get(URL)[0] == 502
    out = _act(web, "restart", url=URL)
    assert out["outcome"] == "ok", out["reason"]
    assert out["restarted"]
    print(
        f"\nsystemd: restart action {out['details']['duration_ms']} ms, "
        f"action start -> first 200 {out['to_200_ms']:.1f} ms"
    )
    assert _changes(out) == [["systemctl", "restart", FPM]]
    assert out["details"]["state_before"]["properties"]["Result"] == "signal"
    assert web.show(FPM, "ActiveState")["ActiveState"] == "active"
    assert out["details"]["pid_after"] == web.main_pid(FPM) != old
    assert web.http_get(URL) == (200, "ok\n")


def test_systemd_kills_php_fpm_workers_when_the_master_dies(web: BootedSystemd) -> None:
    workers = [p for p in _cgroup_pids(web, FPM) if p != web.main_pid(FPM)]
    assert workers
    _kill_main(web)  # Debian's unit: KillMode=control-group
    assert _cgroup_pids(web, FPM) == []
    assert not any(_exists(web, pid) for pid in workers)


def test_restart_clears_workers_left_behind_with_killmode_process(web: BootedSystemd) -> None:
    web.install_unit(f"{FPM}.d/killmode.conf", "[Service]\nKillMode=process\n")
    web.systemctl("restart", FPM, check=True)
    _kill_main(web)
    orphans = _cgroup_pids(web, FPM)
    assert orphans  # they hold the socket: a plain restart would fail (rc 78, "Another FPM")
    out = _act(web, "restart", url=URL)
    assert out["outcome"] == "ok", out["reason"]
    assert out["details"]["leftovers"] == orphans
    assert _changes(out)[0] == ["systemctl", "kill", "--kill-who=all", "--signal=SIGTERM", FPM]
    assert _changes(out)[-1] == ["systemctl", "restart", FPM]
    assert not any(_exists(web, pid) for pid in orphans)
    assert out["to_200_ms"] is not None


def test_restart_refuses_a_unit_the_operator_stopped(web: BootedSystemd) -> None:
    web.systemctl("stop", FPM, check=True)
    out = _act(web, "restart")
    assert out["outcome"] == "refused"
    assert "stopped on purpose" in out["reason"]
    assert _changes(out) == []
    assert web.show(FPM, "ActiveState", "SubState") == {
        "ActiveState": "inactive",
        "SubState": "dead",
    }


def test_reload_refuses_a_unit_the_operator_stopped(web: BootedSystemd) -> None:
    web.systemctl("stop", FPM, check=True)
    out = _act(web, "reload")
    assert out["outcome"] == "refused"
    assert out["details"]["steps"] == []  # not even the config test
    assert web.show(FPM, "ActiveState")["ActiveState"] == "inactive"


def test_restart_after_start_limit_hit_resets_once_and_starts(web: BootedSystemd) -> None:
    for _ in range(10):
        if web.systemctl("restart", FPM).returncode != 0:
            break
    assert web.show(FPM, "Result")["Result"] == "start-limit-hit"
    out = _act(web, "restart")
    assert out["outcome"] == "ok", out["reason"]
    assert out["details"]["start_limit_hit"] and out["details"]["reset_failed"]
    assert _changes(out) == [["systemctl", "reset-failed", FPM], ["systemctl", "restart", FPM]]
    assert web.http_get(URL) == (200, "ok\n")


def test_restart_that_hits_the_start_limit_resets_and_retries_once(web: BootedSystemd) -> None:
    for _ in range(4):  # with the fixture's start: 5 starts, the default burst
        web.systemctl("restart", FPM, check=True)
    out = _act(web, "restart")
    assert out["outcome"] == "ok", out["reason"]
    steps = [s for s in out["details"]["steps"] if s["kind"] == "change"]
    assert [s["argv"][1] for s in steps] == ["restart", "reset-failed", "restart"]
    assert "attempted too often" in steps[0]["output"]
    assert out["details"]["start_limit_hit"] and out["details"]["reset_failed"]


def test_restart_never_loops_on_a_unit_that_keeps_failing(web: BootedSystemd) -> None:
    web.install_unit(
        FLAKY,
        "[Unit]\nStartLimitIntervalSec=60\nStartLimitBurst=1\n"
        "[Service]\nType=oneshot\nExecStart=/bin/false\n",
    )
    assert web.systemctl("start", FLAKY).returncode != 0
    out = _act(web, "restart", unit=FLAKY)
    assert out["outcome"] == "failed"
    verbs = [argv[1] for argv in _changes(out)]
    assert verbs == ["restart", "reset-failed", "restart"]  # one reset, one retry, no more
    assert out["details"]["start_limit_hit"]
    assert "journal" in out["details"]


def test_start_limit_without_allowance_fails_without_reset(web: BootedSystemd) -> None:
    for _ in range(10):
        if web.systemctl("restart", FPM).returncode != 0:
            break
    out = _act(web, "restart", allow_reset_failed=False)
    assert out["outcome"] == "failed"
    assert out["details"]["start_limit_hit"] and not out["details"]["reset_failed"]
    assert _changes(out) == []
    assert web.show(FPM, "Result")["Result"] == "start-limit-hit"


# --- reload -----------------------------------------------------------------------------------


def test_reload_is_refused_when_the_config_test_fails(web: BootedSystemd) -> None:
    main = web.main_pid(FPM)
    web.write(POOL, Path(POOL).read_text() + "pm = sometimes\n")
    out = _act(web, "reload")
    assert out["outcome"] == "refused"
    assert "unable to parse value for entry 'pm'" in out["reason"]
    assert out["details"]["config_test"]["argv"] == ["php-fpm8.2", "-t"]
    assert _changes(out) == []
    assert web.main_pid(FPM) == main
    assert web.http_get(URL) == (200, "ok\n")


def test_reload_goes_through_systemctl_and_keeps_serving(web: BootedSystemd) -> None:
    out = _act(web, "reload")
    assert out["outcome"] == "ok", out["reason"]
    print(f"\nsystemd: reload action {out['details']['duration_ms']} ms")
    assert _changes(out) == [["systemctl", "reload", FPM]]
    assert out["details"]["new_processes"]  # PHP-FPM's new workers, in the unit's cgroup
    assert web.show(FPM, "ActiveState")["ActiveState"] == "active"
    assert web.http_get(URL) == (200, "ok\n")


def test_reload_of_a_unit_runs_the_services_own_command_instead(web: BootedSystemd) -> None:
    main, reloads = web.main_pid("nginx"), _reloads_logged(web, "nginx")
    own = ["nginx", "-s", "reload"]  # signals the master named by /run/nginx.pid itself
    out = _act(web, "reload", unit="nginx", kind="nginx", reload=own)
    assert out["outcome"] == "ok", out["reason"]
    assert out["details"]["argv"] == own
    assert _changes(out) == [own]
    assert out["details"]["config_test"]["argv"] == ["nginx", "-t"]
    assert out["details"]["new_processes"]  # nginx's new workers, in the unit's cgroup
    assert _reloads_logged(web, "nginx") == reloads  # systemd was not asked to reload it
    assert web.main_pid("nginx") == main
    assert web.http_get(URL) == (200, "ok\n")
    web.systemctl("reload", "nginx", check=True)  # what that journal count would have seen
    wait_for(lambda: _reloads_logged(web, "nginx") > reloads, 5, "systemd's reload line")


def test_a_failing_reload_command_of_a_unit_is_reported_failed(web: BootedSystemd) -> None:
    out = _act(web, "reload", reload=["/bin/sh", "-c", "echo no pool here >&2; exit 3"])
    assert out["outcome"] == "failed"
    assert out["reason"] == "the reload command failed (rc 3): no pool here"
    assert web.show(FPM, "ActiveState")["ActiveState"] == "active"


def test_reload_that_kills_the_master_is_reported_failed(web: BootedSystemd) -> None:
    web.write(POOL, Path(POOL).read_text() + "pm = sometimes\n")
    out = _act(web, "reload", config_test=["true"])  # a test that misses what is wrong
    assert out["outcome"] == "failed"
    assert "after the reload" in out["reason"]
    assert out["details"]["state_after"]["status"] == "failed"
    assert "unable to parse value for entry 'pm'" in out["details"]["journal"]


# --- dry run ----------------------------------------------------------------------------------


def test_dry_run_restart_names_the_command_and_leaves_the_unit(web: BootedSystemd) -> None:
    main = web.main_pid(FPM)
    out = _act(web, "restart", dry_run=True)
    assert out["outcome"] == "would_run" and not out["restarted"]
    assert out["details"]["would"] == [
        {"kind": "command", "argv": ["systemctl", "restart", FPM], "timeout_s": 120.0}
    ]
    assert out["details"]["argv"] == ["systemctl", "restart", FPM]
    assert "state_error" not in out["details"]
    assert web.main_pid(FPM) == main
    assert web.show(FPM, "NRestarts", "ActiveState") == {"NRestarts": "0", "ActiveState": "active"}


def test_dry_run_reload_runs_the_config_test_and_leaves_the_unit(web: BootedSystemd) -> None:
    main, pids = web.main_pid(FPM), _cgroup_pids(web, FPM)
    out = _act(web, "reload", dry_run=True)
    assert out["outcome"] == "would_run", out["reason"]
    assert out["details"]["argv"] == ["systemctl", "reload", FPM]
    assert out["details"]["config_test"]["rc"] == 0
    assert out["details"]["would"] == [
        {"kind": "command", "argv": ["systemctl", "reload", FPM], "timeout_s": 120.0}
    ]
    assert web.main_pid(FPM) == main and _cgroup_pids(web, FPM) == pids


def test_dry_run_reload_with_the_services_own_command_names_it(web: BootedSystemd) -> None:
    pids, reloads = _cgroup_pids(web, "nginx"), _reloads_logged(web, "nginx")
    own = ["nginx", "-s", "reload"]
    out = _act(web, "reload", unit="nginx", kind="nginx", reload=own, dry_run=True)
    assert out["outcome"] == "would_run", out["reason"]
    assert out["details"]["argv"] == own
    assert out["details"]["would"] == [{"kind": "command", "argv": own, "timeout_s": 120.0}]
    assert _cgroup_pids(web, "nginx") == pids
    assert _reloads_logged(web, "nginx") == reloads


def test_dry_run_reload_with_a_failing_config_test_is_refused(web: BootedSystemd) -> None:
    web.write(POOL, Path(POOL).read_text() + "pm = sometimes\n")
    out = _act(web, "reload", dry_run=True)
    assert out["outcome"] == "refused"
    assert "unable to parse value for entry 'pm'" in out["reason"]
    assert out["details"]["would"] == []
