"""A real DNS server on loopback for tests: Debian's dnsmasq, answering from a hosts file.

``Dnsmasq(tmp)`` serves the names of ``example.test`` written with :meth:`set` (a name not
written is NXDOMAIN: the zone is ``--local``), on 127.0.0.1 and a free port, over UDP and TCP.
:meth:`set` rewrites the file and sends SIGHUP (dnsmasq reloads it), then waits until the
server answers the new records. Ended by its PID, nothing else.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from remediator.sources.dnswire import QType, query
from tests.closing import Closing
from tests.stack import wait_for

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
ZONE = "example.test"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (asked of the kernel, then released)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


class Dnsmasq(Closing):
    def __init__(self, workdir: Path, cnames: Sequence[tuple[str, str]] = ()) -> None:
        self.workdir = workdir
        self.hosts = workdir / "dns-hosts"
        self.port = free_port()
        self.cnames = list(cnames)
        self.proc: subprocess.Popen[bytes] | None = None
        self.records: dict[str, tuple[str, ...]] = {}
        self.query_log = workdir / "dnsmasq-queries.log"

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._write()
        argv = [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={self.hosts}",
            "--listen-address=127.0.0.1",
            f"--port={self.port}",
            "--bind-interfaces",
            f"--local=/{ZONE}/",
            "--user=root",  # the hosts file under the test's private tmp stays readable
            "--log-queries",
            f"--log-facility={self.query_log}",
            *(f"--cname={alias},{target}" for alias, target in self.cnames),
        ]
        log = (self.workdir / "dnsmasq.log").open("ab")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        wait_for(self._answers, 5.0, "dnsmasq to answer", interval=0.02)
        return self

    def set(self, records: Mapping[str, Sequence[str]]) -> None:
        """Serve exactly these names (each with its IPv4 addresses); others are NXDOMAIN."""
        self.records = {n: tuple(a) for n, a in records.items()}
        self._write()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)
            wait_for(self._answers, 5.0, "dnsmasq to serve the new records", interval=0.02)

    def queries(self, name: str) -> int:
        """How many A questions for ``name`` it was asked (its own query log)."""
        try:
            text = self.query_log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count(f"query[A] {name} from")

    def _write(self) -> None:
        lines = [f"{a} {name}" for name, addrs in self.records.items() for a in addrs]
        tmp = self.hosts.with_suffix(".new")
        tmp.write_text("".join(f"{line}\n" for line in lines))
        tmp.replace(self.hosts)

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {(self.workdir / 'dnsmasq.log').read_text()}")
        probe = f"probe-absent.{ZONE}"
        if query(probe, QType.A, ("127.0.0.1", self.port), 0.5).rcode != "NXDOMAIN":
            return False
        for name, addrs in self.records.items():
            if query(name, QType.A, ("127.0.0.1", self.port), 0.5).addresses != tuple(
                sorted(addrs)
            ):
                return False
        return True

    def __enter__(self) -> Self:
        return self.start()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Silent(Closing):
    """A UDP and TCP socket on loopback that never answers: a DNS server that times out."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = int(self.udp.getsockname()[1])

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.udp.close()
