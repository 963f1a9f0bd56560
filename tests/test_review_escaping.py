"""Outside text through the whole daemon to `status` and `log`, escaped on the way out.

A real HTTP server on loopback answers the daemon's real probe with terminal escape sequences
(what a compromised site behind the probe could send), a forged line is appended to a real error
log (www-data can write nginx's logs), and the step's real command prints escape sequences too.
"""

from __future__ import annotations

import io
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from remediator.cli import main
from tests.e2e import DaemonProcess, config, probe
from tests.stack import wait_for

HOSTILE = b"\x1b[2J\x1b]0;owned\x07"
SHOWN = "\\x1b[2J\\x1b]0;owned\\x07"
FORGED = (
    b"2026/11/24 10:26:03 [error] 7#7: *1 connect() to unix:/run/php/fpm.sock failed "
    b"(111: Connection refused) while connecting to upstream, client: " + HOSTILE + b"\n"
)
PRINTS = "import sys; sys.stdout.write(chr(27) + ']0;step' + chr(7)); sys.exit(1)"


class _Hostile(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.wfile.write(b"HTTP/1.1 " + HOSTILE + b"\r\n\r\n")
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's output is the daemon's."""


@pytest.fixture
def hostile_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def daemon(hostile_site: str, tmp_path: Path) -> Iterator[DaemonProcess]:
    errors = tmp_path / "error.log"
    errors.touch()
    cfg = config(
        tmp_path,
        sources={
            "site": probe(hostile_site, interval="250ms"),
            "errors": {"type": "error_log", "path": str(errors), "format": "nginx-error"},
        },
        services={},
        playbooks=[
            {
                "name": "site-down",
                "when": {
                    "all": [
                        {"probe_failing": {"probe": "site", "consecutive": 2}},
                        {"error_cause": {"source": "errors", "cause": "upstream_refused"}},
                    ]
                },
                "steps": [{"command": {"argv": [sys.executable, "-c", PRINTS], "timeout": "10s"}}],
            }
        ],
    )
    with DaemonProcess(tmp_path, cfg) as running:
        yield running


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


def _probe_reason(d: DaemonProcess) -> str:
    try:
        data = json.loads((d.state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(data.get("sources", {}).get("site", {}).get("reason", ""))


def test_a_probe_answer_reaches_status_escaped(daemon: DaemonProcess) -> None:
    wait_for(lambda: "owned" in _probe_reason(daemon), 15, "the probe's answer in status.json")
    rc, out, _ = run("-c", str(daemon.config_path), "status")
    assert rc == 0, out
    assert f"site             probe      failing (BadStatusLine: HTTP/1.1 {SHOWN}\\r\\n)" in out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out


def test_a_probe_answer_a_forged_line_and_a_commands_output_reach_log_escaped(
    daemon: DaemonProcess,
) -> None:
    wait_for(lambda: "owned" in _probe_reason(daemon), 15, "the probe to fail")
    with (daemon.workdir / "error.log").open("ab") as f:
        f.write(FORGED)
    daemon.wait_record("incident_closed", 20)
    rc, out, err = run("-c", str(daemon.config_path), "log")
    assert rc == 0, err
    assert f"probe site: failing (BadStatusLine: HTTP/1.1 {SHOWN}\\r\\n)" in out
    assert f"while connecting to upstream, client: {SHOWN}" in out
    assert "exited with status 1: \\x1b]0;step\\x07" in out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    rc, out, _ = run("-c", str(daemon.config_path), "log", "--json")
    assert rc == 0 and "\\u001b]0;owned\\u0007" in out and "\x1b" not in out
