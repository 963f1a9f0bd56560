"""A real etcd cluster on loopback (Debian's ``etcd-server``), for the fleet tests and bench.

Each member runs ``etcd`` with its own data dir under a temp dir, on free ports, in its own
process group; :meth:`EtcdCluster.kill` and :meth:`EtcdCluster.restart` act on one member by
its PID, :meth:`close` ends them all.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.closing import Closing
from tests.stack import free_port, is_alive, tail, wait_for

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


@dataclass
class Member:
    name: str
    client: int
    peer: int
    data: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client}"


class EtcdCluster(Closing):
    """``size`` members forming one cluster; ``endpoints`` for clients."""

    def __init__(self, size: int = 1, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="remediator-etcd-"))
        self.members = [
            Member(
                f"m{i}",
                free_port(),
                free_port(),
                self.workdir / f"m{i}.data",
                self.workdir / f"m{i}.log",
            )
            for i in range(size)
        ]
        self.token = f"remediator-test-{os.getpid()}-{time.monotonic_ns()}"

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        for m in self.members:
            self._spawn(m, "new")
        wait_for(self.healthy, timeout, "the etcd cluster to have a leader")
        return self

    def _spawn(self, m: Member, state: str) -> None:
        cluster = ",".join(f"{x.name}=http://127.0.0.1:{x.peer}" for x in self.members)
        argv = [
            ETCD,
            "--name", m.name,
            "--data-dir", str(m.data),
            "--listen-client-urls", m.url,
            "--advertise-client-urls", m.url,
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer}",
            "--initial-cluster", cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            # loopback: short heartbeats, a quick election when a member dies
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        with m.log.open("ab") as out:
            m.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def healthy(self) -> bool:
        """Some live member answers /health with a leader."""
        for m in self.members:
            if m.proc is None or m.proc.poll() is not None:
                continue
            try:
                resp = requests.get(f"{m.url}/health", timeout=0.5)
                if resp.ok and resp.json().get("health") == "true":
                    return True
            except (requests.RequestException, ValueError):
                continue
        return False

    def kill(self, index: int) -> None:
        """SIGKILL one member (by its PID)."""
        m = self.members[index]
        if m.proc is not None and m.proc.poll() is None:
            os.killpg(m.proc.pid, signal.SIGKILL)
            m.proc.wait(timeout=10)
        m.proc = None

    def kill_all(self) -> None:
        for i in range(len(self.members)):
            self.kill(i)

    def restart(self, index: int) -> None:
        """Start a killed member again on its data dir."""
        m = self.members[index]
        if m.proc is None:
            self._spawn(m, "existing")

    def restart_all(self, timeout: float = 20.0) -> None:
        for i in range(len(self.members)):
            self.restart(i)
        wait_for(self.healthy, timeout, "the etcd cluster to have a leader again")

    def alive(self, index: int) -> bool:
        m = self.members[index]
        return m.proc is not None and is_alive(m.proc.pid)

    def logs(self) -> str:
        return "\n".join(f"--- {m.name} ---\n{tail(m.log)}" for m in self.members)

    def close(self) -> None:
        self.kill_all()
        shutil.rmtree(self.workdir, ignore_errors=True)
