"""The Debian package, for real: built with Debian's tools, installed with apt into a root that is
not the host's (``/etc``, ``/usr`` and ``/var`` are overlays of a private mount namespace), run
by the real systemd booted there, upgraded, removed and purged.

The tests run in file order on one machine (one boot, one install): install, a killed PHP-FPM
recorded ``would_run``, two upgrades, remove, purge; the last one checks that the host's own
files never changed. The package is built once per session (tests/debpkg.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from remediator import __version__
from tests import debpkg, sysd
from tests.require import lacking
from tests.stack import wait_for
from tests.sysd import DEBIAN_PHP_SITE, PHP_OK, BootedSystemd

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

UNIT = "remediator.service"
FPM = "php8.2-fpm.service"
NGINX = "nginx.service"
CONFIG = "/etc/remediator/remediator.yaml"
ACTION_LOG = "/var/log/remediator/actions.jsonl"
APT = ("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", "--no-install-recommends")
POLICY_RC_D = "/usr/sbin/policy-rc.d"
INSTALL_MD = debpkg.REPO / "docs" / "install.md"
# What the package owns or makes outside its file list: never on the host.
OUTSIDE = ("/etc/remediator", "/var/lib/remediator", "/var/log/remediator")
# GETs from inside, 25 ms apart: prints the statuses.
_REQUESTS = """
import sys, time, urllib.error, urllib.request
out = []
for _ in range(int(sys.argv[2])):
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            out.append(r.status)
    except urllib.error.HTTPError as e:
        out.append(e.code)
    except OSError:
        out.append(0)
    time.sleep(0.025)
print(*out)
"""


def _fingerprint(path: Path) -> tuple[Any, ...]:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return ("absent",)
    if stat.S_ISDIR(st.st_mode):
        return ("dir",)  # shared directories (/usr/bin...) change for other reasons
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
    return (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_gid, digest)


def host_snapshot(deb: Path) -> dict[str, tuple[Any, ...]]:
    """Every path the package installs or makes, and dpkg's record of it, as the host has them."""
    paths = [*debpkg.contents(deb), *OUTSIDE, "/lib/systemd/system/remediator.service"]
    paths += [f"/var/lib/dpkg/info/remediator.{ext}" for ext in ("list", "md5sums", "postinst")]
    paths += ["/etc/systemd/system/multi-user.target.wants/remediator.service", POLICY_RC_D]
    snap = {p: _fingerprint(Path(p)) for p in paths}
    status = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status} ${Version}", "remediator"],
        capture_output=True,
        text=True,
        check=False,
    )
    snap["dpkg-query remediator"] = (status.returncode, status.stdout)
    return snap


