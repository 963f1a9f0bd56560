"""command: run the operator's program (an argv list, never a shell) with a timeout.

Only ``{playbook}``, ``{incident}`` and ``{service}`` are expanded, from the action context and
the step's own arguments: names remediator made or the operator wrote, never anything read from
a log line. Expansion is a plain substitution (not ``str.format``: no attribute or index lookups),
and each expanded value stays inside its one argv element whatever characters it holds.

The program runs through ``ctx.system.change_contained``: under a per-command subreaper
(:mod:`remediator.contain`) that TERMs then KILLs every process it started at the timeout, also
those that called ``setsid`` or double-forked; the result names each one. Its environment is
built here, never inherited: a fixed ``PATH``, ``LANG``, the ``REMEDIATOR_*`` names of the run,
then the step's ``env:`` (literal strings). The daemon's own environment (``NOTIFY_SOCKET``,
``INVOCATION_ID``, credentials a service manager passed) never reaches it. In a dry run it
does not run at all.
"""

from __future__ import annotations

import re

import structlog

from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import TEMPLATE_KEYS, CommandArgs

log = structlog.get_logger(__name__)

EXCERPT = 2000  # characters of output kept in the reason's details (the end: errors come last)

_TEMPLATE = re.compile(r"\{(" + "|".join(sorted(TEMPLATE_KEYS)) + r")\}")
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LANG = "C.UTF-8"


def environment(args: CommandArgs, ctx: ActionContext) -> dict[str, str]:
    """Exactly what the program gets: PATH, LANG, REMEDIATOR_*, then the step's ``env:``."""
    env = {"PATH": SAFE_PATH, "LANG": LANG}
    env |= {"REMEDIATOR_PLAYBOOK": ctx.playbook, "REMEDIATOR_INCIDENT": ctx.incident}
    if args.service is not None:
        env["REMEDIATOR_SERVICE"] = args.service
    env |= args.env  # validated at load time: names, no NUL, no REMEDIATOR_*
    return env


def expand(argv: tuple[str, ...], values: dict[str, str]) -> list[str]:
    """``argv`` with each whitelisted ``{key}`` replaced by ``values[key]``; nothing else."""
    return [_TEMPLATE.sub(lambda m: values[m.group(1)], arg) for arg in argv]


def command(args: CommandArgs, ctx: ActionContext) -> ActionResult:
    """Run ``args.argv`` (templates expanded); OK iff it exits 0 within its timeout."""
    used = {m.group(1) for arg in args.argv for m in _TEMPLATE.finditer(arg)}
    if "service" in used and args.service is None:
        return ActionResult(
            Outcome.REFUSED, "argv uses {service} but the step names no service", None
        )
    values = {"playbook": ctx.playbook, "incident": ctx.incident, "service": args.service or ""}
    argv = expand(args.argv, values)
    mark = len(ctx.system.would)
    result = ctx.system.change_contained(argv, args.timeout, environment(args, ctx))
    details: dict[str, object] = {"argv": argv, "timeout_s": args.timeout}
    if args.env:
        details["env"] = sorted(args.env)  # names only: a value may be a token
    if result.dry_run:
        details["would"] = [{"kind": w.kind, **w.detail} for w in ctx.system.would[mark:]]
        return ActionResult(Outcome.WOULD_RUN, f"would run {argv[0]}", args.service, details)
    details |= {
        "returncode": result.returncode,
        "duration_ms": round(result.duration * 1000, 1),
        "output": result.output[-EXCERPT:],
    }
    if result.left_running:
        details["left_running"] = _named(result.left_running)
    if result.timed_out:
        details["killed"] = _named(result.killed)
        if result.survivors:
            details["survivors"] = _named(result.survivors)
        log.warning(
            "command_timed_out",
            argv0=argv[0],
            timeout_s=args.timeout,
            killed=len(result.killed),
            survivors=len(result.survivors),
        )
        ended = (
            f"{len(result.killed)} process(es) it started were killed"
            if not result.survivors
            else f"{len(result.survivors)} of its processes survived every KILL"
        )
        reason = f"{argv[0]} timed out after {args.timeout:g}s; {ended}"
        return ActionResult(Outcome.FAILED, reason, args.service, details)
    if not result.ok:
        last = result.output.strip().splitlines()[-1:] or [""]
        reason = f"{argv[0]} exited with status {result.returncode}: {last[0][:200]}".rstrip(": ")
        return ActionResult(Outcome.FAILED, reason, args.service, details)
    return ActionResult(Outcome.OK, f"{argv[0]} exited 0", args.service, details)


def _named(procs: tuple[tuple[int, str], ...]) -> list[dict[str, object]]:
    return [{"pid": pid, "name": name} for pid, name in procs]


ACTIONS: dict[str, ActionFn] = {"command": command}
