"""Where the engine's slow work runs: actions, rollbacks and notifications. Live, a worker
thread, so the daemon's loop never waits for a restart, a config test or a webhook; in replay
and tests, :class:`InlineExecutor`, at once."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol


class Executor(Protocol):
    def submit(self, fn: Callable[[], Any]) -> Future[Any]: ...


class InlineExecutor:
    """Runs the work at once (replay, tests): the future is already done."""

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn())
        except Exception as exc:  # an action bug must not kill the engine: it is a failure
            fut.set_exception(exc)
        return fut
