"""A real SMTP server on loopback that keeps what it is sent: the local MTA a ``format: mail``
notifier with ``smtp:`` submits to (Debian's exim4 or postfix on 127.0.0.1:25 in production).

It speaks the little of RFC 5321 a submission needs (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
QUIT) and refuses the recipients it is told to, as an MTA that does not relay would.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class _State:
    refuse: set[str] = field(default_factory=set)
    mails: list[Received] = field(default_factory=list)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self._say("220 catcher ESMTP")
        sender, rcpts = "", list[str]()
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            arg = line[5:].strip().decode("utf-8", "replace")
            if verb in (b"EHLO", b"HELO"):
                self._say("250 catcher")
            elif verb == b"MAIL":
                sender, rcpts = arg.partition(":")[2].strip("<> "), []
                self._say("250 OK")
            elif verb == b"RCPT":
                rcpt = arg.partition(":")[2].strip("<> ")
                if rcpt in self.server.state.refuse:
                    self._say(f"550 5.7.1 <{rcpt}>: relay not permitted")
                else:
                    rcpts.append(rcpt)
                    self._say("250 OK")
            elif verb == b"DATA":
                self._say("354 go ahead")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk  # dot-stuffing
                self.server.state.mails.append(Received(sender, rcpts, data))
                self._say("250 OK queued")
            elif verb == b"QUIT":
                self._say("221 bye")
                return
            else:  # RSET, NOOP, anything else
                self._say("250 OK")


@dataclass
class Catcher:
    port: int
    state: _State

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mails(self) -> list[Received]:
        return self.state.mails


@contextmanager
def smtp_catcher(refuse: tuple[str, ...] = ()) -> Iterator[Catcher]:
    """An SMTP server on 127.0.0.1 (a free port) until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = _State(set(refuse))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Catcher(int(server.server_address[1]), server.state)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
