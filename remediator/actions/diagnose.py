"""diagnose: collect evidence, change nothing.

Name resolution (``socket.getaddrinfo``, which has no timeout of its own: each lookup runs in a
daemon thread and is abandoned at a deadline), TCP or unix-socket connects with a short timeout,
the services' config tests (observations through ``ctx.system``, so they run in a dry run too),
and a host snapshot. All probes run side by side; the action never raises and always returns
``OK`` with what it found in ``details``: its worth is the evidence, not a verdict.

Config tests belong to the service-control actions; the function is passed in (:func:`actions`).
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import DiagnoseArgs
from remediator.actions.firewall import Upstream, firewall, parse_upstream
from remediator.sources import host

log = structlog.get_logger(__name__)

ConfigTestFn = Callable[[str, ActionContext], ActionResult]
"""``(service name, ctx) -> result``: the service's config test, OK when it passes."""

RESOLVE_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0

Probe = Callable[[], dict[str, Any]]


def actions(*, config_test: ConfigTestFn) -> dict[str, ActionFn]:
    """The registry entry, bound to the config-test function to use."""
    return {"diagnose": functools.partial(diagnose, config_test=config_test)}


def diagnose(
    args: DiagnoseArgs,
    ctx: ActionContext,
    *,
    config_test: ConfigTestFn,
    resolve_timeout: float = RESOLVE_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> ActionResult:
    """Resolve, connect, test configs and snapshot the host; report everything, raise nothing."""
    start = time.monotonic()
    details: dict[str, Any] = {}
    try:
        _collect(args, ctx, config_test, resolve_timeout, connect_timeout, details)
    except Exception as exc:  # evidence is best effort: a broken probe must not fail the step
        log.exception("diagnose_crashed")
        details["error"] = f"{type(exc).__name__}: {exc}"
    details["duration_ms"] = round((time.monotonic() - start) * 1000, 1)
    return ActionResult(Outcome.OK, _summary(details), None, details)


def _collect(
    args: DiagnoseArgs,
    ctx: ActionContext,
    config_test: ConfigTestFn,
    resolve_timeout: float,
    connect_timeout: float,
    details: dict[str, Any],
) -> None:
    resolving = _Parallel(
        "name", [(n, functools.partial(resolve, n)) for n in args.resolve], resolve_timeout
    )
    # A connect may resolve a name first: its deadline covers both.
    connecting = _Parallel(
        "endpoint",
        [(ep, functools.partial(connect, ep, connect_timeout)) for ep in args.connect],
        resolve_timeout + connect_timeout,
    )
    details["config_tests"] = [_config_test(name, ctx, config_test) for name in args.config_test]
    if args.firewall:
        ups = [u for u in map(parse_upstream, args.firewall) if isinstance(u, Upstream)]
        details["firewall"] = _guard(lambda: firewall(ups, ctx.system))
    if args.snapshot:
        details["snapshot"] = _guard(host.snapshot)
    details["resolve"] = resolving.results()
    details["connect"] = connecting.results()


def resolve(name: str) -> dict[str, Any]:
    """The addresses ``name`` resolves to, or the resolver's error."""
    t = time.monotonic()
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return {"name": name, "ok": False, "error": str(exc), "ms": _ms(t)}
    addresses = sorted({str(info[4][0]) for info in infos})
    return {"name": name, "ok": True, "addresses": addresses, "ms": _ms(t)}


def connect(endpoint: str, timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    """Open (and close) a stream connection to ``host:port`` or ``unix:/path``."""
    t = time.monotonic()
    out: dict[str, Any] = {"endpoint": endpoint}
    try:
        if endpoint.startswith("unix:"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(endpoint[5:])
        else:
            host_part, _, port = endpoint.rpartition(":")
            address = (host_part.strip("[]"), int(port))
            with socket.create_connection(address, timeout=timeout) as s:
                out["peer"] = str(s.getpeername()[0])
    except TimeoutError:
        return out | {"ok": False, "error": f"timed out after {timeout:g}s", "ms": _ms(t)}
    except (OSError, ValueError) as exc:
        return out | {"ok": False, "error": _error(exc), "ms": _ms(t)}
    return out | {"ok": True, "ms": _ms(t)}


class _Parallel:
    """Probes in daemon threads, collected at a deadline; a probe still running is abandoned
    (it ends on its own: a lookup stuck in the resolver cannot be cancelled)."""

    def __init__(self, field: str, probes: list[tuple[str, Probe]], timeout: float) -> None:
        self.field = field
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.keys = [key for key, _ in probes]
        self.slots: list[dict[str, Any] | None] = [None] * len(probes)
        self.threads = [
            threading.Thread(target=self._run, args=(i, fn), name=f"diagnose-{i}", daemon=True)
            for i, (_, fn) in enumerate(probes)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, i: int, fn: Probe) -> None:
        self.slots[i] = _guard(fn)

    def results(self) -> list[dict[str, Any]]:
        for thread in self.threads:
            thread.join(max(0.0, self.deadline - time.monotonic()))
        out = []
        for key, slot in zip(self.keys, self.slots, strict=True):
            if slot is not None:
                out.append(slot)
                continue
            log.warning("diagnose_probe_abandoned", probe=key, timeout_s=self.timeout)
            out.append(
                {self.field: key, "ok": False, "error": f"timed out after {self.timeout:g}s"}
            )
        return out


def _config_test(name: str, ctx: ActionContext, config_test: ConfigTestFn) -> dict[str, Any]:
    if name not in ctx.services:
        return {"service": name, "ok": False, "error": f"unknown service '{name}'"}
    t = time.monotonic()
    r = _guard(lambda: _result(config_test(name, ctx)))
    return {"service": name, "ok": r.get("outcome") == Outcome.OK.value, **r, "ms": _ms(t)}


def _result(r: ActionResult) -> dict[str, Any]:
    return {"outcome": r.outcome.value, "reason": r.reason, **r.details}


def _guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a probe; a bug in it becomes evidence, not an exception."""
    try:
        return fn()
    except Exception as exc:
        log.exception("diagnose_probe_crashed")
        return {"ok": False, "error": f"probe crashed: {type(exc).__name__}: {exc}"}


def _error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def _summary(details: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("resolve", "resolved"),
        ("connect", "connected"),
        ("config_tests", "config tests passed"),
    ):
        items = details.get(key) or []
        if items:
            ok = sum(1 for item in items if item.get("ok"))
            parts.append(f"{label} {ok}/{len(items)}")
    wall = details.get("firewall")
    if wall is not None:
        parts.append(_firewall_summary(wall))
    if "snapshot" in details:
        parts.append("snapshot taken")
    return ", ".join(parts) or "nothing to check"


def _firewall_summary(wall: dict[str, Any]) -> str:
    """``firewall: 1 rule matches (nftables inet filter output: tcp dport 9000 drop)``."""
    found = [
        r
        for backend in ("nftables", "iptables", "ip6tables")
        for r in (wall.get(backend) or {}).get("matching", [])
    ]
    policies = [
        p
        for backend in ("nftables", "iptables", "ip6tables")
        for p in (wall.get(backend) or {}).get("drop_policies", [])
    ]
    unread = [b for b in ("nftables", "iptables") if not (wall.get(b) or {}).get("ok")]
    if not found:
        text = "firewall: no rule matches " + ", ".join(wall.get("upstreams", []))
    else:
        first = found[0]
        text = (
            f"firewall: {len(found)} rule(s) match, first {first['table']} {first['chain']}: "
            f"{first['rule'][:120]} ({first['upstream']}, {first['direction']})"
        )
    if policies:
        text += f"; {len(policies)} chain(s) with policy drop"
    if unread:
        text += f"; not read: {', '.join(unread)}"
    return text


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)
