"""The side-effect seam: real commands and process groups, and a dry run that changes nothing."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from remediator.system import DryRunSystem, System, run_command

# A leader that ignores TERM and leaves a grandchild behind, the worst case for a timeout.
STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""


def test_command_output_and_status_are_recorded() -> None:
    r = run_command([sys.executable, "-c", "import sys; print('hi'); sys.exit(3)"], 10)
    assert (r.returncode, r.output, r.timed_out, r.ok) == (3, "hi\n", False, False)


def test_missing_program_is_a_result_not_an_exception() -> None:
    r = run_command(["/nonexistent/program"], 5)
    assert r.returncode == 127
    assert "cannot run /nonexistent/program" in r.output


def test_timeout_kills_the_whole_process_group_even_if_it_ignores_term() -> None:
    r = run_command([sys.executable, "-c", STUBBORN], 0.5)
    assert r.timed_out and r.returncode is None  # STUBBORN ignores TERM: it took a KILL
    grandchild = int(r.output.split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        os.kill(grandchild, signal.SIGKILL)
        raise AssertionError("the grandchild outlived the timeout")


def test_shell_metacharacters_are_plain_arguments(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    evil = f"/index.php?x=$(touch {canary}); touch {canary} `touch {canary}`"
    r = run_command(["/bin/echo", evil], 5)
    assert r.output == evil + "\n"
    assert not canary.exists()


def test_dry_run_records_changes_and_makes_none(tmp_path: Path) -> None:
    target = tmp_path / "pool.conf"
    target.write_text("pm.max_children = 5\n")
    canary = tmp_path / "ran"
    sleeper = psutil.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dry = DryRunSystem()
        r = dry.change(["/usr/bin/touch", str(canary)], 5)
        dry.send_signal(sleeper.pid, signal.SIGTERM)
        dry.replace_file(target, b"pm.max_children = 50\n")
        assert r.ok and r.dry_run
        assert not canary.exists()
        assert sleeper.is_running() and sleeper.status() != psutil.STATUS_ZOMBIE
        assert target.read_text() == "pm.max_children = 5\n"
        assert [w.kind for w in dry.would] == ["command", "signal", "write"]
        assert dry.would[0].detail["argv"] == ["/usr/bin/touch", str(canary)]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_replace_file_keeps_mode_and_owner(tmp_path: Path) -> None:
    target = tmp_path / "www.conf"
    target.write_text("old\n")
    target.chmod(0o604)
    os.chown(target, 65534, 65534)
    System().replace_file(target, b"new\n")
    st = target.stat()
    assert target.read_text() == "new\n"
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o604, 65534, 65534)


def _sleeper() -> psutil.Popen:
    return psutil.Popen([sys.executable, "-c", "import time; time.sleep(30)"])


def test_a_checked_signal_reaches_the_process_that_passed_its_check() -> None:
    proc = _sleeper()
    try:
        seen: list[int] = []

        def check(pid: int) -> str | None:
            seen.append(pid)
            return None

        assert System().send_signal_checked(proc.pid, signal.SIGTERM, check) is None
        assert proc.wait(10) == -signal.SIGTERM
        assert seen == [proc.pid]
    finally:
        if proc.is_running():
            proc.kill()
            proc.wait()


def test_a_checked_signal_is_not_sent_when_the_check_fails() -> None:
    proc = _sleeper()
    try:
        why = System().send_signal_checked(proc.pid, signal.SIGKILL, lambda pid: "not ours")
        assert why == "not ours"
        assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_dies_after_its_check_is_not_signalled_by_its_pid() -> None:
    # What a PID reused between the check and the signal needs first: the judged process
    # dies (and is reaped) after the check. The signal is then refused as gone; nothing that
    # takes the PID next can get it.
    proc = _sleeper()

    def check(pid: int) -> str | None:
        proc.kill()
        proc.wait()  # reaped: the PID is free for anyone
        return None

    with pytest.raises(ProcessLookupError):
        System().send_signal_checked(proc.pid, signal.SIGTERM, check)


def test_a_checked_signal_in_a_dry_run_checks_and_records_only() -> None:
    proc = _sleeper()
    try:
        dry = DryRunSystem()
        assert dry.send_signal_checked(proc.pid, signal.SIGTERM, lambda pid: None) is None
        assert dry.send_signal_checked(proc.pid, signal.SIGTERM, lambda pid: "no") == "no"
        assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        assert [(w.kind, w.detail["pid"]) for w in dry.would] == [("signal", proc.pid)]
    finally:
        proc.kill()
        proc.wait()
