"""scale_workers: fit a PHP-FPM pool's ``pm.max_children`` to the memory the host has.

The steps, each through ``ctx.system`` (so a dry run records them and changes nothing):

1. Read the pool file (``Service.pool_file``; :mod:`~remediator.actions.pool_file`): its one
   ``pm.max_children`` line (and, for ``pm = dynamic``, the spare-server lines: lowered, they
   stay within it; raised, they are scaled with it, so the reloaded pool starts as big,
   relative to its maximum, as before). A value we cannot read as a plain integer is refused, never guessed.
2. Measure the running pool and its budget (:mod:`~remediator.actions.memory`): its workers'
   average RSS, and ``workers + floor((available - memory_reserve) / avg_worker_rss)``. No
   running worker means no measurement, and no action; a master that cannot be trusted means
   ``cannot_act``.
3. New value: unset ``by`` raises to what fits; ``by > 0`` raises by that much; both are capped
   by ``max_children`` and by the budget (a cap is said in the reason). ``by < 0`` lowers, never
   below ``min_children``. Nothing to change is refused: a no-op is not a fix.
4. Back up the file beside it (``NAME.remediator-bak``, mode and owner kept), replace it
   atomically (mode and owner kept), run the config test; if it fails, put the original back at
   once and refuse. Else reload; a failed reload also puts the original back (a restart that
   follows then starts from the known config).

The result's ``rollback`` restores the original bytes and reloads again (the engine calls it when
verification fails).

``details`` names the edit at its top: ``file`` (the pool file) and ``set`` (each changed setting
and its new value, e.g. ``{"pm.max_children": 8}``); ``edit`` has the lines before and after.
A dry run edits nothing, reloads nothing, and says so (``would_run``, ``details["would"]``: the
backup, the write with its line changes, the reload's command or signal). Its reload still runs
the config test (on the file as it is): a failing one makes the dry run ``refused``, as the
real edit would be. When the service's state cannot be read (``systemctl`` cannot reach PID 1),
the pool cannot be measured: a dry run still says what it would set, without the memory cap
(``state_error`` beside it; ``set`` is ``null`` when only the measurement could tell).

Config test and reload belong to the service-control actions; they are passed in
(:func:`actions`) so that this module depends on their behaviour, not their code.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from remediator.actions import memory
from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import ScaleArgs
from remediator.actions.memory import find_master, measure_pool, plan
from remediator.actions.pool_file import (
    MAX_CHILDREN,
    PoolError,
    backup_path,
    dynamic_bounds,
    dynamic_raised,
    parse_pool,
)
from remediator.system import System

log = structlog.get_logger(__name__)

ServiceFn = Callable[[str, ActionContext], ActionResult]
"""``(service name, ctx) -> result``: a config test (OK when it passes) or a graceful reload
(OK once the service is back up; WOULD_RUN in a dry run)."""


def actions(*, config_test: ServiceFn, reload: ServiceFn) -> dict[str, ActionFn]:
    """The registry entry, bound to the service-control functions to use."""
    return {
        "scale_workers": functools.partial(scale_workers, config_test=config_test, reload=reload)
    }


# --- the action -------------------------------------------------------------------------------


def scale_workers(
    args: ScaleArgs, ctx: ActionContext, *, config_test: ServiceFn, reload: ServiceFn
) -> ActionResult:
    """Change ``pm.max_children`` within the memory budget; test, reload, offer a rollback."""
    svc = ctx.services.get(args.service)
    if svc is None:
        return _refuse(args, f"unknown service '{args.service}'")
    if svc.kind != "php-fpm":
        return _refuse(args, f"service '{args.service}' is {svc.kind}, not php-fpm")
    if svc.pool_file is None:
        return _refuse(args, f"service '{args.service}' has no pool_file: nothing to edit")
    path = svc.pool_file.resolve()  # a symlinked pool file: edit its target, keep the link
    try:
        original = path.read_bytes()
        pool = parse_pool(path, original)
    except OSError as exc:
        return _refuse(args, f"cannot read pool file {path}: {exc.strerror}")
    except PoolError as exc:
        return _refuse(args, str(exc))
    current = pool.settings[MAX_CHILDREN].value
    details: dict[str, Any] = {"pool": pool.pool, "pm": pool.pm, "before": current}

    master = find_master(args.service, svc, ctx)
    if master.distrust:
        reason = f"not going to scale {args.service}: {master.distrust}"
        return ActionResult(Outcome.CANNOT_ACT, reason, args.service, details)
    stats = measure_pool(master.pid, pool.pool) if master.pid is not None else None
    budget: dict[str, Any] | None = None
    if stats is None and master.state_error is not None and ctx.system.dry_run:
        details["state_error"] = master.state_error
        if args.by is None:
            return _would_fit_unmeasured(args, path, details)
        fits = args.max_children  # unknown: the memory cap is not checked
    elif stats is None:
        why = master.why or f"PID {master.pid} is gone"
        return _refuse(args, f"no running master to measure ({why})")
    elif stats.workers == 0 or stats.avg_rss <= 0:
        return _refuse(args, f"no worker of pool {pool.pool} is running: no measurement, no action")
    else:
        budget = memory.budget(stats, args.memory_reserve)
        fits = budget["fits"]
    p = plan(current, fits, args)
    details |= {"after": p.target, "budget": budget, "notes": list(p.notes)}
    if budget is None:
        details["notes"].append("memory cap not checked: the pool could not be measured")
    raising = args.by is None or args.by > 0
    if (
        p.target == current
        or (raising and p.target < current)
        or (not raising and p.target > current)
    ):
        return _refuse(args, _no_change(current, fits, raising, args, budget), details)

    values = (dynamic_raised if p.target > current else dynamic_bounds)(pool, p.target)
    new, changes = pool.edit(values)
    changed = {c["key"] for c in changes}
    details["file"] = str(path)
    details["set"] = {k: v for k, v in values.items() if k in changed}
    details["edit"] = {"path": str(path), "backup": str(backup_path(path)), "changes": changes}
    return _apply(args, ctx, path, original, new, details, config_test, reload)


def _would_fit_unmeasured(args: ScaleArgs, path: Path, details: dict[str, Any]) -> ActionResult:
    """Dry run, state unreadable, ``by`` unset: the value only a measurement could tell."""
    details |= {
        "after": None,
        "file": str(path),
        "set": {MAX_CHILDREN: None},
        "at_most": args.max_children,
        "notes": ["the pool could not be measured: the value depends on it"],
    }
    reason = (
        f"would raise {MAX_CHILDREN} in {path} from {details['before']} to what memory allows "
        f"(at most {args.max_children}); the pool could not be measured: {details['state_error']}"
    )
    return ActionResult(Outcome.WOULD_RUN, reason, args.service, details)


def _no_change(
    current: int, fits: int, raising: bool, args: ScaleArgs, budget: dict[str, Any] | None
) -> str:
    # budget None: a dry run that could not measure, where only max_children caps a raise.
    if raising and budget is not None and budget["headroom"] < 0:
        return (
            f"available memory {budget['available']} is below the reserve {args.memory_reserve}: "
            f"no room for more workers (pm.max_children stays {current})"
        )
    if raising and budget is not None and fits <= current:
        return (
            f"memory allows {fits} workers ({budget['workers']} running, headroom "
            f"{budget['headroom']}, {budget['avg_worker_rss']} per worker) and "
            f"pm.max_children is already {current}: not raising"
        )
    if raising:
        return f"pm.max_children is {current}, not below max_children {args.max_children}: nothing to change"
    return f"pm.max_children is {current}, not above min_children {args.min_children}: not lowering"


def _apply(
    args: ScaleArgs,
    ctx: ActionContext,
    path: Path,
    original: bytes,
    new: bytes,
    details: dict[str, Any],
    config_test: ServiceFn,
    reload: ServiceFn,
) -> ActionResult:
    system = ctx.system
    marker = len(system.would)
    timings: dict[str, float] = {}
    details["timings_ms"] = timings
    summary = f"pm.max_children {details['before']} -> {details['after']}"
    note = f" ({'; '.join(details['notes'])})" if details["notes"] else ""
    if _read(path) != original:
        return ActionResult(
            Outcome.FAILED, f"{path} changed while planning: not editing", args.service, details
        )
    t = time.monotonic()
    backup = backup_path(path)
    try:
        system.copy_file(path, backup)
    except OSError as exc:
        reason = f"cannot write backup {backup}: {exc.strerror or exc}; not editing"
        return ActionResult(Outcome.FAILED, reason, args.service, details)
    try:
        system.replace_file(path, new)
    except OSError as exc:  # the atomic write left the original in place
        reason = f"cannot write {path}: {exc.strerror or exc}; unchanged"
        return ActionResult(Outcome.FAILED, reason, args.service, details)
    timings["edit"] = _ms(t)

    if system.dry_run:
        # The edited file was not written, so it cannot be tested; the reload's own config
        # test runs on the file as it is: failing, the real edit would be refused too.
        details["config_test"] = "the edit was not written: only the current file was tested"
        reloaded = _call(reload, args.service, ctx)
        details["would"] = _would_since(ctx, marker, details["edit"])
        details["reload"] = _summary(reloaded)
        if reloaded.outcome not in (Outcome.OK, Outcome.WOULD_RUN):
            reason = f"would set {summary}, but the reload would be {reloaded.outcome}: {reloaded.reason}"
            return ActionResult(reloaded.outcome, reason, args.service, details)
        if "state_error" in reloaded.details:
            details.setdefault("state_error", reloaded.details["state_error"])
        undo = _rollback_fn(args.service, ctx, path, original, new, config_test, reload)
        return ActionResult(
            Outcome.WOULD_RUN,
            f"would set {summary} in {path}{note}",
            args.service,
            details,
            rollback=undo,
        )

    t = time.monotonic()
    tested = _call(config_test, args.service, ctx)
    timings["config_test"] = _ms(t)
    details["config_test"] = _summary(tested)
    if tested.outcome is not Outcome.OK:
        restored = _restore(system, path, original, "config_test_failed")
        reason = f"config test failed after setting {summary}; {restored}: {tested.reason}"
        return ActionResult(Outcome.REFUSED, reason, args.service, details)

    t = time.monotonic()
    reloaded = _call(reload, args.service, ctx)
    timings["reload"] = _ms(t)
    details["reload"] = _summary(reloaded)
    if reloaded.outcome is not Outcome.OK:
        restored = _restore(system, path, original, "reload_failed")
        reason = f"reload failed after setting {summary}; {restored}: {reloaded.reason}"
        return ActionResult(Outcome.FAILED, reason, args.service, details)
    log.info(
        "pool_scaled",
        service=args.service,
        path=str(path),
        before=details["before"],
        after=details["after"],
    )
    undo = _rollback_fn(args.service, ctx, path, original, new, config_test, reload)
    return ActionResult(
        Outcome.OK, f"{summary}{note}, reloaded", args.service, details, rollback=undo
    )


def _rollback_fn(
    service: str,
    ctx: ActionContext,
    path: Path,
    original: bytes,
    new: bytes,
    config_test: ServiceFn,
    reload: ServiceFn,
) -> Callable[[], ActionResult]:
    def rollback() -> ActionResult:
        system = ctx.system
        if system.dry_run:
            marker = len(system.would)
            system.replace_file(path, original)
            _call(reload, service, ctx)
            would = _would_since(ctx, marker, None)
            planned: dict[str, Any] = {"file": str(path), "restore": "original", "would": would}
            return ActionResult(
                Outcome.WOULD_RUN, f"would restore {path} and reload", service, planned
            )
        if _read(path) != new:
            return ActionResult(
                Outcome.REFUSED, f"{path} was changed since the edit: not restoring it", service
            )
        restored = _restore(system, path, original, "rollback")
        if restored != "original restored":
            return ActionResult(Outcome.FAILED, restored, service)
        tested = _call(config_test, service, ctx)
        details = {"config_test": _summary(tested)}
        if tested.outcome is not Outcome.OK:
            reason = f"restored {path}, but its config test fails: not reloading"
            return ActionResult(Outcome.REFUSED, reason, service, details)
        reloaded = _call(reload, service, ctx)
        details["reload"] = _summary(reloaded)
        if reloaded.outcome is not Outcome.OK:
            reason = f"restored {path}, reload failed: {reloaded.reason}"
            return ActionResult(Outcome.FAILED, reason, service, details)
        return ActionResult(Outcome.OK, f"restored {path} and reloaded", service, details)

    return rollback


def _restore(system: System, path: Path, original: bytes, why: str) -> str:
    """Put the original bytes back; say whether that worked (the backup is the last resort)."""
    try:
        system.replace_file(path, original)
    except OSError as exc:
        backup = backup_path(path)
        log.error("pool_file_restore_failed", path=str(path), why=why, backup=str(backup))
        return f"RESTORING THE ORIGINAL FAILED ({exc.strerror or exc}); it is in {backup}"
    log.warning("pool_file_restored", path=str(path), why=why)
    return "original restored"


def _call(fn: ServiceFn, service: str, ctx: ActionContext) -> ActionResult:
    """A config test or reload that crashed counts as failed (the edit is then undone)."""
    try:
        return fn(service, ctx)
    except Exception as exc:
        log.exception("service_control_crashed", service=service)
        return ActionResult(Outcome.FAILED, f"crashed: {type(exc).__name__}: {exc}", service)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _would_since(ctx: ActionContext, marker: int, edit: dict[str, Any] | None) -> list[Any]:
    """What the dry run recorded since ``marker``, the file write carrying its line edits."""
    out: list[dict[str, Any]] = []
    for w in ctx.system.would[marker:]:
        item: dict[str, Any] = {"kind": w.kind, **w.detail}
        if w.kind == "write" and edit is not None and item.get("path") == edit["path"]:
            item["changes"] = edit["changes"]
        out.append(item)
    return out


def _summary(r: ActionResult) -> dict[str, Any]:
    return {"outcome": str(r.outcome), "reason": r.reason, **r.details}


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


def _refuse(args: ScaleArgs, reason: str, details: dict[str, Any] | None = None) -> ActionResult:
    return ActionResult(Outcome.REFUSED, reason, args.service, details or {})