@dataclass
class Machine:
    """The booted root, the package, and what the first install said."""

    host: BootedSystemd
    deb: Path
    before: dict[str, tuple[Any, ...]]
    install: subprocess.CompletedProcess[str]

    def inside(self, path: str) -> Path:
        return self.host.root / path.lstrip("/")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.host.run(["/usr/bin/remediator", *args])

    def actions(self) -> list[dict[str, Any]]:
        path = self.inside(ACTION_LOG)
        if not path.exists():
            return []
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]

    def active_pid(self) -> int:
        """Wait until the unit is active and its MainPID answers ``remediator status``."""
        self.host.wait_for(UNIT, "ActiveState", ["active"], timeout=20)
        pid = self.host.main_pid(UNIT)
        wait_for(
            lambda: self.cli("status").stdout.startswith(f"remediator running, pid {pid} "),
            15,
            f"remediator status to name pid {pid}",
        )
        return pid

    def dpkg(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.host.run(["dpkg", *args], timeout=120)


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    reason = sysd.available()
    if reason is not None:
        lacking("systemd", reason)
    deb = debpkg.built()
    before = host_snapshot(deb)
    host = BootedSystemd(overlays=("etc", "var", "usr"))
    host.start()
    try:
        # Debian's default site with PHP, as a web host has it (a symlink: remove, never write
        # through it, which from the host side would reach the host's file).
        (host.root / "etc/nginx/sites-enabled/default").unlink(missing_ok=True)
        host.write("/etc/nginx/sites-enabled/default", DEBIAN_PHP_SITE)
        host.write("/var/www/html/index.php", PHP_OK)
        host.write("/var/www/html/health.php", PHP_OK)
        host.systemctl("start", FPM, NGINX, check=True)
        # A container's policy-rc.d (Docker's says 101: start nothing) is not a Debian host's:
        # without it, the maintainer scripts start and restart the unit as on a real host.
        (host.root / POLICY_RC_D.lstrip("/")).unlink(missing_ok=True)
        # man-db's trigger rebuilds its whole index (seconds); without this file it skips it.
        (host.root / "var/lib/man-db/auto-update").unlink(missing_ok=True)
        local = host.workdir / deb.name
        shutil.copy2(deb, local)
        install = host.run([*APT, "install", str(local)], timeout=300)
        yield Machine(host, local, before, install)
    finally:
        host.stop()


# --- the package as built -------------------------------------------------------------------


def test_the_package_is_arch_all_and_depends_on_debians_libraries() -> None:
    deb = debpkg.built()
    assert debpkg.field(deb, "Version") == __version__  # debian/changelog follows the code
    assert deb.name == f"remediator_{__version__}_all.deb"
    for doc in (INSTALL_MD, debpkg.REPO / "README.md"):  # the command they give names it
        assert f"apt install ./build/deb/{deb.name}" in doc.read_text(), doc
    assert debpkg.field(deb, "Architecture") == "all"
    depends = debpkg.field(deb, "Depends")
    for lib in ("yaml", "psutil", "requests", "systemd", "structlog", "prometheus-client"):
        assert f"python3-{lib} (>=" in depends
    files = debpkg.contents(deb)
    assert "/usr/bin/remediator" in files
    assert not [f for f in files if "venv" in f or f.startswith("/opt")]
    assert "/usr/share/man/man8/remediator.8.gz" in files
    assert "/usr/share/man/man5/remediator.yaml.5.gz" in files
    assert "/usr/share/bash-completion/completions/remediator" in files
    assert "/usr/share/doc/remediator/install.md.gz" in files
    for page in ("monitoring.md.gz", "fleet.md.gz"):  # every page README.md lists
        assert f"/usr/share/doc/remediator/{page}" in files
    # docs/monitoring.md names these paths for rule_files and Grafana's import
    assert "/usr/share/remediator/monitoring/alerts.yml" in files
    assert "/usr/share/remediator/monitoring/dashboard.json" in files


def test_lintian_finds_nothing_that_is_not_overridden_with_a_reason() -> None:
    if shutil.which("lintian") is None:
        pytest.fail("lintian is not installed (scripts/ensure-system-deps installs it)")
    deb = debpkg.built()
    # The source package and the .deb; every tag down to "info" counts (masked ones, which
    # lintian's own screens explain, do not print as E/W/I).
    changes = sorted(deb.parent.glob("remediator_*.changes"))
    assert len(changes) == 1, changes
    res = subprocess.run(
        ["lintian", "--display-info", "--fail-on", "error,warning", str(changes[0])],
        capture_output=True,
        text=True,
        timeout=120,
        env=debpkg.ENV,
        check=False,
    )
    tags = [ln for ln in res.stdout.splitlines() if ln[:2] in ("E:", "W:", "I:")]
    assert tags == [], res.stdout
    assert res.returncode == 0, res.stdout + res.stderr


# --- install ----------------------------------------------------------------------------------


def test_apt_installs_it_and_the_service_runs_in_dry_run(machine: Machine) -> None:
    assert machine.install.returncode == 0, machine.install.stdout + machine.install.stderr
    host = machine.host
    assert host.show(UNIT, "UnitFileState")["UnitFileState"] == "enabled"
    pid = machine.active_pid()
    status = machine.cli("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"remediator running, pid {pid} (DRY RUN);")
    assert host.show(UNIT, "StatusText")["StatusText"] == "watching"
    unit = machine.inside("/lib/systemd/system/remediator.service").read_text()
    assert "ExecStart=/usr/bin/remediator -c /etc/remediator/remediator.yaml run" in unit
    assert "/opt/" not in unit


def test_the_configuration_is_conffiles_in_dry_run_with_strict_modes(machine: Machine) -> None:
    main = machine.inside(CONFIG)
    assert "\ndry_run: true\n" in main.read_text()
    st = main.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, 4)  # root:adm
    conffiles = machine.dpkg("--status", "remediator").stdout.split("Conffiles:\n", 1)[1]
    listed = {ln.split()[0] for ln in conffiles.splitlines() if ln.startswith(" ")}
    assert CONFIG in listed
    assert "/etc/remediator/playbooks.d/10-php-fpm-down.yaml" in listed
    assert "/etc/logrotate.d/remediator" in listed
    check = machine.cli("check")
    assert check.returncode == 0, check.stderr
    summary = check.stdout.splitlines()[-1]
    assert summary.startswith("ok: ")
    assert f"It prints `{summary}`" in INSTALL_MD.read_text()  # the line docs/install.md quotes


def test_check_and_reload_as_docs_install_md_says(machine: Machine) -> None:
    pid = machine.active_pid()
    assert "remediator check && systemctl reload remediator" in INSTALL_MD.read_text()
    res = machine.host.run(["sh", "-c", "remediator check && systemctl reload remediator"])
    assert res.returncode == 0, res.stdout + res.stderr
    wait_for(
        lambda: machine.host.show(UNIT, "StatusText")["StatusText"] == "watching (reloaded)",
        10,
        "the reload to be acknowledged",
    )
    assert machine.host.main_pid(UNIT) == pid


def test_the_pools_status_is_reached_on_debians_socket_as_install_md_says(
    machine: Machine,
) -> None:
    # Debian's pool socket is www-data:www-data 0660 and the unit bounds root's capabilities:
    # the daemon reaches it (group www-data), and the pool's status page is off until the
    # operator sets pm.status_path, which docs/install.md says in these words.
    said = "status '404' from the pool (is '/status' its pm.status_path?)"
    assert f"`{said}`" in " ".join(INSTALL_MD.read_text().split())

    def pool_line() -> str:
        lines = machine.cli("status").stdout.splitlines()
        return next((ln for ln in lines if ln.lstrip().startswith("fpm_pool ")), "")

    wait_for(lambda: "failing" in pool_line(), 10, "the fpm_pool source to be read")
    assert said in pool_line(), pool_line()
    # install.md's two commands turn the status on; then the source reads the pool
    text = " ".join(INSTALL_MD.read_text().split())
    turn_on = (
        "sed -i 's|^;pm.status_path = /status|pm.status_path = /status|' "
        "/etc/php/8.2/fpm/pool.d/www.conf",
        "php-fpm8.2 -t && systemctl reload php8.2-fpm",
    )
    for command in turn_on:
        assert command in text, command
        res = machine.host.run(["sh", "-c", command])
        assert res.returncode == 0, res.stdout + res.stderr
    wait_for(lambda: "ok (pool www:" in pool_line(), 10, "the pool's status read")


def test_the_metrics_textfile_monitoring_md_names_is_written_under_the_unit(
    machine: Machine,
) -> None:
    # docs/monitoring.md and the example config name node_exporter's directory, which the
    # unit's read-only /var must leave writable.
    prom = "/var/lib/prometheus/node-exporter/remediator.prom"
    assert f"textfile: {prom}" in (debpkg.REPO / "docs" / "monitoring.md").read_text()
    main = machine.inside(CONFIG)
    original = main.read_bytes()
    machine.host.run(["mkdir", "-p", "/var/lib/prometheus/node-exporter"], check=True)
    # node_exporter was there first: the unit's ReadWritePaths= takes a directory that exists
    # when the service starts (monitoring.md says to restart after installing node_exporter)
    machine.host.run(["systemctl", "restart", UNIT], check=True)
    machine.active_pid()
    try:
        main.write_bytes(original + f"metrics: {{textfile: {prom}}}\n".encode())
        machine.host.run(["systemctl", "reload", UNIT], check=True)
        wait_for(machine.inside(prom).exists, 20, "the textfile")
        assert "remediator_dry_run 1.0" in machine.inside(prom).read_text()
    finally:
        main.write_bytes(original)  # the conffile as shipped: the upgrades below see no edit
        machine.host.run(["systemctl", "reload", UNIT], check=True)
        machine.host.run(["rm", "-r", "/var/lib/prometheus"], check=True)


def test_state_and_log_directories_are_root_adm(machine: Machine) -> None:
    for d in ("/var/lib/remediator", "/var/log/remediator"):
        st = machine.inside(d).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 0, 4), d


