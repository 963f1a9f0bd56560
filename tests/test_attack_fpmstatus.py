"""A compromised PHP app (www-data) forges PHP-FPM's status to set off a restart.

Debian's /run/php belongs to www-data: the app can remove the pool's socket and bind its own
there, answering a status page that says the pool is saturated (a listen queue of 50). The
daemon reads the status over that socket with an ``fpm_saturated`` playbook that restarts
PHP-FPM. The socket's listener is not root (``SO_PEERCRED``), so the answer is refused before a
byte is sent, with the reason in ``status``; nothing is signalled, no incident opens, the
daemon stays alive and its budget and breaker are untouched.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from remediator.cli import main
from remediator.sources import fastcgi
from remediator.sources.fpmstatus import parse
from tests.attacker import UID, as_www_data_argv, give_to_www_data
from tests.e2e import DaemonProcess, config, eventually, fpm_service
from tests.stack import PhpFpm

DEADLINE = 20.0
FORGED = (
    '{"pool":"www","process manager":"static","start time":1,"start since":1,'
    '"accepted conn":1,"listen queue":50,"max listen queue":50,"listen queue len":511,'
    '"idle processes":0,"active processes":1,"total processes":2,"max active processes":2,'
    '"max children reached":9,"slow requests":0,"processes":['
    '{"pid":1,"state":"Running","request duration":5,"request uri":"/fpm-status?json&full"}]}'
)
# The attacker's server: plain python3, run as www-data by the kernel's rules (setpriv); not
# the venv's (in a checkout under /root, 0700, www-data cannot enter it).
PYTHON = "/usr/bin/python3"
FAKE_POOL = f"""
import os, socket, struct, sys
body = b"Content-Type: application/json\\r\\n\\r\\n" + {FORGED.encode()!r}
head = struct.Struct("!BBHHBx")
answer = head.pack(1, 6, 1, len(body), 0) + body + head.pack(1, 3, 1, 8, 0) + bytes(8)
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
os.chmod(path, 0o666)
srv.listen(64)
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    try:
        conn.settimeout(2)
        conn.recv(65536)
        conn.sendall(answer)
    except OSError:
        pass
    conn.close()
"""


@pytest.fixture
def hijacked(fpm: PhpFpm) -> Iterator[subprocess.Popen[str]]:
    """www-data owns the socket's directory (as /run/php), removes the pool's socket and binds
    its own in its place."""
    give_to_www_data(fpm.dir)
    fpm.socket.unlink()
    proc = subprocess.Popen(
        as_www_data_argv([PYTHON, "-c", FAKE_POOL, str(fpm.socket)]),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        yield proc
    finally:
        proc.kill()  # setpriv execs python: the PID is the attacker's server
        proc.wait()


def _status(daemon: DaemonProcess) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    main(["-c", str(daemon.config_path), "status", "--json"], out, err)
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


def test_the_fake_pool_would_be_believed_without_the_listener_check(
    fpm: PhpFpm, hijacked: subprocess.Popen[str]
) -> None:
    """What the attacker's socket says, read without the check: a saturated pool."""
    params = {"SCRIPT_NAME": "/fpm-status", "QUERY_STRING": "json&full"}
    answer = fastcgi.request(str(fpm.socket), params, timeout=2, max_bytes=1 << 20)
    body = answer.stdout.partition(b"\r\n\r\n")[2]
    assert parse(body, "/fpm-status").listen_queue == 50


def test_a_status_forged_on_a_replaced_socket_restarts_nothing(
    tmp_path: Path, fpm: PhpFpm, hijacked: subprocess.Popen[str]
) -> None:
    master = fpm.master()
    assert master is not None
    workers = set(fpm.worker_pids())
    cfg = config(
        tmp_path / "daemon",
        sources={
            "pool": {
                "type": "fpm_status",
                "socket": str(fpm.socket),
                "path": "/fpm-status",
                "interval": "100ms",
            }
        },
        services={"fpm": fpm_service(fpm)},
        playbooks=[
            {
                "name": "pool-saturated",
                "when": {"fpm_saturated": {"source": "pool", "lasting": "300ms"}},
                "steps": [{"restart": "fpm"}],
                "limits": {"cooldown": "0s", "backoff": False},
            }
        ],
    )
    with DaemonProcess(tmp_path / "daemon", cfg) as daemon:
        seen: dict[str, Any] = {}

        def refused() -> bool:
            # (no status.json yet for a moment after daemon_ready: not running, no sources)
            seen.update(_status(daemon).get("sources", {}).get("pool", {}))
            return int(seen.get("consecutive_failures", 0)) >= 10  # a second of reads, refused

        eventually(refused, DEADLINE, "the forged status to be refused ten times")
        assert seen["state"] == "failing"
        assert f"listener runs as uid {UID}, not root" in seen["reason"]
        status = _status(daemon)
        assert status["incident"] is None
        assert status["playbooks"]["pool-saturated"]["failures_in_a_row"] == 0
        assert status["playbooks"]["pool-saturated"]["ready"]
        assert daemon.is_running()
        records = [json.loads(line) for line in daemon.action_log.read_text().splitlines()]
        assert not [r for r in records if r.get("incident")]
    # nothing was signalled: the same master and workers, alive
    assert fpm.master() is not None and fpm.master_pid() == master.pid
    assert master.status() != psutil.STATUS_ZOMBIE
    assert set(fpm.worker_pids()) == workers
    assert hijacked.poll() is None
