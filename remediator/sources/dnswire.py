"""One DNS question asked straight to a server (RFC 1035), over UDP or TCP, with a deadline.

Only what a ``dns`` source needs: an A or AAAA question with recursion desired, the answer's
rcode and the addresses of the name (following CNAMEs in the answer). Standard library only:
a root daemon's parser of network input is small enough here to read whole, every length is
checked against the bytes received, a compressed name may not loop, and at most
``MAX_ADDRESSES`` addresses are kept. A truncated UDP answer is asked again over TCP.

The answer is untrusted: it must come from the server asked (a connected socket), carry the
question's id and echo the question; anything else is dropped (UDP) or an error (TCP).
"""

from __future__ import annotations

import enum
import ipaddress
import secrets
import socket
import struct
import time
from dataclasses import dataclass

MAX_ADDRESSES = 32
MAX_UDP = 4096
MAX_TCP = 65535
MAX_NAME = 255
MAX_POINTERS = 32


class QType(enum.IntEnum):
    A = 1
    CNAME = 5
    AAAA = 28


class Rcode(enum.IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


@dataclass(frozen=True)
class Answer:
    """What one server said about one name and type: its rcode (None when there was no
    usable answer) and the addresses, or why there are none."""

    rcode: str | None
    addresses: tuple[str, ...] = ()
    error: str = ""

    @property
    def ok(self) -> bool:
        """A clean answer: NOERROR (with or without records of the type)."""
        return self.rcode == Rcode.NOERROR.name and not self.error


class DnsError(Exception):
    """An answer that cannot be read (malformed, not ours)."""


def query(
    name: str, qtype: QType, server: tuple[str, int], timeout: float, *, tcp: bool = False
) -> Answer:
    """Ask ``server`` for ``name``'s ``qtype`` records; never raises, never waits past
    ``timeout`` (the whole exchange, a TCP retry included)."""
    deadline = time.monotonic() + timeout
    try:
        packet, qid = build_query(name, qtype)
    except DnsError as exc:
        return Answer(None, error=str(exc))
    try:
        if not tcp:
            data = _udp(packet, qid, name, qtype, server, deadline)
            header = parse(data, qid, name, qtype)
            if not header.truncated:
                return header.answer
        return parse(_tcp(packet, server, deadline), qid, name, qtype).answer
    except TimeoutError:
        return Answer(None, error=f"timed out after {timeout:g}s")
    except DnsError as exc:
        return Answer(None, error=f"bad answer: {exc}")
    except OSError as exc:
        return Answer(None, error=_oserror(exc))


def build_query(name: str, qtype: QType) -> tuple[bytes, int]:
    """The question's bytes and its random id."""
    qid = secrets.randbits(16)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD
    return header + encode_name(name) + struct.pack("!HH", qtype, 1), qid


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii", "strict") if label.isascii() else b""
        if not raw or len(raw) > 63:
            raise DnsError(f"'{name}' is not a host name DNS can carry")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > MAX_NAME:
        raise DnsError(f"'{name}' is longer than 255 bytes")
    return bytes(out)


@dataclass(frozen=True)
class _Parsed:
    answer: Answer
    truncated: bool


def parse(data: bytes, qid: int, name: str, qtype: QType) -> _Parsed:
    """Read a response to the question (``qid``, ``name``, ``qtype``). Raises DnsError when
    it is not one."""
    if len(data) < 12:
        raise DnsError("shorter than a header")
    rid, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", data)
    if rid != qid or not flags & 0x8000:
        raise DnsError("not an answer to this question")
    truncated = bool(flags & 0x0200)
    rcode_value = flags & 0x000F
    try:
        rcode = Rcode(rcode_value).name
    except ValueError:
        rcode = f"RCODE{rcode_value}"
    if qd != 1:
        raise DnsError("the question is not echoed")
    qname, off = read_name(data, 12)
    if off + 4 > len(data):
        raise DnsError("cut short in the question")
    rtype, rclass = struct.unpack_from("!HH", data, off)
    off += 4
    if qname.lower() != name.rstrip(".").lower() or rtype != qtype or rclass != 1:
        raise DnsError("the question echoed is not the one asked")
    if truncated or rcode != Rcode.NOERROR.name:
        return _Parsed(Answer(rcode), truncated)
    owners = {qname.lower()}
    addresses: list[str] = []
    for _ in range(an):
        owner, off = read_name(data, off)
        if off + 10 > len(data):
            raise DnsError("cut short in a record")
        rtype, rclass, _ttl, rdlen = struct.unpack_from("!HHIH", data, off)
        off += 10
        if off + rdlen > len(data):
            raise DnsError("a record is longer than the answer")
        if rclass == 1 and owner.lower() in owners:
            if rtype == QType.CNAME:
                target, _ = read_name(data, off)
                owners.add(target.lower())
            elif rtype == qtype == QType.A and rdlen == 4:
                addresses.append(str(ipaddress.IPv4Address(data[off : off + 4])))
            elif rtype == qtype == QType.AAAA and rdlen == 16:
                addresses.append(str(ipaddress.IPv6Address(data[off : off + 16])))
        off += rdlen
        if len(addresses) >= MAX_ADDRESSES:
            break
    return _Parsed(Answer(rcode, tuple(sorted(set(addresses)))), False)


def read_name(data: bytes, off: int) -> tuple[str, int]:
    """The name at ``off`` (compression followed, bounded) and the offset after it."""
    labels: list[str] = []
    end: int | None = None
    size = 0
    for _ in range(MAX_POINTERS + 128):
        if off >= len(data):
            raise DnsError("a name runs past the end")
        length = data[off]
        if length & 0xC0 == 0xC0:
            if off + 1 >= len(data):
                raise DnsError("a name runs past the end")
            if end is None:
                end = off + 2
            pointer = ((length & 0x3F) << 8) | data[off + 1]
            if pointer >= off:
                raise DnsError("a name points forward")  # only backwards: no loop
            off = pointer
            continue
        if length & 0xC0:
            raise DnsError("a label of an unknown kind")
        off += 1
        if length == 0:
            return ".".join(labels), (end if end is not None else off)
        if off + length > len(data):
            raise DnsError("a label runs past the end")
        size += length + 1
        if size > MAX_NAME:
            raise DnsError("a name longer than 255 bytes")
        labels.append(data[off : off + length].decode("ascii", "replace"))
        off += length
    raise DnsError("a name with too many parts")


def _udp(
    packet: bytes, qid: int, name: str, qtype: QType, server: tuple[str, int], deadline: float
) -> bytes:
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(server)  # the kernel drops datagrams from anyone else
        s.settimeout(_left(deadline))
        s.send(packet)
        while True:
            s.settimeout(_left(deadline))
            data = s.recv(MAX_UDP)
            try:
                parse(data, qid, name, qtype)
            except DnsError:
                continue  # a stray or forged datagram: keep waiting for ours
            return data


def _tcp(packet: bytes, server: tuple[str, int], deadline: float) -> bytes:
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(_left(deadline))
        s.connect(server)
        s.settimeout(_left(deadline))
        s.sendall(struct.pack("!H", len(packet)) + packet)
        (length,) = struct.unpack("!H", _read(s, 2, deadline))
        return _read(s, min(length, MAX_TCP), deadline)


def _read(s: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        s.settimeout(_left(deadline))
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise DnsError("the server closed the connection mid-answer")
        buf += chunk
    return bytes(buf)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _oserror(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing answers DNS there)"
    return f"{type(exc).__name__}: {exc.strerror or exc}"