def test_a_killed_php_fpm_is_recorded_would_run(machine: Machine) -> None:
    host = machine.host
    machine.active_pid()
    assert host.http_get("http://127.0.0.1/health.php")[0] == 200
    host.systemctl("kill", "--signal=KILL", FPM, check=True)
    host.wait_for(FPM, "ActiveState", ["failed", "inactive"])
    url = "http://127.0.0.1/index.php"

    def would_run() -> bool:
        host.run(["python3", "-c", _REQUESTS, url, "20"])
        return any(r.get("outcome") == "would_run" for r in machine.actions())

    wait_for(would_run, 30, "a would_run record in the action log")
    record = next(r for r in machine.actions() if r.get("outcome") == "would_run")
    # Which shipped playbook sees it first (master gone, or the 502s) is theirs to decide.
    assert record["playbook"] in ("php-fpm-master-gone", "php-fpm-down"), record
    assert (record["action"], record["dry_run"]) == ("restart", True), record
    # docs/install.md quotes the step as `remediator log` prints it (after its time)
    shown = machine.cli("log").stdout.splitlines()
    step = next(ln for ln in shown if ": would_run (" in ln and "restart" in ln)
    step = re.sub(r"^\s*\d\d:\d\d:\d\d\.\d{3} [+-]\d\d:\d\d\s+", "", step)
    assert f"  {step}\n" in INSTALL_MD.read_text(), step
    command = shown[shown.index(next(ln for ln in shown if ln.endswith(step))) + 1].strip()
    assert f"{command}\n" in INSTALL_MD.read_text(), command
    assert host.show(FPM, "ActiveState")["ActiveState"] in ("failed", "inactive")  # untouched
    host.systemctl("reset-failed", FPM)
    host.systemctl("start", FPM, check=True)


