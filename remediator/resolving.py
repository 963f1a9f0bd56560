"""Alerts that resolve: an incident that fired an Alertmanager alert resolves it as it closes.

The engine notes each alert an incident fired (a notify step or ``on_exhausted`` that reached
an ``alertmanager`` notifier), and when the incident closes hands the resolutions to its
executor (off the main loop: a slow Alertmanager never holds up the next incident's decision);
the results are collected at a later tick and recorded like any notification.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.actions.notify import resolve
from remediator.config import Notifier
from remediator.incident import Incident

log = structlog.get_logger(__name__)


class _Executor(Protocol):
    def submit(self, fn: Callable[[], Any]) -> Future[Any]: ...


@dataclass(frozen=True)
class Resolved:
    """One resolution sent (or not) for a closed incident."""

    incident: str
    playbook: str
    dry_run: bool
    notifier: str
    result: ActionResult


@dataclass(frozen=True)
class _Pending:
    incident: str
    playbook: str
    dry_run: bool
    future: Future[Any]


def note(
    inc: Incident, notifiers: Mapping[str, Notifier], name: str | None, res: ActionResult
) -> None:
    """Remember that ``inc`` fired an alert at ``name``, if that is an Alertmanager and the
    alert got there (a dry run sends none, so resolves none)."""
    notifier = notifiers.get(name or "")
    if res.outcome is Outcome.OK and notifier is not None and notifier.format == "alertmanager":
        inc.alerted.add(str(name))


class Resolutions:
    """The resolutions sent for closed incidents, until their results are collected."""

    def __init__(self) -> None:
        self._pending: list[_Pending] = []

    def __bool__(self) -> bool:
        return bool(self._pending)

    def send(self, inc: Incident, ctx: ActionContext, executor: _Executor) -> None:
        """Resolve every alert ``inc`` fired (``ctx``: the closed incident's, with its summary)."""
        names = sorted(inc.alerted)
        fut = executor.submit(lambda: resolve(names, ctx))
        self._pending.append(_Pending(inc.id, inc.playbook.name, inc.dry_run, fut))

    def wait(self, timeout: float) -> None:
        """Give the resolutions under way ``timeout`` to finish (the daemon is stopping: an
        alert left firing would stay so until Alertmanager's resolve_timeout)."""
        futures.wait([p.future for p in self._pending], timeout=timeout)

    def collect(self) -> list[Resolved]:
        """The results of the resolutions done since the last look."""
        out: list[Resolved] = []
        waiting = []
        for p in self._pending:
            if not p.future.done():
                waiting.append(p)
                continue
            try:
                results: list[tuple[str, ActionResult]] = p.future.result()
            except Exception as exc:  # defensive: resolve() catches its own
                log.exception("notify_crashed", error=str(exc))
                continue
            out += [Resolved(p.incident, p.playbook, p.dry_run, n, r) for n, r in results]
        self._pending = waiting
        return out
