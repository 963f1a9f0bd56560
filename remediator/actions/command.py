"""command: run the operator's program (an argv list, never a shell) with a timeout.

Only ``{playbook}``, ``{incident}`` and ``{service}`` are expanded, from the action context and
the step's own arguments: names remediator made or the operator wrote, never anything read from
a log line. Expansion is a plain substitution (not ``str.format``: no attribute or index lookups),
and each expanded value stays inside its one argv element whatever characters it holds.

The program runs through ``ctx.system.change``: in its own session, its whole process group
TERMed then KILLed at the timeout; in a dry run it does not run at all.
"""

from __future__ import annotations

import re

import structlog

from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import TEMPLATE_KEYS, CommandArgs

log = structlog.get_logger(__name__)

EXCERPT = 2000  # characters of output kept in the reason's details (the end: errors come last)

_TEMPLATE = re.compile(r"\{(" + "|".join(sorted(TEMPLATE_KEYS)) + r")\}")


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
    result = ctx.system.change(argv, args.timeout)
    details: dict[str, object] = {"argv": argv, "timeout_s": args.timeout}
    if result.dry_run:
        details["would"] = [{"kind": w.kind, **w.detail} for w in ctx.system.would[mark:]]
        return ActionResult(Outcome.WOULD_RUN, f"would run {argv[0]}", args.service, details)
    details |= {
        "returncode": result.returncode,
        "duration_ms": round(result.duration * 1000, 1),
        "output": result.output[-EXCERPT:],
    }
    if result.timed_out:
        log.warning("command_timed_out", argv0=argv[0], timeout_s=args.timeout)
        reason = f"{argv[0]} timed out after {args.timeout:g}s; its process group was killed"
        return ActionResult(Outcome.FAILED, reason, args.service, details)
    if not result.ok:
        last = result.output.strip().splitlines()[-1:] or [""]
        reason = f"{argv[0]} exited with status {result.returncode}: {last[0][:200]}".rstrip(": ")
        return ActionResult(Outcome.FAILED, reason, args.service, details)
    return ActionResult(Outcome.OK, f"{argv[0]} exited 0", args.service, details)


ACTIONS: dict[str, ActionFn] = {"command": command}
