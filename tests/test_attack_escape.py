"""Issue 9, the row "a probed server answering with escape sequences": what a hostile server
(or the code behind it) sends reaches the operator's terminal escaped, never raw.

A real server on loopback answers the daemon's real probe with ESC/OSC/BEL sequences, C1
controls (``\\x9b`` is a one-byte CSI) and bidi overrides in its status line, reason, headers and
body, in turn; it also answers the daemon's webhook with them; the step's real command prints
them. ``status`` and ``log`` then run as real processes (``python -m remediator``), and the
bytes they write to stdout and stderr are searched for every such character.
"""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog

from remediator import logs
from tests.e2e import DaemonProcess, config, probe
from tests.stack import wait_for

ESC = b"\x1b[2J\x1b]0;owned\x07"
C1 = b"\x9b31m"  # a raw byte: decoded as latin-1 by http.client, it is U+009B (CSI)
BIDI = "\u202egnp.exe".encode()  # right-to-left override, as UTF-8
HOSTILE = ESC + C1 + BIDI
_ANSWERS = (
    b"HTTP/1.1 " + HOSTILE + b"\r\n\r\n",  # a status line that is nothing but escapes
    b"HTTP/1.1 503 "
    + HOSTILE
    + b"\r\nX-Evil: "
    + HOSTILE
    + b"\r\nContent-Length: 15\r\n\r\n"
    + b"\x1b]0;owned\x07ok!!",  # a reason, a header and a body
    b"HTTP/9.9 " + HOSTILE + b"\r\n\r\n",  # an unknown protocol
)
_WEBHOOK = (
    b"HTTP/1.1 500 "
    + HOSTILE
    + b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "
    + str(len(HOSTILE) * 2).encode()
    + b"\r\n\r\n"
    + HOSTILE * 2
)
PRINTS = (
    "import sys; sys.stdout.buffer.write("
    + repr(HOSTILE + "\u2067 \u0085 \u009b".encode() + b"\xff")
    + "); sys.exit(1)"
)


def _raw(text: str) -> list[str]:
    """Every character that a terminal would act on or that reorders what it shows."""
    return [
        c
        for c in text
        if (ord(c) < 0x20 and c != "\n")
        or 0x7F <= ord(c) < 0xA0
        or c in "\u061c\u200e\u200f\u2028\u2029"
        or 0x202A <= ord(c) <= 0x202E
        or 0x2066 <= ord(c) <= 0x2069
    ]


class _Hostile(BaseHTTPRequestHandler):
    answers = itertools.cycle(_ANSWERS)

    def do_GET(self) -> None:
        self.wfile.write(next(self.answers))
        self.close_connection = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.wfile.write(_WEBHOOK)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's output is the daemon's."""


@pytest.fixture
def hostile_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def daemon(hostile_site: str, tmp_path: Path) -> Iterator[DaemonProcess]:
    cfg = config(
        tmp_path,
        sources={"site": probe(f"{hostile_site}/", interval="100ms")},
        services={},
        notifiers={"hook": {"url": f"{hostile_site}/hook", "timeout": "2s"}},
        playbooks=[
            {
                "name": "site-down",
                "when": {"probe_failing": {"probe": "site", "consecutive": 3}},
                "steps": [
                    {"command": {"argv": [sys.executable, "-c", PRINTS], "timeout": "10s"}},
                    {"notify": "hook"},
                ],
            }
        ],
    )
    with DaemonProcess(tmp_path, cfg) as running:
        yield running


def _cli(daemon: DaemonProcess, *argv: str) -> tuple[int, str]:
    """Run the CLI as a process: what it writes, as the terminal would get it (stdout+stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "remediator", "-c", str(daemon.config_path), *argv],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "surrogateescape")


def test_status_and_log_never_write_the_hostile_answers_raw(daemon: DaemonProcess) -> None:
    daemon.wait_record("incident_closed", 30)
    seen: set[str] = set()

    def every_answer_seen() -> bool:  # the probe's answers rotate: status shows the last one
        rc, out = _cli(daemon, "status")
        assert rc == 0, out
        assert _raw(out) == [], out
        seen.update(kind for kind in ("BadStatusLine", "status 503") if kind in out)
        return len(seen) == 2

    wait_for(every_answer_seen, 20, "status to show each hostile answer", interval=0.05)

    rc, out = _cli(daemon, "log")
    assert rc == 0, out
    assert _raw(out) == [], out
    assert "\\x1b]0;owned\\x07" in out and "\\x9b31m" in out and "\\u202e" in out
    assert "notify" in out and "HTTP 500" in out  # the webhook's answer, escaped too
    for argv in (["log", "--json"], ["status", "--json"]):
        rc, out = _cli(daemon, *argv)
        assert rc == 0, out
        assert _raw(out) == [], out
        for line in out.splitlines():
            json.loads(line)


def test_the_daemons_console_log_escapes_what_it_quotes(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    logs.setup("console", stream=stream)
    structlog.get_logger("t").warning(
        "notify_failed", error=("HTTP 500: " + HOSTILE.decode("latin-1")), nested={"a": "\x1b"}
    )
    out = stream.getvalue()
    assert _raw(out.rstrip("\n")) == [], out
    assert "HTTP 500: \\x1b[2J\\x1b]0;owned\\x07\\x9b31m" in out
