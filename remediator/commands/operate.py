"""``run`` and ``status``, and the operator's switches (``pause``, ``resume``, ``reset``,
``trigger``), which the running daemon applies."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TextIO

from remediator import escape
from remediator.commands.base import Exit, config_or_report, report_errors
from remediator.commands.check import trust_warnings
from remediator.load import Loaded, load


def _switch_config(args: argparse.Namespace, err: TextIO, playbook: str | None) -> Loaded | None:
    """The configuration for a switch (and ``playbook`` in it), or None (reported)."""
    from remediator import logs  # noqa: PLC0415

    logs.setup(level="error")  # a switch prints its answer; the engine's own events are noise
    loaded = config_or_report(args, err)
    if loaded is None or loaded.config is None:
        return None
    names = {pb.name for pb in loaded.playbooks}
    if playbook is not None and playbook not in names:
        from remediator.schema import did_you_mean  # noqa: PLC0415

        print(f"no playbook '{playbook}'{did_you_mean(playbook, names)}", file=err)
        return None
    return loaded


def _send(
    loaded: Loaded,
    req: Any,
    out: TextIO,
    err: TextIO,
    here: Callable[[Any], Any] | None = None,
) -> Any:
    """Hand ``req`` to the running daemon (or apply it here); print the acknowledgement.
    The reply, or None when it could not be handed over (reported)."""

    from remediator import inbox, operator, switches  # noqa: PLC0415

    cfg = loaded.config
    if cfg is None:
        raise ValueError("no usable configuration")

    def apply_here(r: operator.Request) -> operator.Reply:
        now = time.monotonic()
        return switches.apply(switches.offline_engine(loaded, now), r, now, pid=None)

    try:
        reply = inbox.send(cfg.state_dir, req, here or apply_here)
    except operator.OperatorError as exc:
        print(f"remediator {req.kind}: {exc}", file=err)
        return None
    print(reply.line(req.kind), file=out)
    return reply


def _switch(args: argparse.Namespace, out: TextIO, err: TextIO, **fields: Any) -> Exit:
    from remediator.operator import Kind, Request, login_name  # noqa: PLC0415

    loaded = _switch_config(args, err, fields.get("playbook"))
    if loaded is None:
        return Exit.CONFIG
    req = Request(Kind(args.command), login_name(), getattr(args, "reason", None) or "", **fields)
    reply = _send(loaded, req, out, err)
    return Exit.OK if reply is not None and reply.applied else Exit.FAILURE


def cmd_pause(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """Turn every action into a logged no-op, for a while or until ``resume``."""
    return _switch(args, out, err, duration=args.duration)


def cmd_resume(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """End a pause."""
    return _switch(args, out, err)


def cmd_reset(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """Close a playbook's breaker and forget its failures and back-off."""
    return _switch(args, out, err, playbook=args.playbook)


def duration_arg(text: str) -> float:
    from remediator.schema import parse_duration  # noqa: PLC0415

    value = parse_duration(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration like 30m or 2h")
    return value


def reason_arg(text: str) -> str:
    from remediator.operator import MAX_REASON, text_problem  # noqa: PLC0415

    problem = text_problem(text, MAX_REASON)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"the reason is {problem}")
    return text


def _daemon(args: argparse.Namespace, loaded: Loaded) -> Any:
    from remediator import logs  # noqa: PLC0415
    from remediator.actions.registry import all_actions  # noqa: PLC0415
    from remediator.daemon import Daemon  # noqa: PLC0415
    from remediator.sources.tail import Backend  # noqa: PLC0415

    cfg = loaded.config
    if cfg is not None:
        logs.setup(cfg.log_format, cfg.log_level)
    backend = Backend.POLLING if getattr(args, "polling", False) else Backend.AUTO
    return Daemon(args.config, all_actions(), dry_run=args.dry_run, backend=backend)


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """The daemon: watch, decide, act, log; until SIGTERM."""
    loaded = config_or_report(args, err)
    if loaded is None:
        return Exit.CONFIG
    report_errors(loaded, err)  # a broken playbook file only disables itself: say so loudly
    return Exit(_daemon(args, loaded).run())


FOLLOW_LIMIT = 900.0  # how long `trigger` follows an incident the daemon runs


