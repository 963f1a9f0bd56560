"""HTTP health probes: one GET with a hard deadline, judged against the expected status/body.

Uses the standard library's ``http.client``: it costs a fraction of the CPU of ``requests`` per
probe (measured in ``tests/bench/bench_probe.py``), and a probe needs nothing more. A slow or
hanging endpoint is a failure at the deadline, never a wait; the deadline bounds the whole
exchange (connect, headers, body), not each read.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.parse
from dataclasses import dataclass

from remediator.config import ProbeSource

_MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe."""

    ok: bool
    status: int | None
    elapsed: float
    detail: str


class Prober:
    """Runs one configured probe; reuses nothing between probes (a fresh connection each time,
    as a new visitor would make)."""

    def __init__(self, name: str, spec: ProbeSource) -> None:
        self.name = name
        self.spec = spec
        parts = urllib.parse.urlsplit(spec.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"User-Agent": "remediator-probe", "Connection": "close"}
        if spec.host:
            self._headers["Host"] = spec.host
        self._expect_body = spec.expect_body.encode() if spec.expect_body else None

    def run(self) -> ProbeResult:
        start = time.monotonic()
        deadline = start + self.spec.timeout
        conn: http.client.HTTPConnection
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.spec.timeout)
        try:
            conn.request("GET", self._path, headers=self._headers)
            _set_timeout(conn, deadline)
            resp = conn.getresponse()
            body = b""
            if self._expect_body is not None:
                while len(body) < _MAX_BODY:
                    _set_timeout(conn, deadline)
                    chunk = resp.read1(_MAX_BODY - len(body))
                    if not chunk:
                        break
                    body += chunk
                    if self._expect_body in body:
                        break
            status = resp.status
        except TimeoutError:
            return self._result(False, None, start, f"timed out after {self.spec.timeout:g}s")
        except (OSError, http.client.HTTPException) as exc:
            return self._result(False, None, start, _describe(exc))
        finally:
            conn.close()
        if status not in self.spec.expect_status:
            return self._result(False, status, start, f"status {status}")
        if self._expect_body is not None and self._expect_body not in body:
            return self._result(False, status, start, "expected text not in body")
        return self._result(True, status, start, f"status {status}")

    @staticmethod
    def _result(ok: bool, status: int | None, start: float, detail: str) -> ProbeResult:
        return ProbeResult(ok, status, time.monotonic() - start, detail)


def _set_timeout(conn: http.client.HTTPConnection, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    if conn.sock is not None:
        conn.sock.settimeout(remaining)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed: {exc.strerror}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed without a response"
    return f"{type(exc).__name__}: {exc}"
