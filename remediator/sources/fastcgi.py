"""A small FastCGI client: one GET to a pool's socket, bounded in time and size.

Enough of the protocol to ask PHP-FPM for its status page without a web server: a
``BEGIN_REQUEST`` (responder role, no keep-alive), the request's ``PARAMS`` as name-value pairs
and an empty ``PARAMS`` and ``STDIN`` to end them, then ``STDOUT``/``STDERR`` records until
``END_REQUEST``. Every record is 8 header bytes (version, type, request id, content length,
padding length, reserved) and its content and padding.

The other end is not trusted (a compromised pool could answer anything): one deadline bounds
the whole exchange, the answer is capped (``max_bytes``), and a record of another version,
request or type than the protocol allows here ends the exchange as refused, with the reason.
"""

from __future__ import annotations

import enum
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_VERSION = 1
_REQUEST_ID = 1
_RESPONDER = 1
_HEADER = struct.Struct("!BBHHBx")
_BEGIN_BODY = struct.Struct("!HB5x")
_END_BODY = struct.Struct("!IB3x")
_MAX_STDERR = 4096
_MAX_RECORDS = 4096  # FPM sends a status page in a few records; a flood of empty ones ends


class Record(enum.IntEnum):
    BEGIN_REQUEST = 1
    ABORT_REQUEST = 2
    END_REQUEST = 3
    PARAMS = 4
    STDIN = 5
    STDOUT = 6
    STDERR = 7


class Failure(enum.StrEnum):
    """Why no answer came: the kinds the conditions tell apart."""

    REFUSED = "refused"  # nothing listens (ECONNREFUSED, no socket file): down, not busy
    BACKLOG_FULL = "backlog_full"  # the listen backlog is full (EAGAIN on a unix socket)
    TIMEOUT = "timeout"  # connected (or connecting) but no complete answer in time
    STOPPED = "stopped"  # no answer, and every worker of the pool is stopped (SIGSTOP)
    CLOSED = "closed"  # the peer closed before END_REQUEST
    PROTOCOL = "protocol"  # an answer that breaks the protocol or the bounds: refused
    ERROR = "error"  # any other socket error


class FastCGIError(Exception):
    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


@dataclass(frozen=True)
class Answer:
    stdout: bytes
    stderr: bytes
    app_status: int


def encode_params(params: Mapping[str, str]) -> bytes:
    """Name-value pairs: each length in one byte below 128, else four with the top bit set."""
    out = bytearray()
    for name, value in params.items():
        for part in (name.encode(), value.encode()):
            n = len(part)
            out += bytes((n,)) if n < 128 else struct.pack("!I", n | 0x80000000)
        out += name.encode() + value.encode()
    return bytes(out)


def _record(kind: Record, content: bytes = b"") -> bytes:
    return _HEADER.pack(_VERSION, kind, _REQUEST_ID, len(content), 0) + content


def build_request(params: Mapping[str, str]) -> bytes:
    """The whole request, as one write (params fit in one record: they are ours and short)."""
    body = encode_params(params)
    if len(body) > 0xFFFF:
        raise ValueError("params too long for one record")
    return (
        _record(Record.BEGIN_REQUEST, _BEGIN_BODY.pack(_RESPONDER, 0))
        + _record(Record.PARAMS, body)
        + _record(Record.PARAMS)
        + _record(Record.STDIN)
    )


def address(spec: str) -> tuple[int, str | tuple[str, int]]:
    """``/run/php/fpm.sock`` -> a unix socket; ``127.0.0.1:9000`` or ``[::1]:9000`` -> TCP."""
    if spec.startswith("/"):
        return socket.AF_UNIX, spec
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"'{spec}' is not a socket path or host:port")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _listener_uid(sock: socket.socket) -> int:
    """The uid of whoever called listen() on a unix socket (``SO_PEERCRED``): for PHP-FPM, its
    master, which binds the pool's socket as root before its workers drop to the pool's user."""
    _pid, uid, _gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return int(uid)


def _check_listener(sock: socket.socket, uids: frozenset[int]) -> None:
    uid = _listener_uid(sock)
    if uid not in uids:
        raise FastCGIError(
            Failure.PROTOCOL,
            f"refused: the socket's listener runs as uid {uid}, not root: not the pool's master",
        )


