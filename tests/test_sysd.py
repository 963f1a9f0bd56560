"""A real systemd boots in private namespaces, runs Debian's units, and leaves the host alone."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.require import lacking
from tests.stack import write_docroot
from tests.sysd import BootedSystemd, available

pytestmark = pytest.mark.systemd

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

_WATCHDOG_SCRIPT = """\
import time
from systemd import daemon

daemon.notify("READY=1")
end = time.monotonic() + 0.3
while time.monotonic() < end:
    daemon.notify("WATCHDOG=1")
    time.sleep(0.1)
time.sleep(3600)  # hung: no more pings
"""


@pytest.fixture
def web_units(systemd_host: BootedSystemd) -> Iterator[BootedSystemd]:
    """php8.2-fpm and nginx (with a PHP site on 127.0.0.1:8080) started inside."""
    host = systemd_host
    docroot = write_docroot(host.workdir / "www")
    host.write("/etc/nginx/conf.d/remediator-test.conf", _SITE.format(docroot=docroot))
    try:
        host.systemctl("start", "php8.2-fpm", "nginx", check=True)
        yield host
    finally:
        host.systemctl("stop", "nginx", "php8.2-fpm")
        host.systemctl("reset-failed")


def test_boots_to_running_with_no_failed_unit(systemd_host: BootedSystemd) -> None:
    assert systemd_host.system_state() == "running"
    failed = systemd_host.systemctl("list-units", "--failed", "--plain", "--no-legend")
    assert failed.stdout.strip() == ""
    assert systemd_host.run(["cat", "/proc/1/comm"]).stdout == "systemd\n"


def test_systemd_is_alone_in_its_cgroup_with_the_hosts_controllers(
    systemd_host: BootedSystemd,
) -> None:
    """cgroup2 lets processes live only in leaves once controllers are enabled: unshare, outside
    the namespace, sits in a sibling cgroup, so systemd can delegate what the host offers."""
    host = systemd_host
    assert host.run(["cat", "/sys/fs/cgroup/cgroup.procs"]).stdout == ""  # PID 1 is in init.scope
    assert "0::/init.scope" in host.run(["cat", "/proc/1/cgroup"]).stdout.splitlines()
    payload, supervisor = host.cgroup / "payload", host.cgroup / "supervisor"
    offered = set((host.cgroup / "cgroup.controllers").read_text().split())
    assert set((payload / "cgroup.controllers").read_text().split()) == offered
    inside = set(host.run(["cat", "/sys/fs/cgroup/cgroup.controllers"]).stdout.split())
    assert inside == offered
    assert (supervisor / "cgroup.procs").read_text().split() != []  # unshare, host-side


def test_php_fpm_unit_serves_and_kill9_leaves_it_failed(web_units: BootedSystemd) -> None:
    host = web_units
    assert host.http_get("http://127.0.0.1:8080/index.php") == (200, "ok\n")
    main = host.main_pid("php8.2-fpm.service")
    assert main > 0 and host.host_pid(main) is not None
    host.run(["kill", "-9", str(main)], check=True)
    host.wait_for("php8.2-fpm.service", "ActiveState", ["failed"])
    assert host.show("php8.2-fpm.service", "Result")["Result"] == "signal"
    assert host.http_get("http://127.0.0.1:8080/index.php")[0] == 502
    assert "Failed with result 'signal'" in host.journal("php8.2-fpm.service")


def test_notify_unit_that_stops_pinging_is_restarted(systemd_host: BootedSystemd) -> None:
    host = systemd_host
    script = host.workdir / "watchdog.py"
    script.write_text(_WATCHDOG_SCRIPT)
    host.install_unit(
        "rem-watchdog.service",
        "[Service]\nType=notify\n"
        f"ExecStart={sys.executable} {script}\n"
        "WatchdogSec=1s\nRestart=on-failure\nRestartSec=100ms\n",
    )
    try:
        host.systemctl("start", "rem-watchdog.service", check=True)
        host.wait_for("rem-watchdog.service", "NRestarts", ["1", "2"], timeout=6.0)
        journal = host.journal("rem-watchdog.service")
        assert "Watchdog timeout" in journal
        assert "Killing process" in journal and "SIGABRT" in journal
    finally:
        host.systemctl("stop", "rem-watchdog.service")


def test_writes_inside_stay_inside(systemd_host: BootedSystemd) -> None:
    name = f"remediator-ns-probe-{uuid.uuid4().hex[:8]}"
    for where in ("/etc", "/var/lib", "/tmp", "/run", "/var/log"):
        systemd_host.run(["touch", f"{where}/{name}"], check=True)
        assert not (Path(where) / name).exists(), where
    # the work dir, by contrast, is shared
    systemd_host.run(["touch", str(systemd_host.workdir / name)], check=True)
    assert (systemd_host.workdir / name).exists()


def test_host_tmp_survives_boot_and_teardown() -> None:
    reason = available()
    if reason is not None:
        lacking("systemd", reason)
    canary = Path("/tmp") / f"remediator-canary-{uuid.uuid4().hex}"
    canary.write_text("still here\n")
    try:
        host = BootedSystemd()
        with host:
            host.start()
            inside = host.run(["ls", "-a", "/tmp"]).stdout.split()
            assert canary.name not in inside  # a private /tmp
            assert host.workdir.name in inside  # with the work dir bound in
            assert host.system_state() == "running"
            cgroup = host.cgroup
            pid = host.pid
        assert canary.read_text() == "still here\n"
        assert not cgroup.exists()
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
        assert not host.workdir.exists()
    finally:
        canary.unlink(missing_ok=True)


def _zombie(pid: int) -> bool:
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