# --- upgrade ----------------------------------------------------------------------------------


def test_an_upgrade_restarts_the_daemon(machine: Machine) -> None:
    old = machine.active_pid()
    new_deb = debpkg.repack(machine.deb, "0.1.0+test1", machine.host.workdir)
    res = machine.dpkg("-i", str(new_deb))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "NOT restarted" not in res.stderr
    wait_for(lambda: machine.host.main_pid(UNIT) not in (0, old), 20, "a new main pid")
    assert machine.active_pid() != old


def test_an_upgrade_that_check_refuses_keeps_the_old_daemon_and_says_why(
    machine: Machine,
) -> None:
    old = machine.active_pid()
    good = machine.inside(CONFIG).read_text()
    machine.host.write(CONFIG, good + "bogus_key: 1\n")
    try:
        new_deb = debpkg.repack(machine.deb, "0.1.0+test2", machine.host.workdir)
        res = machine.dpkg("-i", str(new_deb))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "NOT restarted after the upgrade from 0.1.0+test1" in res.stderr
        where = f"{CONFIG}:{len(good.splitlines()) + 1}:1"
        assert f"\n  {where}: bogus_key: unknown key 'bogus_key'\n" in res.stderr
        assert f"\n  {CONFIG}: 1 error, configuration not usable\n" in res.stderr
        assert "the old daemon keeps running" in res.stderr
        # what docs/install.md quotes of it, up to the version and the line number
        quoted = INSTALL_MD.read_text().split("\n```\nremediator: NOT restarted", 1)[1]
        quoted = "remediator: NOT restarted" + quoted.split("\n```", 1)[0] + "\n"
        said = res.stderr.replace("from 0.1.0+test1:", "from 0.1.0:")
        assert re.sub(r":\d+:1:", ":N:1:", quoted) in re.sub(r":\d+:1:", ":N:1:", said), said
        assert machine.host.show(UNIT, "ActiveState", "MainPID") == {
            "ActiveState": "active",
            "MainPID": str(old),
        }
        assert machine.cli("status").stdout.startswith(f"remediator running, pid {old} ")
    finally:
        machine.host.write(CONFIG, good)


# --- remove and purge -------------------------------------------------------------------------


def test_remove_keeps_the_configuration_the_state_and_the_action_log(machine: Machine) -> None:
    res = machine.host.run([*APT, "remove", "remediator"], timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert machine.host.show(UNIT, "ActiveState")["ActiveState"] == "inactive"
    assert not machine.inside("/usr/bin/remediator").exists()
    assert not machine.inside("/lib/systemd/system/remediator.service").exists()
    assert machine.inside(CONFIG).is_file()
    assert machine.inside("/etc/remediator/playbooks.d/10-php-fpm-down.yaml").is_file()
    assert machine.inside("/var/lib/remediator/status.json").is_file()
    actions = machine.actions()
    assert any(r.get("outcome") == "would_run" for r in actions), actions[-5:]


def test_purge_removes_configuration_state_and_action_log(machine: Machine) -> None:
    res = machine.host.run([*APT, "purge", "remediator"], timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    status = machine.host.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", "remediator"])
    assert status.stdout in ("", "not-installed")
    left = machine.host.run(
        ["find", "/etc", "/usr", "/var", "-name", "*remediator*"], timeout=60
    ).stdout.split()
    assert left == []


def test_the_hosts_own_files_never_changed(machine: Machine) -> None:
    assert machine.before["/usr/bin/remediator"] == ("absent",)  # else the check proves little
    assert host_snapshot(machine.deb) == machine.before
