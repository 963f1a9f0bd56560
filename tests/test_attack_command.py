"""Issue 9, item 6: a ``command`` action run by the real daemon gets exactly its minimal
environment, and every process it starts dies at the timeout, however it detached.

The command (a real program, run by ``remediator run`` through ``trigger --force``) records
its exec-time environment (``/proc/self/environ``) and then escapes the ways a shell script can:
a child that calls ``setsid`` and double-forks a ``sleep`` (re-parented away from the command),
a double-forked grandchild that ignores SIGTERM, and a plain background child. Each is checked
by PID after the action's timeout; a bystander process of the test's own is never touched.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from remediator.cli import main
from tests.e2e import DaemonProcess, config, only
from tests.stack import wait_for

PYTHON = "/usr/bin/python3"  # a root-owned program, as a command's argv[0] must be
CANARY = "canary-value-of-the-daemon"

# Run as: python3 ESCAPE OUT. Writes OUT (JSON) once every escapee is running, then hangs.
ESCAPE = r"""
import json, os, signal, sys, time

def environ():
    raw = open("/proc/self/environ", "rb").read().decode()
    return dict(kv.split("=", 1) for kv in raw.split("\0") if kv)

def detach(argv, ignore_term=False):
    # setsid in a child, fork the real process from it, let the child exit: the classic daemon
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        pid = os.fork()
        if pid == 0:
            if ignore_term:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(w, b"%d\n" % os.getpid())
            os.execv(argv[0], argv)
        os._exit(0)
    os.close(w)
    return int(os.read(r, 64))

sleeper = detach(["/bin/sleep", "300"])
stubborn = detach(
    ["/usr/bin/python3", "-c",
     "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"],
    ignore_term=True,
)
background = os.fork()
if background == 0:
    os.execv("/bin/sleep", ["sleep", "301"])
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump({"env": environ(), "leader": os.getpid(),
               "escaped": [sleeper, stubborn], "background": background}, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
"""


def _cli(daemon: DaemonProcess, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(["-c", str(daemon.config_path), *argv], out, err)
    return rc, out.getvalue(), err.getvalue()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def notify_socket() -> Iterator[Path]:
    """A real NOTIFY_SOCKET for the daemon, as systemd would give it (it must not leak).
    In a short private directory of its own: a socket path has at most 107 bytes."""
    home = Path(tempfile.mkdtemp(prefix="remediator-notify-"))
    path = home / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    done = threading.Event()

    def drain() -> None:  # a full queue would block the daemon's sd_notify
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                sock.recv(4096)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    yield path
    done.set()
    reader.join()
    sock.close()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process of the test's own, in a session of its own: nothing may signal it."""
    proc = subprocess.Popen(["/bin/sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _daemon(tmp_path: Path, step: dict[str, Any]) -> DaemonProcess:
    access = tmp_path / "access.log"
    access.touch()
    cfg = config(
        tmp_path,
        sources={"access": {"type": "access_log", "path": str(access)}},
        services={},
        playbooks=[
            {
                "name": "escape",
                "when": {"status_rate": {"source": "access", "status": 418, "at_least": 5}},
                "steps": [step],
                "limits": {"cooldown": "0s", "backoff": False},
            }
        ],
    )
    return DaemonProcess(tmp_path, cfg)


def test_the_real_daemon_kills_every_descendant_and_passes_only_the_minimal_environment(
    tmp_path: Path,
    notify_socket: Path,
    bystander: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The daemon's own environment holds what a service manager and an admin's shell give it.
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket))
    monkeypatch.setenv("AWS_CANARY_ACCESS_KEY", CANARY)
    monkeypatch.setenv("LD_PRELOAD", "")
    script = tmp_path / "escape.py"
    script.write_text(ESCAPE)
    out = tmp_path / "escapees.json"
    step = {
        "command": {
            "argv": [PYTHON, str(script), str(out)],
            "timeout": "2s",
            "env": {"CACHE_DIR": "/var/cache/site", "GREETING": "{incident} stays literal"},
        },
        "verify": {"within": "500ms"},
    }
    with _daemon(tmp_path, step) as daemon:
        rc, text, err = _cli(daemon, "trigger", "escape", "--force", "--reason", "drill")
        assert (rc, err) == (1, ""), text  # the step failed: it timed out
        seen = json.loads(out.read_text())
        escapees = [seen["leader"], *seen["escaped"], seen["background"]]
        wait_for(lambda: all(_gone(p) for p in escapees), 5, "every escapee gone", 0.02)

        result = only(daemon.records("action_result"))
        incident = result["incident"]
        assert result["outcome"] == "failed"
        assert "timed out after 2s" in result["reason"]
        # exactly these: the setsid'd middle children had exited (zombies are not signalled)
        assert {k["pid"] for k in result["details"]["killed"]} == set(escapees)
        assert "survivors" not in result["details"]
        assert result["details"]["env"] == ["CACHE_DIR", "GREETING"]

        assert seen["env"] == {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "REMEDIATOR_PLAYBOOK": "escape",
            "REMEDIATOR_INCIDENT": incident,
            "CACHE_DIR": "/var/cache/site",
            "GREETING": "{incident} stays literal",
        }
        assert CANARY not in json.dumps(daemon.records())

        # Nothing else was signalled; the daemon is alive and answers.
        assert bystander.poll() is None
        assert daemon.is_running()
        rc, text, _ = _cli(daemon, "status")
        assert rc == 0, text


def test_a_command_that_exits_in_time_leaves_its_daemon_running_and_named(
    tmp_path: Path, bystander: subprocess.Popen[bytes]
) -> None:
    started = tmp_path / "started.pid"
    script = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        open({str(started)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
        f"        os.rename({str(started)!r} + '.tmp', {str(started)!r})\n"
        "        os.closerange(0, 3)\n"
        "        os.execv('/bin/sleep', ['sleep', '300'])\n"
        "    os._exit(0)\n"
        f"while not os.path.exists({str(started)!r}): pass\n"
    )
    step = {
        "command": {"argv": [PYTHON, "-c", script], "timeout": "10s"},
        "verify": {"within": "500ms"},
    }
    with _daemon(tmp_path, step) as daemon:
        rc, text, err = _cli(daemon, "trigger", "escape", "--force", "--reason", "drill")
        assert (rc, err) == (1, ""), text  # ran, exited 0, but nothing to verify it by
        pid = int(started.read_text())
        try:
            result = only(daemon.records("action_result"))
            assert result["outcome"] == "ok"
            assert pid in [p["pid"] for p in result["details"]["left_running"]]
            assert not _gone(pid)  # a daemon a command starts on purpose is its business
        finally:
            os.kill(pid, signal.SIGKILL)
        assert bystander.poll() is None and daemon.is_running()
