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
from typing import Any

import requests

from tests.closing import Closing
from tests.stack import free_port, is_alive, tail, wait_for

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with
    ``openssl req`` / ``x509`` in ``root``; ``other_ca`` signed none of them."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def server(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server-key.pem"

    @property
    def client(self) -> Path:
        return self.root / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.root / "client-key.pem"

    @property
    def other_ca(self) -> Path:
        return self.root / "other-ca.pem"

    @classmethod
    def make(cls, root: Path) -> Pki:
        pki = cls(root)
        root.mkdir(parents=True, exist_ok=True)
        for name in ("ca", "other-ca"):
            _openssl(
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN=remediator test {name}",
                "-keyout", root / f"{name}-key.pem", "-out", root / f"{name}.pem",
            )  # fmt: skip
        ext = root / "san.ext"
        ext.write_text("subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth, clientAuth\n")
        for name, cn in (("server", "127.0.0.1"), ("client", "web-1")):
            _openssl(
                "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                "-keyout", root / f"{name}-key.pem", "-out", root / f"{name}.csr",
            )  # fmt: skip
            _openssl(
                "x509", "-req", "-in", root / f"{name}.csr", "-days", "2",
                "-CA", pki.ca, "-CAkey", root / "ca-key.pem", "-CAcreateserial",
                "-extfile", ext, "-out", root / f"{name}.pem",
            )  # fmt: skip
        for key in root.glob("*-key.pem"):
            key.chmod(0o600)
        return pki


@dataclass
class Member:
    name: str
    client: int
    peer: int
    data: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client}"


class EtcdCluster(Closing):
    """``size`` members forming one cluster; ``endpoints`` for clients."""

    def __init__(self, size: int = 1, workdir: Path | None = None, *, tls: bool = False) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="remediator-etcd-"))
        self.pki = Pki.make(self.workdir / "pki") if tls else None
        self.members = [
            Member(
                f"m{i}",
                free_port(),
                free_port(),
                self.workdir / f"m{i}.data",
                self.workdir / f"m{i}.log",
                scheme="https" if tls else "http",
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
        if self.pki is not None:  # what Debian's ETCD_CERT_FILE & co. say in /etc/default/etcd
            argv += [
                "--cert-file", str(self.pki.server),
                "--key-file", str(self.pki.server_key),
                "--trusted-ca-file", str(self.pki.ca),
                "--client-cert-auth",
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
                resp = requests.get(f"{m.url}/health", timeout=0.5, **self.client_tls())
                if resp.ok and resp.json().get("health") == "true":
                    return True
            except (requests.RequestException, ValueError):
                continue
        return False

    def client_tls(self) -> dict[str, Any]:
        """``requests``' TLS arguments for a client with the test's certificate."""
        if self.pki is None:
            return {}
        return {
            "verify": str(self.pki.ca),
            "cert": (str(self.pki.client), str(self.pki.client_key)),
        }

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
