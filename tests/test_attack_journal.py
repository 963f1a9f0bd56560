"""Issue 9, item 7: in PHP-FPM's journal only the master's messages count, not the PHP code's.

Debian's php8.2-fpm unit runs inside a real systemd (tests/sysd.py) with ``error_log = syslog``,
so the master's own messages reach the journal the way they do on a host that logs there. The
attacker is what a compromised PHP app can run: a process as www-data *inside the unit's
cgroup* (so journald stamps ``_SYSTEMD_UNIT=php8.2-fpm.service`` on it), logging a forged
"child exited on signal" line with the master's syslog identifier, with ``SYSLOG_PID`` (and a
``_PID``, which journald drops) set to the master's PID, and under the master's process name.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from remediator.sources.journal import JournalEntry, JournalFollower
from tests.attacker import as_www_data_argv
from tests.e2e import DaemonProcess, config
from tests.sysd import ENV_PATH, NSENTER_FLAGS, BootedSystemd

pytestmark = pytest.mark.systemd

FPM = "php8.2-fpm.service"
FPM_CONF = "/etc/php/8.2/fpm/php-fpm.conf"
CGROUP_PROCS = f"/sys/fs/cgroup/system.slice/{FPM}/cgroup.procs"
FORGED = "WARNING: [pool www] child 4242 exited on signal 9 (SIGKILL) after 0.31 seconds from start"

# What the PHP code can do, as www-data: take the master's process name (comm php-fpm8.2),
# call syslog() with the master's identifier, and speak journald's native protocol with
# SYSLOG_IDENTIFIER, SYSLOG_PID and even _PID/_UID of the master's (journald drops the latter).
# It stays alive until its stdin closes: journald reads a sender's cgroup (_SYSTEMD_UNIT) from
# /proc when the message arrives, and a sender already gone would not be the unit's at all.
_ATTACK = r"""
import ctypes, socket, sys, syslog
main, text = sys.argv[1], sys.argv[2]
ctypes.CDLL(None).prctl(15, b"php-fpm8.2", 0, 0, 0)
syslog.openlog("php-fpm", syslog.LOG_PID, syslog.LOG_DAEMON)
syslog.syslog(syslog.LOG_WARNING, text)
fields = f"SYSLOG_IDENTIFIER=php-fpm\nSYSLOG_PID={main}\n_PID={main}\n_UID=0\n_COMM=php-fpm8.2\n"
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.sendto((fields + "MESSAGE=" + text + "\n").encode(), "/run/systemd/journal/socket")
sys.stdout.write("sent\n")
sys.stdout.flush()
sys.stdin.read()
"""


@contextlib.contextmanager
def _worker_attacking(host: BootedSystemd, main: int) -> Iterator[None]:
    """A www-data process inside php8.2-fpm's cgroup (as a worker's child runs) sending the
    forged lines; it lives until the block ends."""
    argv = as_www_data_argv(["/usr/bin/python3", "-c", _ATTACK, str(main), FORGED])
    script = f"echo $$ > {CGROUP_PROCS} && exec {shlex.join(argv)}"
    proc = subprocess.Popen(
        ["nsenter", f"--target={host.pid}", *NSENTER_FLAGS, "--", "sh", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        env={"PATH": ENV_PATH, "LANG": "C.UTF-8"},
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        if proc.stdout.readline() != "sent\n":
            proc.stdin.close()
            raise AssertionError(f"the attacker did not send: {proc.stderr.read()}")
        yield
    finally:
        proc.stdin.close()
        proc.wait(10)


def _main_pids(host: BootedSystemd) -> Callable[[], list[int]]:
    def ask() -> list[int]:
        props = host.show(FPM, "MainPID", "ExecMainPID")
        return [int(props["MainPID"] or 0), int(props["ExecMainPID"] or 0)]

    return ask


def _read_until(
    followers: list[JournalFollower],
    done: Callable[[list[list[JournalEntry]]], bool],
    timeout: float = 10.0,
) -> list[list[JournalEntry]]:
    seen: list[list[JournalEntry]] = [[] for _ in followers]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for got, f in zip(seen, followers, strict=True):
            got.extend(f.read())
        if done(seen):
            return seen
        time.sleep(0.02)
    return seen


def _texts(entries: list[JournalEntry]) -> list[str]:
    return [e.message.decode("utf-8", "replace") for e in entries]


def _forged(entries: list[JournalEntry]) -> int:
    return sum(FORGED in t for t in _texts(entries))


@pytest.fixture
def fpm(systemd_host: BootedSystemd) -> Iterator[BootedSystemd]:
    """Debian's php8.2-fpm, its master logging to syslog (the journal)."""
    host = systemd_host
    original = Path(FPM_CONF).read_text()  # the namespace's /etc starts as the host's
    host.write(
        FPM_CONF, original.replace("error_log = /var/log/php8.2-fpm.log", "error_log = syslog")
    )
    try:
        host.systemctl("start", FPM, check=True)
        yield host
    finally:
        host.write(FPM_CONF, original)
        host.systemctl("stop", FPM)
        host.systemctl("reset-failed")


