"""The service-control actions: ``reload``, ``restart``, ``config_test``.

Each picks the service's backend (:func:`remediator.services.base.control_for`), does its one
thing, and returns an :class:`ActionResult` whose details carry the evidence: every command run
(argv, exit status, output excerpt, milliseconds) and signal sent, the master PID before and
after, the duration.

What the action does (or would do) is at the top of ``details``, for a person reading the
timeline: ``argv``, the command (``systemctl restart UNIT``, ``systemctl reload UNIT`` or the
service's own ``reload``, the start command, ``nginx -s reload``...), or for PHP-FPM's reload
without systemd ``signal`` and ``pid`` (SIGUSR2 to the master). ``config_test`` holds the test
a reload passed first (argv, rc, output).

In a dry run the outcome is ``would_run``, and ``details["would"]`` lists, in order, every
command, signal and file removal that was not done. Observations (config tests, ``systemctl
show``) still run: a failing config test is still a refusal, a unit stopped on purpose still
refused. When the unit's state cannot be read (``systemctl`` cannot reach PID 1), the dry run
still says what it would run, with the error in ``details["state_error"]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import ServiceArgs
from remediator.services.base import Attempt, ServiceControl, control_for, excerpt, first_error


def reload(args: ServiceArgs, ctx: ActionContext) -> ActionResult:
    """Graceful reload, only after the service's config test passes."""
    return _act(args.service, ctx, lambda c: c.reload())


def restart(
    args: ServiceArgs, ctx: ActionContext, *, allow_reset_failed: bool = True
) -> ActionResult:
    """Restart the service. ``allow_reset_failed``: when systemd's start limit is hit, may one
    ``systemctl reset-failed`` and one more try be spent (the caller's budget decides)."""
    return _act(
        args.service,
        ctx,
        lambda c: c.restart(allow_reset_failed=allow_reset_failed),
        restart=True,
    )


def config_test(args: ServiceArgs, ctx: ActionContext) -> ActionResult:
    """Run the service's config test and record its output (changes nothing)."""
    return _act(args.service, ctx, _config_test)


def reload_service(name: str, ctx: ActionContext) -> ActionResult:
    """:func:`reload` by service name (the shape ``scale_workers`` takes)."""
    return reload(ServiceArgs(service=name), ctx)


def config_test_service(name: str, ctx: ActionContext) -> ActionResult:
    """:func:`config_test` by service name (the shape ``scale_workers`` takes)."""
    return config_test(ServiceArgs(service=name), ctx)


CONTROL_ACTIONS: dict[str, ActionFn] = {
    "reload": reload,
    "restart": restart,
    "config_test": config_test,
}


def _config_test(control: ServiceControl) -> Attempt:
    result = control.config_test()
    evidence = {
        "argv": list(result.argv),
        "rc": result.returncode,
        "output": excerpt(result.output),
    }
    details = {"argv": list(result.argv), "config_test": evidence}
    if result.ok:
        return Attempt(Outcome.OK, "config test passed", details)
    why = "timed out" if result.timed_out else first_error(result.output)
    return Attempt(Outcome.FAILED, f"config test failed: {why}", details)


def _act(
    name: str,
    ctx: ActionContext,
    operation: Callable[[ServiceControl], Attempt],
    *,
    restart: bool = False,
) -> ActionResult:
    service = ctx.services.get(name)
    if service is None:
        return ActionResult(Outcome.FAILED, f"no service named {name!r}", target=name)
    system = ctx.system
    mark = len(system.would)
    started = time.monotonic()
    details: dict[str, Any] = {}
    try:
        control = control_for(name, service, system)
        details["backend"] = control.backend
        try:
            attempt = operation(control)
        finally:
            details["steps"] = control.steps.log
        if control.state_error is not None:
            details["state_error"] = control.state_error
    except (OSError, ValueError) as exc:
        attempt = Attempt(Outcome.FAILED, f"{type(exc).__name__}: {exc}")
    details.update(attempt.details)
    details["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    outcome = attempt.outcome
    if system.dry_run:
        details["would"] = [{"kind": w.kind, **w.detail} for w in system.would[mark:]]
        if outcome is Outcome.OK and details["would"]:
            outcome = Outcome.WOULD_RUN
    return ActionResult(
        outcome,
        attempt.reason,
        target=name,
        details=details,
        restarted=restart and outcome is Outcome.OK,
    )