def cmd_trigger(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """Run one playbook now, through the same guards (``--force`` passes them, logged); print
    its timeline. In a dry run, 0 when every step would have run; else 0 when it resolved."""
    from remediator import operator, review, switches  # noqa: PLC0415
    from remediator.actions.registry import all_actions  # noqa: PLC0415
    from remediator.daemon import Daemon  # noqa: PLC0415
    from remediator.daemonlock import daemon_pid  # noqa: PLC0415
    from remediator.follow import LogTail  # noqa: PLC0415

    loaded = _switch_config(args, err, args.playbook)
    if loaded is None or loaded.config is None:
        return Exit.CONFIG
    cfg = loaded.config
    req = operator.Request(
        operator.Kind.TRIGGER,
        operator.login_name(),
        args.reason or "",
        playbook=args.playbook,
        force=args.force,
        dry_run=args.dry_run,
    )
    tail = LogTail(cfg.action_log)  # the incident's records come after this
    try:
        reply = _send(
            loaded, req, out, err, lambda r: Daemon(args.config, all_actions()).trigger(r)
        )
        if reply is None or not reply.applied or reply.incident is None:
            return Exit.FAILURE
        daemon = reply.pid
        recs, closed = tail.incident(
            reply.incident,
            limit=FOLLOW_LIMIT if daemon is not None else 0.0,
            alive=lambda: daemon_pid(cfg.state_dir) == daemon,
        )
    finally:
        tail.close()
    review.render(recs, out)
    if not closed:
        why = "the daemon stopped" if daemon_pid(cfg.state_dir) != daemon else "still open"
        print(
            f"incident {reply.incident} did not close here ({why}): "
            f"`remediator log --incident {reply.incident}` shows the rest",
            file=err,
        )
    ok = switches.trigger_succeeded(recs, dry_run=args.dry_run)
    return Exit.OK if ok else Exit.FAILURE


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """What the running daemon watches and does; exit 1 when it is not running."""
    from remediator import status  # noqa: PLC0415
    from remediator.load import state_dir_hint  # noqa: PLC0415

    loaded = load(args.config)
    if loaded.config is not None:
        state_dir = loaded.config.state_dir
        for w in trust_warnings(loaded.config, loaded.playbooks):
            print(f"warning: {escape.text(w)}", file=err)
    else:  # the file on disk is broken; the daemon may still run on the previous one
        print(f"warning: {args.config} has errors (remediator check shows them)", file=err)
        state_dir = state_dir_hint(args.config)
    return Exit.OK if status.show(state_dir, out, as_json=args.json) else Exit.FAILURE


def add_switches(sub: Any) -> None:
    """pause, resume, reset and trigger: the operator's switches, applied by the daemon."""
    tr = sub.add_parser(
        "trigger", help="run one playbook now, through the same guards (in the daemon)"
    )
    tr.add_argument("playbook")
    tr.add_argument("--dry-run", action="store_true", help="log would_run, change nothing")
    tr.add_argument("--force", action="store_true", help="pass the guards (logged as forced)")
    tr.add_argument("--reason", type=reason_arg, help="why, for the action log")
    tr.set_defaults(func=cmd_trigger)
    pa = sub.add_parser("pause", help="maintenance: watch and log, but take no action")
    pa.add_argument(
        "--for", dest="duration", type=duration_arg, help="e.g. 30m (default: until resume)"
    )
    pa.add_argument("--reason", type=reason_arg, help="shown in the log and status")
    pa.set_defaults(func=cmd_pause)
    re_ = sub.add_parser("resume", help="end a pause")
    re_.add_argument("--reason", type=reason_arg, help="why, for the action log")
    re_.set_defaults(func=cmd_resume)
    rs = sub.add_parser("reset", help="close a playbook's breaker")
    rs.add_argument("playbook")
    rs.add_argument("--reason", type=reason_arg, help="why, for the action log")
    rs.set_defaults(func=cmd_reset)


def add_run(sub: Any) -> None:
    rn = sub.add_parser("run", help="the daemon (as the systemd service runs it)")
    rn.add_argument("--dry-run", action="store_true", help="log would_run, change nothing")
    rn.add_argument("--polling", action="store_true", help="poll log files instead of inotify")
    rn.set_defaults(func=cmd_run)


def add_status(sub: Any) -> None:
    st = sub.add_parser("status", help="sources, incident, guards and last actions of the daemon")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
