"""A small client of etcd's v3 JSON gateway (``/v3/...``, etcd >= 3.4), over ``requests``.

Why not a library: the ``etcd3`` package (Debian's ``python3-etcd3`` 0.12) is unmaintained and
drags in gRPC and protobuf; the gateway is part of every etcd server, speaks JSON over plain
HTTP(S), and the few calls a semaphore needs (range, put, delete, lease grant / keep-alive /
revoke) fit in this file. Keys and values travel base64-encoded, 64-bit integers as strings.

Every call has a short timeout and tries the endpoints in turn, starting with the last one
that answered: a dead member costs one refused connection, a hung one one timeout.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests

LEASE_NOT_FOUND = "requested lease not found"
REFUSED_CLIENT = (
    "etcd refused this host's client certificate (none given, or not signed by the CA etcd "
    "trusts: see cert_file, key_file)"
)


class EtcdError(Exception):
    """etcd answered, and said no (the message is etcd's own)."""


class Unreachable(Exception):
    """No endpoint answered in time."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Range:
    revision: int  # the store's revision this answer is of
    count: int  # keys in the range (even past the limit)
    kvs: list[KeyValue]


@dataclass(frozen=True)
class Tls:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def prefix_end(prefix: str) -> bytes:
    """The range end that covers every key starting with ``prefix`` (etcd's ``WithPrefix``)."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # every key


class Etcd:
    """One client for a cluster's endpoints; thread-safe enough for one thread at a time."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 1.0,
        tls: Tls | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        # the endpoint that answered last; hosts start at a random one, spreading the load
        self._first = random.randrange(len(self.endpoints))  # noqa: S311 - not for secrets
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy between a host and its etcd
        tls = tls or Tls()
        if tls.ca_file:
            self._session.verify = tls.ca_file
        if tls.cert_file:
            self._session.cert = (tls.cert_file, tls.key_file) if tls.key_file else tls.cert_file
        self._credentials = (username, password) if username else None
        self._token: str | None = None
        self.requests = 0  # how many HTTP requests this client made (benchmarks)
        self._watching: requests.Response | None = None  # a watch in progress
        self._interrupted = threading.Event()

    def close(self) -> None:
        self._session.close()

    # --- transport ---

    def call(self, path: str, body: dict[str, Any], *, auth: bool = True) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers. Raises
        :class:`Unreachable` (none did) or :class:`EtcdError` (etcd refused)."""
        if auth and self._credentials is not None and self._token is None:
            self._authenticate()
        errors: list[str] = []
        n = len(self.endpoints)
        for i in range(n):
            index = (self._first + i) % n
            url = self.endpoints[index] + path
            headers = {"Authorization": self._token} if auth and self._token else {}
            self.requests += 1
            try:
                resp = self._session.post(
                    url, data=json.dumps(body), headers=headers, timeout=self.timeout
                )
            except (requests.RequestException, OSError) as exc:  # OSError: a TLS file unread
                errors.append(f"{self.endpoints[index]}: {why(exc)}")
                continue
            try:
                answer: dict[str, Any] = resp.json()
            except ValueError:
                errors.append(f"{self.endpoints[index]}: HTTP {resp.status_code}, not JSON")
                continue
            if resp.status_code == 503 or _unavailable(answer):  # no leader, say: try another
                errors.append(f"{self.endpoints[index]}: {_message(answer)}")
                continue
            self._first = index
            if "error" in answer or resp.status_code >= 400:
                message = _message(answer)
                if auth and self._credentials is not None and "token" in message:
                    self._token = None  # expired: the next call logs in again
                raise EtcdError(message)
            return answer.get("result", answer) if path.endswith("keepalive") else answer
        raise Unreachable("; ".join(errors))

    def _authenticate(self) -> None:
        if self._credentials is None:
            return
        name, password = self._credentials
        answer = self.call(
            "/v3/auth/authenticate", {"name": name, "password": password or ""}, auth=False
        )
        self._token = str(answer.get("token", "")) or None

    # --- kv ---

    def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Put ``key``; the revision of the put."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return _revision(self.call("/v3/kv/put", body))

    def range_prefix(self, prefix: str, *, limit: int = 0, by_creation: bool = True) -> Range:
        """The keys under ``prefix``, oldest first (by create revision) when ``by_creation``."""
        body: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        if limit:
            body["limit"] = str(limit)
        if by_creation:
            body |= {"sort_target": "CREATE", "sort_order": "ASCEND"}
        answer = self.call("/v3/kv/range", body)
        kvs = [
            KeyValue(
                key=base64.b64decode(kv["key"]).decode("utf-8", "replace"),
                value=base64.b64decode(kv.get("value", "")),
                create_revision=int(kv.get("create_revision", 0)),
                mod_revision=int(kv.get("mod_revision", 0)),
                lease=int(kv.get("lease", 0)),
            )
            for kv in answer.get("kvs", [])
        ]
        return Range(_revision(answer), int(answer.get("count", 0)), kvs)

    def watch_deletes(
        self, prefix: str, after: int, wait: float, enough: Callable[[str], bool]
    ) -> bool:
        """Watch the deletes of keys under ``prefix`` after revision ``after`` for up to
        ``wait`` seconds, telling ``enough`` each deleted key: True as soon as it says so (or
        etcd ended the watch: look again), False when the time ran out. Raises
        :class:`Unreachable` when the watch could not be opened (the caller looks again
        later instead)."""
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": str(after + 1),
                "filters": ["NOPUT"],
            }
        }
        endpoint = self.endpoints[self._first]
        headers = {"Authorization": self._token} if self._token else {}
        started = time.monotonic()
        self.requests += 1
        try:
            with self._session.post(
                endpoint + "/v3/watch",
                data=json.dumps(body),
                headers=headers,
                stream=True,
                timeout=(self.timeout, wait),
            ) as resp:
                self._watching = resp
                if self._interrupted.is_set():
                    return True
                for line in resp.iter_lines():
                    result = json.loads(line).get("result")
                    if not isinstance(result, dict):
                        return True  # an error: etcd's word, whatever it is, is a change
                    if result.get("canceled"):
                        return True
                    for event in result.get("events", []):
                        key = base64.b64decode(event.get("kv", {}).get("key", ""))
                        if enough(key.decode("utf-8", "replace")):
                            return True
                    if time.monotonic() - started >= wait:
                        return False
        except (requests.RequestException, ValueError, OSError) as exc:
            if self._interrupted.is_set():
                return True
            if time.monotonic() - started >= wait * 0.9:
                return False  # nothing happened while we waited: the read timed out
            raise Unreachable(f"{endpoint}: watch: {type(exc).__name__}") from exc
        finally:
            self._watching = None
            self._interrupted.clear()
        return True

    def interrupt(self) -> None:
        """End a watch in progress now (from another thread: it only shuts the socket down,
        which never blocks); the watching thread returns as if something changed."""
        self._interrupted.set()
        resp = self._watching
        conn = getattr(resp.raw, "connection", None) if resp is not None else None
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def delete(self, key: str) -> int:
        return _revision(self.call("/v3/kv/deleterange", {"key": _b64(key)}))

    # --- leases ---

    def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: its id and the TTL etcd granted."""
        answer = self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"]), int(answer.get("TTL", ttl))

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``; its TTL now, 0 when it is gone (expired or revoked)."""
        answer = self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return max(0, int(answer.get("TTL", 0)))

    def revoke(self, lease: int) -> None:
        """Revoke ``lease``, deleting its keys; a lease already gone is fine."""
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if LEASE_NOT_FOUND not in str(exc):
                raise


