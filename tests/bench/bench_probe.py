"""CPU per HTTP probe: remediator's Prober (stdlib http.client) beside a bare ``requests.get``,
both against the same local HTTP server, in the same run. Run:
``python -m tests.bench.bench_probe`` (about 10 s)."""

from __future__ import annotations

import http.server
import statistics
import threading
import time

import requests

from remediator.config import ProbeSource
from remediator.sources.probe import Prober

ROUNDS = 7
PROBES = 300


class _Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _cpu_per_call(fn: object) -> float:
    """Median over ROUNDS of this thread's CPU time per call, in ms (the server runs in
    another thread; thread_time counts only the caller's)."""
    per = []
    for _ in range(ROUNDS):
        t = time.thread_time()
        for _ in range(PROBES):
            fn()  # type: ignore[operator]
        per.append((time.thread_time() - t) / PROBES * 1000)
    return statistics.median(per)


def main() -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/health"
    try:
        prober = Prober("site", ProbeSource(url=url, expect_body="ok"))
        assert prober.run().ok
        ours = _cpu_per_call(prober.run)
        base = _cpu_per_call(lambda: requests.get(url, timeout=1).content)
    finally:
        srv.shutdown()
    print("| client | CPU per probe (median) | ratio |")
    print("|---|---:|---:|")
    print(f"| `requests.get` (baseline) | {base:.3f} ms | 100% |")
    print(
        f"| remediator Prober (http.client, deadline, body check) | {ours:.3f} ms | "
        f"{ours / base:.0%} |"
    )
    print(
        f"\nmedians of {ROUNDS} rounds of {PROBES} probes; at one probe per second the "
        f"Prober costs {ours / 10:.3f} % of a core"
    )


if __name__ == "__main__":
    main()
