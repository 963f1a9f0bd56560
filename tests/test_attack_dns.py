"""A forged DNS answer: www-data (a compromised PHP app) on the same host sends the ``dns``
source an answer pointing the site elsewhere, knowing the question's id and the socket's port
(the strongest on-host attacker). The socket is connected to the server asked: the kernel drops
it, and the server's own answer is the one taken. Garbage before the real answer is skipped."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

from remediator.sources.dnswire import QType, encode_name, query
from tests.attacker import as_www_data

WWW = "www.example.test"
PYTHON = "/usr/bin/python3"  # www-data cannot enter the test's venv; the forger needs stdlib only

_FORGER = """
import socket, sys
data, server_port, victim_port = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.bind(("127.0.0.1", server_port))  # the server's own port: taken by the server
    print("bound the server's port")
except OSError:
    print("server port refused")
for _ in range(20):
    s.sendto(data, ("127.0.0.1", victim_port))
"""


def _answer(qid: int, address: str) -> bytes:
    rr = b"\xc0\x0c" + struct.pack("!HHIH", QType.A, 1, 60, 4) + socket.inet_aton(address)
    head = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    return head + encode_name(WWW) + struct.pack("!HH", QType.A, 1) + rr


def _server(
    reply: Callable[[socket.socket, bytes, tuple[str, int]], None],
) -> tuple[int, threading.Thread]:
    """A UDP server on loopback answering one question with ``reply``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)

    def serve() -> None:
        with s:
            data, peer = s.recvfrom(4096)
            reply(s, data, peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return int(s.getsockname()[1]), t


def test_a_forged_answer_from_www_data_is_dropped_and_the_servers_is_taken() -> None:
    said: list[str] = []

    def reply(s: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
        (qid,) = struct.unpack_from("!H", data)
        forged = _answer(qid, "10.6.6.6").hex()
        port = str(s.getsockname()[1])
        done = as_www_data([PYTHON, "-c", _FORGER, forged, port, str(peer[1])])
        said.append(done.stdout.strip())
        s.sendto(_answer(qid, "127.0.0.5"), peer)

    port, thread = _server(reply)
    got = query(WWW, QType.A, ("127.0.0.1", port), 10.0)
    thread.join(5)
    assert said == ["server port refused"]
    assert got.rcode == "NOERROR" and got.addresses == ("127.0.0.5",)


def test_garbage_before_the_answer_is_skipped() -> None:
    def reply(s: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
        (qid,) = struct.unpack_from("!H", data)
        s.sendto(b"\x00", peer)  # shorter than a header
        s.sendto(_answer(qid ^ 1, "10.6.6.6"), peer)  # another question's id
        loop = struct.pack("!HHHHHH", qid, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c"
        s.sendto(loop, peer)  # a name that points at itself
        s.sendto(_answer(qid, "127.0.0.5"), peer)

    port, thread = _server(reply)
    got = query(WWW, QType.A, ("127.0.0.1", port), 10.0)
    thread.join(5)
    assert got.addresses == ("127.0.0.5",)


def test_a_server_sending_only_garbage_times_out_without_raising() -> None:
    def reply(s: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
        for _ in range(50):
            s.sendto(b"\xff" * 600, peer)

    port, thread = _server(reply)
    got = query(WWW, QType.A, ("127.0.0.1", port), 0.3)
    thread.join(5)
    assert got.rcode is None and got.error == "timed out after 0.3s"
