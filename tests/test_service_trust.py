"""What a pid file and the process it names must be before a signal (remediator.services.trust).

The file is judged on its open descriptor; the process on what its owner cannot change (its
uids, ``/proc/PID/exe``) and on its command line when that names the config. Real processes:
a real PHP-FPM, a www-data process that calls itself php-fpm8.2.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from remediator.config import Service
from remediator.services.trust import MAX_PID_BYTES, MasterIdentity, in_cgroup, read_pid_file
from tests.attacker import UID, as_www_data_argv
from tests.stack import PHP_FPM, PhpFpm

ROOT_OR_ME = frozenset({0, os.geteuid()})


def _pid_file(tmp_path: Path, data: bytes, mode: int = 0o644) -> Path:
    path = tmp_path / "x.pid"
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("data", "pid"),
    [(b"4242\n", 4242), (b"4242", 4242), (b" 4242 \n", 4242), (b"", None), (b"\n", None)],
)
def test_a_plain_pid_file_is_read(tmp_path: Path, data: bytes, pid: int | None) -> None:
    read = read_pid_file(_pid_file(tmp_path, data), ROOT_OR_ME)
    assert (read.pid, read.problem) == (pid, "")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"1\n", "names PID 1"),
        (b"0\n", "names PID 0"),
        (b"-5\n", "does not hold a number"),
        (b"12abc\n", "does not hold a number"),
        (b"\xd9\xa3\n", "does not hold a number"),  # an Arabic-Indic digit: not ASCII
        (b"99999999\n", "names PID 99999999"),
        (b"9" * (MAX_PID_BYTES + 1), f"holds more than {MAX_PID_BYTES} bytes"),
    ],
)
def test_a_pid_file_with_junk_is_untrusted(tmp_path: Path, data: bytes, problem: str) -> None:
    read = read_pid_file(_pid_file(tmp_path, data), ROOT_OR_ME)
    assert read.pid is None and read.untrusted and problem in read.problem


def test_a_missing_pid_file_is_absent_not_untrusted(tmp_path: Path) -> None:
    read = read_pid_file(tmp_path / "none.pid", ROOT_OR_ME)
    assert (read.pid, read.absent, read.untrusted) == (None, True, False)


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "x.pid").symlink_to("/dev/zero")
    read = read_pid_file(tmp_path / "x.pid", ROOT_OR_ME)
    assert read.problem.endswith("is a symbolic link")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.pid")
    done: list[str] = []
    reader = threading.Thread(
        target=lambda: done.append(read_pid_file(tmp_path / "x.pid", ROOT_OR_ME).problem),
        daemon=True,
    )
    reader.start()
    reader.join(timeout=30)  # a deadline, not a timing: a blocking open never returns
    assert done and done[0].endswith("is a FIFO")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.pid").mkdir()
    assert read_pid_file(tmp_path / "x.pid", ROOT_OR_ME).problem.endswith("is a directory")


def test_a_pid_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = _pid_file(tmp_path, b"4242\n")
    os.chown(path, UID, UID)
    assert "is owned by www-data" in read_pid_file(path, ROOT_OR_ME).problem


def test_a_pid_file_others_may_write_is_refused(tmp_path: Path) -> None:
    path = _pid_file(tmp_path, b"4242\n", mode=0o666)
    assert "writable by group or others" in read_pid_file(path, ROOT_OR_ME).problem


# --- the process ------------------------------------------------------------------------------


def _fpm_service(fpm: PhpFpm, conf: Path | None = None) -> Service:
    return Service(
        kind="php-fpm",
        pid_file=fpm.pid_file,
        start=(PHP_FPM, "-y", str(conf or fpm.conf)),
    )


@pytest.fixture
def renamed() -> Iterator[int]:
    """A www-data process that calls itself php-fpm8.2."""
    code = "open('/proc/self/comm', 'w').write('php-fpm8.2'); print('', flush=True); input()"
    proc = subprocess.Popen(
        as_www_data_argv(["/usr/bin/python3", "-S", "-c", code]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"\n"
    try:
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.servers
def test_the_real_master_is_the_master(fpm: PhpFpm) -> None:
    pid = fpm.master_pid()
    assert pid is not None
    assert MasterIdentity.of(_fpm_service(fpm)).problem(pid) is None


@pytest.mark.servers
def test_a_master_of_another_config_is_not_ours(fpm: PhpFpm, tmp_path: Path) -> None:
    pid = fpm.master_pid()
    assert pid is not None
    problem = MasterIdentity.of(_fpm_service(fpm, tmp_path / "ours.conf")).problem(pid)
    assert problem is not None and "is not started with" in problem


@pytest.mark.servers
def test_a_worker_is_not_the_master(fpm: PhpFpm) -> None:
    worker = fpm.worker_pids()[0]
    problem = MasterIdentity.of(_fpm_service(fpm)).problem(worker)
    assert problem is not None  # www-data (nobody here), or not started with the config


def test_a_www_data_process_named_php_fpm_is_not_a_master(renamed: int, tmp_path: Path) -> None:
    assert psutil.Process(renamed).name() == "php-fpm8.2"
    svc = Service(kind="php-fpm", pid_file=tmp_path / "x.pid", start=(PHP_FPM, "-y", "/c"))
    problem = MasterIdentity.of(svc).problem(renamed)
    assert problem is not None and "runs as www-data" in problem


def test_a_root_process_of_another_program_is_not_a_master(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "600"])
    try:
        svc = Service(kind="php-fpm", pid_file=tmp_path / "x.pid", start=(PHP_FPM, "-y", "/c"))
        problem = MasterIdentity.of(svc).problem(proc.pid)
        assert problem is not None and "runs /usr/bin/sleep, not /usr/sbin/php-fpm8.2" in problem
    finally:
        proc.kill()
        proc.wait()


def test_cgroup_membership_is_read_from_proc() -> None:
    """(Inside a unit's cgroup under a real systemd: test_service_systemd.py.)"""
    own = Path("/proc/self/cgroup").read_text().splitlines()
    path = next(line.split(":", 2)[2] for line in own if line.startswith("0::"))
    assert in_cgroup(os.getpid(), path.rstrip("/") + "/elsewhere.service") is False
    assert in_cgroup(os.getpid(), "/") is False  # never a unit's cgroup
    if path != "/":
        assert in_cgroup(os.getpid(), path) is True
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert in_cgroup(gone.pid, path) is None
