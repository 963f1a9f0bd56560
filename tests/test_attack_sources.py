"""Issue 9, item 8: a log source that www-data replaces by a FIFO, a directory or a symlink to
``/dev/zero`` is blind, never opened (so never blocking), and the daemon goes on.

The log lives in a directory www-data owns (an application's log directory, say). The attacker
(tests/attacker.py, really www-data) replaces the file while the daemon follows it. Each case
asserts that the source is reported blind with what it is, that the daemon is alive and still
runs an incident to its end, and that it did not swell.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from remediator.cli import main
from tests.attacker import as_www_data, as_www_data_argv, give_to_www_data
from tests.e2e import DaemonProcess, config, eventually
from tests.stack import make_workdir

NEVER = {"status_rate": {"source": "access", "status": 418, "at_least": 5}}
PLAYBOOK = {
    "name": "harmless",
    "when": NEVER,
    "steps": [{"command": ["/bin/true"], "verify": {"within": "200ms"}}],
    "limits": {"cooldown": "0s", "backoff": False},
    "on_exhausted": {"stop": False},
}
DEADLINE = 20.0
MAX_RSS = 300 * 1024 * 1024


@dataclass
class Followed:
    log: Path  # in www-data's directory
    daemon: DaemonProcess


@pytest.fixture
def followed(tmp_path: Path) -> Iterator[Followed]:
    logs = make_workdir("remediator-app-logs-")
    give_to_www_data(logs)
    log = logs / "access.log"
    log.touch()
    give_to_www_data(log)
    cfg = config(
        tmp_path / "daemon",
        sources={"access": {"type": "access_log", "path": str(log)}},
        services={},
        playbooks=[PLAYBOOK],
    )
    try:
        with DaemonProcess(tmp_path / "daemon", cfg) as daemon:
            yield Followed(log, daemon)
            print(daemon.report())
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def _status(daemon: DaemonProcess) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    main(["-c", str(daemon.config_path), "status", "--json"], out, err)
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


def _blind_then_alive(f: Followed, kind: str) -> None:
    """The source ends blind with ``kind`` in its reason; the daemon still runs an incident."""
    seen: list[dict[str, Any]] = []

    def blind() -> bool:
        seen[:] = [_status(f.daemon).get("sources", {}).get("access", {})]
        return seen[0].get("state") == "blind"

    eventually(blind, DEADLINE, "the source to be reported blind")
    assert kind in seen[0]["reason"], seen[0]
    assert f.daemon.is_running()
    out, err = io.StringIO(), io.StringIO()
    main(["-c", str(f.daemon.config_path), "trigger", "harmless"], out, err)
    f.daemon.wait_record("incident_closed", DEADLINE)
    assert f.daemon.is_running()
    assert psutil.Process(f.daemon.pid).memory_info().rss < MAX_RSS


def _ok(f: Followed) -> None:
    eventually(
        lambda: _status(f.daemon).get("sources", {}).get("access", {}).get("state") == "ok",
        DEADLINE,
        "the source to be followed",
    )


@pytest.fixture
def writer(followed: Followed) -> Iterator[subprocess.Popen[bytes]]:
    """www-data replaces the log by a FIFO and waits, in a blocking open, for a reader."""
    _ok(followed)
    as_www_data(["sh", "-c", f"rm -f {followed.log} && mkfifo -m 0644 {followed.log}"])
    proc = subprocess.Popen(
        as_www_data_argv(["sh", "-c", f"echo forged > {followed.log}"]),
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()  # setpriv execs sh: the PID is the writer's
        proc.wait()


def test_log_replaced_by_a_fifo_is_blind_and_never_opened(
    followed: Followed, writer: subprocess.Popen[bytes]
) -> None:
    _blind_then_alive(followed, "a FIFO")
    # Opening the FIFO to read would have let the writer's blocking open return.
    assert writer.poll() is None


def test_log_replaced_by_a_directory_is_blind(followed: Followed) -> None:
    _ok(followed)
    as_www_data(["sh", "-c", f"rm -f {followed.log} && mkdir {followed.log}"])
    _blind_then_alive(followed, "a directory")


def test_log_replaced_by_a_symlink_to_dev_zero_is_blind(followed: Followed) -> None:
    _ok(followed)
    as_www_data(["sh", "-c", f"ln -sf /dev/zero {followed.log}"])
    _blind_then_alive(followed, "a character device")