def why(exc: BaseException) -> str:
    """A request's failure in a few words an operator acts on (never a traceback): a
    certificate refused says which check failed, a dead member "connection refused"."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        found = _SSL_REASON.search(text)
        if found is None and "certificate" in text:
            found = _CERT_WORDS.search(text)
        reason = found.group(1).strip() if found else "handshake failed"
        if "KEY_VALUES_MISMATCH" in text:
            return "TLS: key_file is not the key of cert_file"
        if "alert" in reason or "EOF occurred" in text:  # etcd's side of the handshake said no
            # (TLS 1.3: its alert may arrive as the connection closing; the same words then)
            return f"TLS: {REFUSED_CLIENT}"
        return f"TLS: {reason}"
    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection refused" if "refused" in text.lower() else "cannot connect"
    if not isinstance(exc, requests.RequestException):  # a TLS file requests could not read
        return text[:200]  # "Could not find the TLS certificate file, invalid path: ..."
    return type(exc).__name__


_SSL_REASON = re.compile(r"\[(?:SSL|X509)(?:: [A-Z0-9_]+)?\] (.+?)\.? ?(?:\(_ssl\.c|'\)|\"\)|$)")
_CERT_WORDS = re.compile(r"(certificate[^(\]'\"]*)")


def _message(answer: dict[str, Any]) -> str:
    return str(answer.get("message") or answer.get("error") or "error")


def _unavailable(answer: dict[str, Any]) -> bool:
    # gRPC code 14 (unavailable), or a member without a leader
    return answer.get("code") == 14 or "no leader" in _message(answer)


def _revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))
