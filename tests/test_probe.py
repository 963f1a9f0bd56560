"""HTTP probes against real servers on loopback: healthy, wrong status, wrong body, refused,
and endpoints that hang or drip (a failure at the deadline, never a longer wait)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from remediator.config import ProbeSource
from remediator.sources.probe import Prober


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/hang":
            time.sleep(5)
        if self.path == "/drip":  # headers at once, then the body one byte at a time
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
            return
        status = 503 if self.path == "/down" else 200
        body = b"pong" if self.path == "/ping" else b"nope"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def probe(url: str, **kw: object) -> Prober:
    return Prober("site", ProbeSource(url=url, **kw))  # type: ignore[arg-type]


def test_healthy_endpoint_with_expected_body_passes(server: str) -> None:
    r = probe(server + "/ping", expect_body="pong").run()
    assert r.ok and r.status == 200


def test_unexpected_status_fails_with_the_status(server: str) -> None:
    r = probe(server + "/down").run()
    assert not r.ok and r.status == 503 and r.detail == "status 503"


def test_missing_body_text_fails(server: str) -> None:
    r = probe(server + "/other", expect_body="pong").run()
    assert not r.ok and r.detail == "expected text not in body"


def test_expected_status_list_accepts_any_of_them(server: str) -> None:
    assert probe(server + "/down", expect_status=(200, 503)).run().ok


def test_refused_connection_fails_at_once() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = probe(f"http://127.0.0.1:{port}/", timeout=30.0).run()
    # refused, not "timed out after 30s": it did not wait out its timeout (how fast: make bench)
    assert not r.ok and r.detail == "connection refused"


def test_hanging_endpoint_fails_at_the_timeout(server: str) -> None:
    r = probe(server + "/hang", timeout=0.3, interval=1.0).run()
    assert not r.ok
    assert r.detail == "timed out after 0.3s"  # /hang answers 200 after 5 s: it gave up first
    assert r.elapsed > 0.25  # and not before its timeout


def test_dripping_body_is_cut_off_at_the_overall_deadline(server: str) -> None:
    r = probe(server + "/drip", timeout=0.5, interval=1.0, expect_body="never").run()
    assert not r.ok
    # every byte comes within 50 ms, the whole body in 5 s: only an overall deadline cuts it
    assert r.detail == "timed out after 0.5s"