@pytest.fixture
def followers(fpm: BootedSystemd) -> Iterator[tuple[JournalFollower, JournalFollower]]:
    """(master only, as the daemon follows php-fpm; the whole cgroup, as it did before)."""
    path = str(fpm.root / "run/log/journal")
    master = JournalFollower(FPM, path=path, master=_main_pids(fpm))
    everything = JournalFollower(FPM, path=path)
    yield master, everything
    master.close()
    everything.close()


def _worker_pid(host: BootedSystemd) -> int:
    main = host.main_pid(FPM)
    out = host.run(["pgrep", "-P", str(main)], check=True).stdout.split()
    return int(out[0])


def _kill_a_worker(host: BootedSystemd) -> int:
    """SIGKILL one worker: the master logs "child N exited on signal 9"; N."""
    pid = _worker_pid(host)
    host.run(["kill", "-9", str(pid)], check=True)
    return pid


def test_a_worker_logging_as_the_master_from_the_units_cgroup_is_not_a_master_message(
    fpm: BootedSystemd, followers: tuple[JournalFollower, JournalFollower]
) -> None:
    master, everything = followers
    main = fpm.main_pid(FPM)
    with _worker_attacking(fpm, main):
        (forged,) = _read_until([everything], lambda s: _forged(s[0]) == 2)
    # The attack landed in the unit's journal: the cgroup-wide reading (as before) takes both.
    assert _forged(forged) == 2
    killed = _kill_a_worker(fpm)  # the real master's message, after the forged ones
    real = f"child {killed} exited on signal 9 (SIGKILL)"

    def saw_the_real_one(seen: list[list[JournalEntry]]) -> bool:
        return any(real in t for t in _texts(seen[0]))

    (mine,) = _read_until([master], saw_the_real_one)
    # The master-only reading takes none of the forged lines, and the master's own message.
    assert _forged(mine) == 0
    assert [e.pid for e in mine if real in e.message.decode()] == [main]
    assert all(e.pid in (main, 1) for e in mine)
    assert fpm.main_pid(FPM) == main  # nothing signalled the master; it still serves


def test_after_a_restart_the_new_masters_messages_count_and_the_old_ones_last_words_too(
    fpm: BootedSystemd, followers: tuple[JournalFollower, JournalFollower]
) -> None:
    master, everything = followers
    old = fpm.main_pid(FPM)
    fpm.systemctl("restart", FPM, check=True)
    new = fpm.main_pid(FPM)
    assert new != old
    with _worker_attacking(fpm, new):  # the new master's PID, this time
        (forged,) = _read_until([everything], lambda s: _forged(s[0]) == 2)
    assert _forged(forged) == 2
    real = f"child {_kill_a_worker(fpm)} exited on signal 9 (SIGKILL)"
    (mine,) = _read_until([master], lambda s: any(real in t for t in _texts(s[0])))
    by_pid = {(e.pid, e.message.decode()) for e in mine}
    assert (new, next(t for t in _texts(mine) if real in t)) in by_pid
    assert any(pid == old and "Terminating" in text for pid, text in by_pid)
    assert _forged(mine) == 0


# --- the whole daemon, inside the booted systemd, following php8.2-fpm's journal -------------


def _daemon_inside(host: BootedSystemd, workdir: Path) -> DaemonProcess:
    """``remediator run`` inside the namespaces (its journal is that systemd's, its
    ``systemctl`` talks to it), on a config written under ``workdir`` (visible inside)."""
    cfg = config(
        workdir,
        sources={"fpm": {"type": "journal", "unit": FPM, "format": "php-fpm"}},
        services={},
        playbooks=[
            {
                "name": "fpm-crash",
                "when": {"error_cause": {"source": "fpm", "cause": "worker_crashed"}},
                "steps": [{"diagnose": {"snapshot": True}}],
                "limits": {"cooldown": "0s", "backoff": False},
            }
        ],
    )
    prefix = ["nsenter", f"--target={host.pid}", *NSENTER_FLAGS, "--"]
    return DaemonProcess(workdir, cfg, prefix=prefix)


def test_the_daemon_opens_no_incident_on_the_workers_forged_lines_and_one_on_the_masters(
    fpm: BootedSystemd, followers: tuple[JournalFollower, JournalFollower], tmp_path: Path
) -> None:
    _, everything = followers
    main = fpm.main_pid(FPM)
    workdir = tmp_path / "daemon"  # a directory the config loader trusts, unlike /tmp
    with _daemon_inside(fpm, workdir) as daemon:
        with _worker_attacking(fpm, main):
            (forged,) = _read_until([everything], lambda s: _forged(s[0]) == 2)
        assert _forged(forged) == 2  # in the unit's journal, as a cgroup-wide reading sees it
        real = f"child {_kill_a_worker(fpm)} exited on signal 9 (SIGKILL)"
        opened = daemon.wait_record("incident_opened", 15)
        # One incident, opened on the master's line: the forged ones neither opened one
        # before it nor count in its evidence.
        assert len(opened) == 1, opened
        lines = opened[0]["evidence"]["lines"]["fpm"]
        assert any(real in line for line in lines), lines
        assert not [line for line in lines if "4242" in line]
        daemon.wait_record("incident_closed", 15)
        assert daemon.is_running()
        assert fpm.run(["kill", "-0", str(main)]).returncode == 0  # the master was not signalled
        status = fpm.run(
            [sys.executable, "-m", "remediator", "-c", str(daemon.config_path), "status"]
        )
        assert status.returncode == 0, status.stdout + status.stderr
