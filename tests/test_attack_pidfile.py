"""Issue 9, items 1 and 8: www-data owns the pid file's directory and may put anything there.

Debian's ``/run/php`` is www-data's. Here our PHP-FPM writes its pid file into a directory owned
by www-data, a second PHP-FPM master (another site) runs beside it with its pid file in the same
directory, and the attacker (tests/attacker.py, really www-data) replaces our pid file. Then the
operator triggers the restart playbook through the running daemon. Each case asserts that
nothing outside the service was signalled (the other master and ours still serve, with the same
PIDs), that the refusal is a ``cannot_act`` record with its reason, that the daemon stayed
alive and answers, and that neither the breaker (``on_exhausted: stop``, which a failed run
opens at once) nor the budget (``max_runs: 1``, ``max_actions: 1``: a second trigger runs and
is not held back) was used.

A second layer is tried with pid files written by root (what www-data can reach by moving a
root-owned pid file of another site into place): the process the file names must still be the
service's master.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from remediator.cli import main
from tests.attacker import as_www_data, as_www_data_argv, give_to_www_data
from tests.e2e import DaemonProcess, config, eventually, fpm_service
from tests.stack import PhpFpm, Stack, is_alive, make_workdir

pytestmark = pytest.mark.servers

NEVER = {"status_rate": {"source": "access", "status": 418, "at_least": 5}}
PLAYBOOK = {
    "name": "php-restart",
    "when": NEVER,
    "steps": [{"restart": "php", "verify": {"within": "2s"}}],
    # One run per hour and a breaker that opens on the first failed run: if the attacker's
    # pid file used either, the second trigger would be held back.
    "limits": {"cooldown": "0s", "backoff": False, "max_runs": 1, "per": "1h"},
    "on_exhausted": {"stop": True},
}
STEP_DEADLINE = 20.0  # a hung step (the FIFO on main) never finishes: this is a deadline
MAX_RSS = 300 * 1024 * 1024  # the /dev/zero pid file took the daemon to 2.6 GB on main


@dataclass
class Site:
    fpm: PhpFpm  # ours
    other: PhpFpm  # another site's master, its pid file beside ours
    run: Path  # www-data's directory, like /run/php
    daemon: DaemonProcess
    masters: tuple[int, int]  # ours, the other's: as started

    def untouched(self) -> bool:
        """Both masters are the ones started, alive, and both pools answer."""
        return all(is_alive(pid) for pid in self.masters) and self.fpm.ping() and self.other.ping()


def _fpm_in(stack: Stack, run: Path, name: str) -> PhpFpm:
    fpm = stack.fpm(start=False)
    fpm.pid_file = run / f"{name}.pid"
    fpm.write_config()
    fpm.start()
    return fpm


@contextlib.contextmanager
def _site(stack: Stack, tmp_path: Path, playbook: dict[str, Any], **service: Any) -> Iterator[Site]:
    run = make_workdir("remediator-run-php-")  # like /run/php: www-data's, reachable by it
    give_to_www_data(run)
    fpm = _fpm_in(stack, run, "php8.2-fpm")
    other = _fpm_in(stack, run, "other-site-fpm")
    masters = (fpm.master_pid(), other.master_pid())
    assert masters[0] is not None and masters[1] is not None
    access = tmp_path / "access.log"
    access.touch()
    cfg = config(
        tmp_path / "daemon",
        sources={"access": {"type": "access_log", "path": str(access)}},
        services={"php": fpm_service(fpm, **service)},
        playbooks=[playbook],
    )
    try:
        with DaemonProcess(tmp_path / "daemon", cfg) as daemon:
            yield Site(fpm, other, run, daemon, (masters[0], masters[1]))
            print(daemon.report())
    finally:
        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture
def site(stack: Stack, tmp_path: Path) -> Iterator[Site]:
    with _site(stack, tmp_path, PLAYBOOK, max_actions=1) as s:
        yield s


def _cli(daemon: DaemonProcess, *argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(["-c", str(daemon.config_path), *argv], out, err)
    return rc, out.getvalue() + err.getvalue()


def _replace_pid_file(site: Site, *shell: str) -> None:
    """As www-data, in the pid file's directory: ``shell`` (one sh command line)."""
    as_www_data(["sh", "-c", " ".join(shell)], timeout=10)


