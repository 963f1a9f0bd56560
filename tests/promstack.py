"""A real Prometheus and a real Alertmanager (Debian's packages) on loopback, for the tests.

Each runs in its own session with its config and storage under a temp directory, on a free
high port, and is ended by its process group (SIGTERM, then SIGKILL). Alertmanager's cluster
listener is switched off (it would bind 0.0.0.0:9094 otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.closing import Closing
from tests.stack import free_port, wait_for

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"
PROMTOOL = "promtool"
READY_TIMEOUT = 20.0


def missing() -> str | None:
    """Why the servers cannot run here (the Debian packages are missing), or None."""
    for program in (PROMETHEUS, ALERTMANAGER, PROMTOOL):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian: apt-get install prometheus prometheus-alertmanager)"
    return None


class _Server(Closing):
    """A process in its own session, answering HTTP on 127.0.0.1:``port``."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        self.port = free_port()
        self.log = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, argv: list[str]) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.workdir,
            )

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.log.name} exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(ready, READY_TIMEOUT, f"{self.log.name} to be ready", interval=0.05)

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
                return


class Prometheus(_Server):
    """Scrapes ``targets`` (host:port) every ``interval``; queried through its HTTP API."""

    def __init__(self, workdir: Path, targets: list[str], interval: str = "500ms") -> None:
        super().__init__(workdir, "prometheus")
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": "remediator",
                    "scrape_interval": interval,
                    "scrape_timeout": interval,
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        conf = self.workdir / "prometheus.yml"
        conf.write_text(yaml.safe_dump(config))
        self._start(
            [
                PROMETHEUS,
                f"--config.file={conf}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ]
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (each ``{"metric": {...}, "value": [t, "v"]}``)."""
        answer = self.get("/api/v1/query", query=expr)
        if answer.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {answer}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of ``expr``, or None when it has no sample."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


class Alertmanager(_Server):
    """Routes every alert, grouped by incident, to a webhook ``receiver`` at once, and its
    resolution within a quarter of a second (``send_resolved``)."""

    def __init__(self, workdir: Path, receiver: str) -> None:
        super().__init__(workdir, "alertmanager")
        config = {
            "route": {
                "receiver": "hook",
                "group_by": ["incident"],
                "group_wait": "0s",
                "group_interval": "250ms",
                "repeat_interval": "1h",
            },
            "receivers": [
                {"name": "hook", "webhook_configs": [{"url": receiver, "send_resolved": True}]}
            ],
        }
        conf = self.workdir / "alertmanager.yml"
        conf.write_text(yaml.safe_dump(config))
        self._start(
            [
                ALERTMANAGER,
                f"--config.file={conf}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ]
        )