def request(
    spec: str,
    params: Mapping[str, str] | bytes,
    *,
    timeout: float,
    max_bytes: int,
    listener_uids: frozenset[int] | None = None,
    on_wait: tuple[float, Callable[[], None]] | None = None,
) -> Answer:
    """One request to ``spec``; raises :class:`FastCGIError` saying why there is no answer.
    ``params`` may be given built (:func:`build_request`), for a request made again and again.

    ``listener_uids``: on a unix socket, who may be listening (its peer credentials); a socket
    anyone else bound (a path in a directory the pool's user can write, replaced) is refused
    before a byte is sent.

    ``on_wait``: ``(after, look)``: when no answer has come ``after`` seconds into the
    exchange, ``look()`` is called once (it may raise :class:`FastCGIError` to give up at
    once), and the wait goes on to the deadline."""
    start = time.monotonic()
    deadline = start + timeout
    family, addr = address(spec)
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_UNIX:
            # A non-blocking connect to a unix socket whose backlog is full fails at once
            # with EAGAIN instead of waiting: that is an answer in itself (saturated).
            sock.setblocking(False)
            try:
                sock.connect(addr)
            except BlockingIOError as exc:
                raise FastCGIError(Failure.BACKLOG_FULL, "listen backlog full") from exc
            if listener_uids is not None:
                _check_listener(sock, listener_uids)
        else:
            sock.settimeout(timeout)
            sock.connect(addr)
        payload = params if isinstance(params, bytes) else build_request(params)
        _send_all(sock, payload, deadline)
        look = None if on_wait is None else (start + on_wait[0], on_wait[1])
        return _read_answer(sock, deadline, max_bytes, look)
    except FastCGIError:
        raise
    except TimeoutError as exc:
        raise FastCGIError(Failure.TIMEOUT, f"no answer within {timeout:g}s") from exc
    except (ConnectionRefusedError, FileNotFoundError) as exc:
        raise FastCGIError(Failure.REFUSED, _strerror(exc)) from exc
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise FastCGIError(Failure.CLOSED, _strerror(exc)) from exc
    except OSError as exc:
        raise FastCGIError(Failure.ERROR, _strerror(exc)) from exc
    finally:
        sock.close()


def _strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        sock.settimeout(_remaining(deadline))
        sent = sock.send(view)
        view = view[sent:]


class _Reader:
    """Exact reads under the deadline, never more than the answer's budget."""

    def __init__(
        self,
        sock: socket.socket,
        deadline: float,
        budget: int,
        look: tuple[float, Callable[[], None]] | None = None,
    ) -> None:
        self._sock = sock
        self._deadline = deadline
        self._budget = budget
        self._buf = bytearray()
        self._look = look

    def _recv(self, n: int) -> bytes:
        """One recv under the deadline; a pending look is taken when its time comes first."""
        while True:
            left = _remaining(self._deadline)
            look = self._look
            if look is None:
                self._sock.settimeout(left)
                return self._sock.recv(n)
            self._sock.settimeout(max(0.0, min(left, look[0] - time.monotonic())) or 1e-6)
            try:
                return self._sock.recv(n)
            except TimeoutError:
                if time.monotonic() >= self._deadline:
                    raise
            if time.monotonic() >= look[0]:
                self._look = None
                look[1]()

    def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._budget <= 0:
                raise FastCGIError(Failure.PROTOCOL, "answer larger than allowed")
            chunk = self._recv(min(65536 + 8, self._budget))
            if not chunk:
                raise FastCGIError(Failure.CLOSED, "closed before the end of the answer")
            self._budget -= len(chunk)
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def _read_answer(
    sock: socket.socket,
    deadline: float,
    max_bytes: int,
    look: tuple[float, Callable[[], None]] | None = None,
) -> Answer:
    # The framing (headers, padding) is counted in the budget too, so a flood of empty
    # records is bounded like a big one.
    reader = _Reader(sock, deadline, max_bytes + 64 * 1024, look)
    stdout = bytearray()
    stderr = bytearray()
    for _ in range(_MAX_RECORDS):
        version, kind, req_id, length, padding = _HEADER.unpack(reader.exactly(_HEADER.size))
        if version != _VERSION:
            raise FastCGIError(Failure.PROTOCOL, f"record version {version}, not 1")
        if req_id != _REQUEST_ID:
            raise FastCGIError(Failure.PROTOCOL, f"record for request {req_id}, not ours")
        content = reader.exactly(length) if length else b""
        if padding:
            reader.exactly(padding)
        if kind == Record.STDOUT:
            if len(stdout) + len(content) > max_bytes:
                raise FastCGIError(Failure.PROTOCOL, f"answer larger than {max_bytes} bytes")
            stdout += content
        elif kind == Record.STDERR:
            stderr += content[: max(0, _MAX_STDERR - len(stderr))]
        elif kind == Record.END_REQUEST:
            if len(content) != _END_BODY.size:
                raise FastCGIError(Failure.PROTOCOL, "malformed end of request")
            app_status, protocol_status = _END_BODY.unpack(content)
            if protocol_status != 0:
                raise FastCGIError(Failure.PROTOCOL, f"request not completed ({protocol_status})")
            return Answer(bytes(stdout), bytes(stderr), app_status)
        else:
            raise FastCGIError(Failure.PROTOCOL, f"unexpected record type {kind}")
    raise FastCGIError(Failure.PROTOCOL, f"more than {_MAX_RECORDS} records")