def _trigger_and_judge(site: Site, reason: str, *, started: bool = False) -> None:
    """Trigger the restart twice through the daemon; both end ``cannot_act`` with ``reason``,
    nothing was signalled (nor started, unless ``started``), nothing was consumed."""
    assert site.untouched()
    for n in (1, 2):
        rc, out = _cli(site.daemon, "trigger", "php-restart", "--reason", f"attack {n}")
        assert rc == 1, out  # not resolved: it could not act
        closed = site.daemon.wait_record("incident_closed", STEP_DEADLINE, count=n)
        assert closed[-1]["outcome"] == "cannot_act", site.daemon.report()
        results = site.daemon.records("action_result", incident=closed[-1]["incident"])
        assert [r["outcome"] for r in results] == ["cannot_act"], site.daemon.report()
        assert reason in results[0]["reason"], results[0]["reason"]
        kinds = {s["kind"] for s in results[0]["details"]["steps"]}
        assert kinds <= ({"note", "change", "remove"} if started else {"note"}), kinds
        assert not site.daemon.records("action_held")  # the service budget was not used
        assert not site.daemon.records("trigger_held_back")  # nor max_runs, nor the breaker
    assert not site.daemon.records("breaker_opened")
    # Nothing outside was touched, nor our own service.
    assert site.untouched()
    # The daemon is alive, answers, and says what it could not do.
    assert site.daemon.is_running()
    status: list[str] = []

    def says_so() -> bool:  # the daemon rewrites its status every few seconds
        rc, out = _cli(site.daemon, "status")
        status[:] = [out]
        return rc == 0 and "incident: none" in out

    eventually(says_so, STEP_DEADLINE, "the daemon's status after the incidents")
    assert "cannot act: " in status[0] and reason in status[0], status[0]
    assert re.search(r"\n  php-restart +ready\n", status[0]), status[0]
    rss = psutil.Process(site.daemon.pid).memory_info().rss
    assert rss < MAX_RSS, rss


# --- what www-data can write -----------------------------------------------------------------


def test_pid_file_naming_another_sites_master_signals_nothing(site: Site) -> None:
    other = site.other.master_pid()
    _replace_pid_file(
        site,
        f"cd {site.run} && printf '%s\\n' {other} > new.pid && mv -f new.pid php8.2-fpm.pid",
    )
    _trigger_and_judge(site, "is owned by www-data")


def test_another_sites_root_owned_pid_file_moved_into_place_signals_nothing(site: Site) -> None:
    """www-data cannot write a root-owned file, but it can rename one in its directory: the
    file is trusted, the process it names is not our master (another config)."""
    other = site.other.master_pid()
    _replace_pid_file(site, f"cd {site.run} && mv -f other-site-fpm.pid php8.2-fpm.pid")
    assert site.fpm.pid_file.stat().st_uid == 0
    _trigger_and_judge(site, f"names process {other}, not php's master")
    assert "is not started with" in site.daemon.records("action_result")[0]["reason"]


def test_pid_file_symlinked_to_dev_zero_is_refused_with_bounded_memory(site: Site) -> None:
    _replace_pid_file(site, f"cd {site.run} && ln -sf /dev/zero php8.2-fpm.pid")
    _trigger_and_judge(site, "is a symbolic link")


def test_pid_file_replaced_by_a_fifo_does_not_hang_a_step(site: Site) -> None:
    _replace_pid_file(site, f"cd {site.run} && rm -f php8.2-fpm.pid && mkfifo php8.2-fpm.pid")
    _trigger_and_judge(site, "is a FIFO")


def test_pid_file_naming_pid_1_signals_nothing_and_opens_no_breaker(site: Site) -> None:
    _replace_pid_file(site, f"cd {site.run} && echo 1 > new.pid && mv -f new.pid php8.2-fpm.pid")
    _trigger_and_judge(site, "is owned by www-data")


@pytest.fixture
def renamed() -> Iterator[int]:
    """A www-data process that calls itself php-fpm8.2 (``/proc/self/comm``)."""
    code = (
        "import sys, time\n"
        "open('/proc/self/comm', 'w').write('php-fpm8.2')\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        as_www_data_argv(["/usr/bin/python3", "-S", "-c", code]),
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    try:
        assert psutil.Process(proc.pid).name() == "php-fpm8.2"
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_pid_file_naming_a_www_data_process_renamed_php_fpm_is_no_master(
    site: Site, renamed: int
) -> None:
    _replace_pid_file(
        site, f"cd {site.run} && echo {renamed} > new.pid && mv -f new.pid php8.2-fpm.pid"
    )
    _trigger_and_judge(site, "is owned by www-data")
    assert is_alive(renamed)


def test_pid_file_removed_by_www_data_leaves_the_running_master_alone(site: Site) -> None:
    """No pid file: the start fails on the address our (unnamed) master holds; that master
    is not guessed at, and it is no failed run."""
    _replace_pid_file(site, f"cd {site.run} && rm -f php8.2-fpm.pid")
    _trigger_and_judge(site, "held by a running instance", started=True)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("x" * 100_000, "is owned by www-data"),
        ("12abc", "is owned by www-data"),
    ],
    ids=["huge", "garbage"],
)
def test_pid_file_with_junk_is_refused(site: Site, content: str, reason: str) -> None:
    _replace_pid_file(
        site,
        f"cd {site.run} && printf '%s' '{content}' > new.pid && mv -f new.pid php8.2-fpm.pid",
    )
    _trigger_and_judge(site, reason)


