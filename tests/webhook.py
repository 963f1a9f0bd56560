"""A real webhook receiver on loopback: records each POST (path, headers, JSON body)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOOK_PATH = "/hooks/T000/B000/s3cr3t"


class Receiver(ThreadingHTTPServer):
    """Records each POST (path, headers, JSON body) and answers ``status``."""

    daemon_threads = True

    def __init__(self, status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = status
        self.received: list[tuple[str, dict[str, str], Any]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = HOOK_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, dict(self.headers), json.loads(body)))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"nope :(")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def receiving(status: int = 200) -> Iterator[Receiver]:
    """A :class:`Receiver` serving in a thread until the block ends."""
    server = Receiver(status)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
