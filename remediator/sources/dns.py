"""A ``dns`` source: the site's names looked up, and judged against the addresses expected.

Each lookup round asks, for every name, either the system resolver (``getaddrinfo``, which
has no timeout of its own: it runs in a daemon thread abandoned at the deadline, and a new one
is not started while an abandoned one still runs) or every configured server directly
(:mod:`remediator.sources.dnswire`). A round is a mismatch when any name, from any server,
resolves to an address not expected, to none, or fails (NXDOMAIN, SERVFAIL, a timeout).

Runs in a thread of its own (:class:`remediator.watch.DnsThreads`); what it hands back is
plain data, bounded, and kept as the incident's evidence.
"""

from __future__ import annotations

import ipaddress
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import structlog

from remediator.config import DnsSource, split_server
from remediator.sources.dnswire import MAX_ADDRESSES, QType, query

log = structlog.get_logger(__name__)

SYSTEM = "system"

_GAI_REASONS = {
    socket.EAI_NONAME: "NXDOMAIN (no such name, or no address of the type)",
    socket.EAI_AGAIN: "SERVFAIL or timeout (temporary failure in name resolution)",
    socket.EAI_FAIL: "SERVFAIL (non-recoverable failure in name resolution)",
}
_EAI_NODATA = getattr(socket, "EAI_NODATA", None)


@dataclass(frozen=True)
class Lookup:
    """What one server said about one name (every type asked), and whether it is right."""

    name: str
    server: str
    addresses: tuple[str, ...]
    error: str  # why the lookup failed ("" when it did not)
    unexpected: tuple[str, ...]  # addresses answered that are not expected

    @property
    def wrong(self) -> bool:
        return bool(self.error or self.unexpected or not self.addresses)

    def reason(self) -> str:
        if self.error:
            return self.error
        if not self.addresses:
            return "no address"
        return f"unexpected {', '.join(self.unexpected)}"

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "server": self.server,
            "addresses": list(self.addresses),
            "ok": not self.wrong,
        }
        if self.wrong:
            out["reason"] = self.reason()
        return out


@dataclass(frozen=True)
class Round:
    """One lookup of every name: whether any is wrong, in words, and each lookup."""

    mismatch: bool
    detail: str
    lookups: list[Lookup] = field(default_factory=list)

    def answers(self) -> list[dict[str, Any]]:
        return [lk.record() for lk in self.lookups]


class Resolver:
    """Looks up one ``dns`` source's names and judges the answers."""

    def __init__(
        self,
        name: str,
        spec: DnsSource,
        *,
        host_addresses: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self._expected = frozenset(_norm(a) for a in spec.expect)
        self._host_addresses = host_addresses or this_host
        self._types = tuple(QType[t] for t in spec.types)
        self._pending: dict[str, threading.Thread] = {}  # system lookups still running

    def run(self) -> Round:
        expected = self._host_addresses() if self.spec.this_host else self._expected
        lookups: list[Lookup] = []
        for host in self.spec.names:
            if self.spec.servers:
                lookups += [self._ask(host, server, expected) for server in self.spec.servers]
            else:
                lookups.append(self._system(host, expected))
        wrong = [lk for lk in lookups if lk.wrong]
        if not wrong:
            return Round(False, "every name resolves as expected", lookups)
        detail = "; ".join(f"{lk.name} at {lk.server}: {lk.reason()}" for lk in wrong[:4])
        if len(wrong) > 4:
            detail += f"; and {len(wrong) - 4} more"
        return Round(True, detail, lookups)

    def _ask(self, host: str, server: str, expected: frozenset[str]) -> Lookup:
        addr = split_server(server)
        deadline = time.monotonic() + self.spec.timeout
        found: list[str] = []
        errors: list[str] = []
        for qtype in self._types:
            left = max(0.001, deadline - time.monotonic())
            ans = query(host, qtype, addr, left, tcp=self.spec.tcp)
            if ans.ok:
                found += ans.addresses
            elif ans.error.startswith("timed out"):  # the round's deadline, not what was left
                errors.append(f"{qtype.name} timed out after {self.spec.timeout:g}s")
            else:
                errors.append(f"{qtype.name} {ans.error or ans.rcode}")
        return _judge(host, server, found, "; ".join(errors), expected)

    def _system(self, host: str, expected: frozenset[str]) -> Lookup:
        stuck = self._pending.get(host)
        if stuck is not None and stuck.is_alive():
            return _judge(host, SYSTEM, [], "the previous lookup has not returned yet", expected)
        box: list[tuple[list[str], str]] = []
        families = {QType.A: int(socket.AF_INET), QType.AAAA: int(socket.AF_INET6)}
        wanted = {families[t] for t in self._types}
        thread = threading.Thread(
            target=lambda: box.append(_getaddrinfo(host, wanted)),
            name=f"dns-{self.name}-lookup",
            daemon=True,
        )
        thread.start()
        thread.join(self.spec.timeout)
        if not box:
            self._pending[host] = thread
            return _judge(host, SYSTEM, [], f"timed out after {self.spec.timeout:g}s", expected)
        self._pending.pop(host, None)
        found, error = box[0]
        return _judge(host, SYSTEM, found, error, expected)


def _getaddrinfo(host: str, families: set[int]) -> tuple[list[str], str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == _EAI_NODATA:
            return [], "no address"
        reason = _GAI_REASONS.get(exc.errno) if exc.errno is not None else None
        return [], reason or f"resolver error: {exc.strerror}"
    except (OSError, UnicodeError) as exc:
        return [], f"resolver error: {exc}"
    return [str(i[4][0]) for i in infos if i[0] in families][:MAX_ADDRESSES], ""


def _judge(
    host: str, server: str, found: list[str], error: str, expected: frozenset[str]
) -> Lookup:
    addresses = tuple(sorted({_norm(a) for a in found}))
    unexpected = tuple(a for a in addresses if a not in expected)
    return Lookup(host, server, addresses, error, unexpected)


def _norm(address: str) -> str:
    """One spelling per address (``2001:DB8::1`` and ``2001:db8:0::1`` are one)."""
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address


def this_host() -> frozenset[str]:
    """The addresses on this host's interfaces (loopback included)."""
    out = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                out.add(_norm(a.address))
    return frozenset(out)


class DnsThreads:
    """One thread per ``dns`` source, looking up every ``interval``; rounds come back
    through a queue, with a wake-up of the main loop (as probes do)."""

    def __init__(self, sources: dict[str, DnsSource], wake: Callable[[], None]) -> None:
        self.results: queue.SimpleQueue[tuple[str, Round]] = queue.SimpleQueue()
        self._wake = wake
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(Resolver(n, s),), name=f"dns-{n}", daemon=True)
            for n, s in sources.items()
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _run(self, resolver: Resolver) -> None:
        while not self._stop.is_set():
            try:
                result = resolver.run()
            except Exception:  # a lookup must never kill the daemon: blind (no round), said
                log.exception("dns_lookup_crashed", source=resolver.name)
            else:
                self.results.put((resolver.name, result))
                self._wake()
            self._stop.wait(resolver.spec.interval)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