# --- root-owned pid files: the process must still be the master --------------------------------


def _root_writes(site: Site, text: str) -> None:
    """Root replaces the pid file (mode 0644, as PHP-FPM writes it)."""
    new = site.run / "root-new.pid"
    new.write_text(text)
    new.chmod(0o644)
    new.rename(site.fpm.pid_file)


def test_root_owned_pid_file_naming_pid_1_is_refused(site: Site) -> None:
    _root_writes(site, "1\n")
    _trigger_and_judge(site, "names PID 1")


def test_root_owned_pid_file_naming_a_renamed_www_data_process_is_refused(
    site: Site, renamed: int
) -> None:
    _root_writes(site, f"{renamed}\n")
    _trigger_and_judge(site, f"process {renamed} runs as www-data")
    assert is_alive(renamed)


@pytest.mark.parametrize(
    ("content", "reason"),
    [("9" * 40, "holds more than 32 bytes"), ("12abc\n", "does not hold a number")],
    ids=["huge", "garbage"],
)
def test_root_owned_pid_file_with_junk_is_refused(site: Site, content: str, reason: str) -> None:
    _root_writes(site, content)
    _trigger_and_judge(site, reason)


def test_root_owned_pid_file_naming_a_zombie_starts_nothing_over_the_live_master(
    site: Site,
) -> None:
    """A zombie is a dead master: the restart starts a new one, which finds the address held
    by our real (unnamed) master: that one is left alone, and it is cannot act."""
    zombie = subprocess.Popen(["true"])
    try:
        eventually(
            lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, 5, "a zombie"
        )
        _root_writes(site, f"{zombie.pid}\n")
        _trigger_and_judge(site, "held by a running instance", started=True)
    finally:
        zombie.wait()


# Swaps our pid file and the other site's, as fast as it can, until killed (www-data may rename
# root's files in its directory, not write them).
SWAPPER = """\
import os, sys
os.chdir(sys.argv[1])
while True:
    try:
        os.rename("php8.2-fpm.pid", "swap.tmp")
        os.rename("other-site-fpm.pid", "php8.2-fpm.pid")
        os.rename("swap.tmp", "other-site-fpm.pid")
    except FileNotFoundError:  # between our restart's removal and the new master's write
        pass
"""


@pytest.fixture
def racing_site(stack: Stack, tmp_path: Path) -> Iterator[Site]:
    """As ``site``, with room for a restart each time (no budget, no breaker to stop them)."""
    playbook = {**PLAYBOOK, "on_exhausted": {"stop": False}}
    playbook["steps"] = [{"restart": "php", "verify": {"within": "200ms"}}]
    playbook["limits"] = {"cooldown": "0s", "backoff": False}
    with _site(stack, tmp_path, playbook, max_actions=1000) as s:
        yield s


def test_pid_files_swapped_while_the_daemon_restarts_never_reach_the_other_site(
    racing_site: Site,
) -> None:
    """Between the read of the pid file and the signal, www-data swaps ours and the other
    site's: whatever each restart read, the other site's master is never signalled (it is
    checked again, as the group's leader, right before the signal)."""
    other = racing_site.masters[1]
    before = psutil.Process(other)
    other_workers = {c.pid for c in before.children()}  # not by pid file: those are swapped
    swapper = subprocess.Popen(
        as_www_data_argv(["/usr/bin/python3", "-c", SWAPPER, str(racing_site.run)]),
        start_new_session=True,
    )
    try:
        for n in range(1, 6):
            _cli(racing_site.daemon, "trigger", "php-restart", "--force", "--reason", f"race {n}")
            racing_site.daemon.wait_record("incident_closed", STEP_DEADLINE, count=n)
    finally:
        os.killpg(swapper.pid, signal.SIGKILL)
        swapper.wait()
    outcomes = [r["outcome"] for r in racing_site.daemon.records("action_result")]
    assert set(outcomes) <= {"ok", "failed", "cannot_act"}, outcomes
    assert len(outcomes) == 5, outcomes  # each trigger tried a restart
    # The other site: same master, same workers, still serving.
    assert is_alive(other) and psutil.Process(other).create_time() == before.create_time()
    assert {c.pid for c in psutil.Process(other).children()} == other_workers
    assert racing_site.other.ping()
    stopped = {
        p
        for r in racing_site.daemon.records("action_result")
        for p in r["details"].get("stopped", [])
    }
    assert not stopped & {other, *other_workers}, stopped
    assert racing_site.daemon.is_running()
    rc, out = _cli(racing_site.daemon, "status")
    assert rc == 0, out
