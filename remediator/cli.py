"""``remediator [-c CONFIG] COMMAND``: the operator's entry point.

Exit status: 0 success, 2 bad configuration or usage, 1 runtime failure. Errors are one line
each; an unexpected exception prints one line too (set REMEDIATOR_DEBUG=1 for the traceback).
What a command prints goes through :class:`remediator.escape.Writer` (outside text reaches no
terminal raw), and a reader that goes away (``remediator log | head``) ends it quietly.
"""

from __future__ import annotations

import argparse
import enum
import os
import stat
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from remediator import __version__, escape
from remediator.config import DEFAULT_CONFIG
from remediator.load import Loaded, load

if TYPE_CHECKING:
    import datetime as dt

    from remediator.config import Config
    from remediator.playbook import Playbook


class Exit(enum.IntEnum):
    OK = 0
    FAILURE = 1
    CONFIG = 2
    USAGE = 2  # the same status as a bad configuration: the operator has something to fix


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _report(loaded: Loaded, err: TextIO) -> None:
    for e in sorted(loaded.all_errors()):
        print(e, file=err)
    for w in loaded.warnings:
        print(f"warning: {w}", file=err)


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """Validate the config and every playbook file; print a one-line summary."""
    loaded = load(args.config)
    _report(loaded, err)
    if loaded.config is None or not loaded.ok:
        if loaded.config is not None:
            # What `run` would do with it (one truth): the main file is sound, so it would
            # start without what the errors disable. The shipped unit runs this check first
            # and does not start; a SIGHUP keeps a broken file's previous playbooks.
            print(
                f"run would start with {_plural(len(loaded.playbooks), 'playbook')}, without "
                "what these errors disable (the shipped unit checks first and does not start)",
                file=err,
            )
        n = len(loaded.all_errors())
        print(f"{loaded.path}: {_plural(n, 'error')}, configuration not usable", file=err)
        return Exit.CONFIG
    cfg = loaded.config
    for w in _trust_warnings(cfg, loaded.playbooks):
        print(f"warning: {escape.text(w)}", file=err)
    if not _check_logs(cfg, out, err):
        return Exit.CONFIG
    print(
        f"ok: {_plural(len(cfg.sources), 'source')}, {_plural(len(cfg.services), 'service')}, "
        f"{_plural(len(loaded.playbooks), 'playbook')} "
        f"({_plural(len(loaded.files), 'playbook file')}; {loaded.path})",
        file=out,
    )
    return Exit.OK


def _trust_warnings(cfg: Config, playbooks: list[Playbook]) -> list[str]:
    """What forged log lines could do with this config: logs others can write, playbooks
    that log lines alone could set off (``check`` and ``status`` say it)."""
    from remediator import corroborate, logtrust  # noqa: PLC0415

    return [*logtrust.warnings(cfg), *corroborate.warnings(cfg, playbooks)]


def _check_logs(cfg: Any, out: TextIO, err: TextIO) -> bool:
    """The configured logs read in their formats (``remediator.logcheck``); False on an error."""
    from remediator import logcheck, logs  # noqa: PLC0415 - only check reads the logs

    logs.setup(level="error")  # what check found is its output (format: auto says it too)
    report = logcheck.check_logs(cfg)
    for note in report.notes:
        print(note, file=out)
    for w in report.warnings:
        print(f"warning: {w}", file=err)
    for e in report.errors:
        print(f"error: {e}", file=err)
    return not report.errors


def cmd_schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """Print the JSON Schema (or the Markdown reference) generated from the declarations."""
    from remediator import docgen  # noqa: PLC0415 - only this command needs it

    out.write(docgen.markdown() if args.markdown else docgen.json_schema_text(args.target))
    return Exit.OK


def _zone(text: str) -> dt.tzinfo:
    """``--tz``: an IANA zone name or a UTC offset (see :func:`remediator.timezone.parse_zone`)."""
    from remediator.timezone import parse_zone  # noqa: PLC0415

    try:
        return parse_zone(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _not_a_log(path: Path) -> str | None:
    """Why ``path`` cannot be replayed (missing, a FIFO, a directory...), or None."""
    from remediator.filekind import not_regular  # noqa: PLC0415

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return exc.strerror or "cannot be read"
    return None if stat.S_ISREG(mode) else not_regular(mode)


def cmd_replay(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """Run the detectors and playbooks over historical logs, in dry run, with log time."""
    from remediator import logs, replay  # noqa: PLC0415

    logs.setup(level="error")  # the timeline is the output; the engine's own events are noise
    config = None
    playbooks = []
    if args.config.exists() or args.format is None:
        loaded = load(args.config)
        if loaded.config is None:
            _report(loaded, err)
            return Exit.CONFIG
        for f in loaded.files:
            for e in f.errors:
                print(f"{e} (this file's playbooks are left out)", file=err)
        config, playbooks = loaded.config, loaded.playbooks
    unreadable = [(p, why) for p in args.logs if (why := _not_a_log(p)) is not None]
    if unreadable:
        for p, why in unreadable:
            print(escape.text(f"{p}: {why}"), file=err)
        return Exit.CONFIG
    from remediator.when import parse_when  # noqa: PLC0415

    bounds: list[float | None] = []
    for flag, text in (("--from", args.start), ("--to", args.end)):
        try:
            bounds.append(None if text is None else parse_when(text, time.time(), args.tz))
        except ValueError as exc:
            print(f"remediator replay: {flag}: {escape.text(exc)}", file=err)
            return Exit.USAGE
    try:
        records, summary = replay.replay(
            args.logs,
            config,
            playbooks,
            source=args.source,
            fmt=args.format,
            start=bounds[0],
            end=bounds[1],
            tz=args.tz,
        )
    except replay.ReplayError as exc:
        print(f"remediator replay: {escape.text(exc)}", file=err)
        return Exit.CONFIG
    for path, what in summary.get("formats_guessed", {}).items():
        print(escape.text(f"{path}: --format auto: read as {what}"), file=err)
    for warning in summary.get("warnings", ()):
        print(f"warning: {escape.text(warning)}", file=err)
    if args.json:
        replay.print_json(records, summary, out)
    else:
        replay.print_timeline(records, summary, out, tz=args.tz)
    return Exit.OK


def cmd_classify(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """Each error-log line's cause, time and matching rule (like fail2ban-regex, for causes)."""
    from remediator import classify  # noqa: PLC0415
    from remediator.config import ErrorLogSource, JournalSource  # noqa: PLC0415

    fmt = args.format
    if args.source is not None:
        loaded = _config_or_report(args, err)
        if loaded is None or loaded.config is None:
            return Exit.CONFIG
        src = loaded.config.sources.get(args.source)
        if not isinstance(src, ErrorLogSource | JournalSource):
            print(escape.text(f"remediator classify: no error_log or journal source "
                              f"'{args.source}' in {loaded.path}"), file=err)  # fmt: skip
            return Exit.USAGE
        fmt = src.format
    elif fmt is not None and fmt not in classify.ERROR_FORMATS:
        names = ", ".join(classify.ERROR_FORMATS)
        print(escape.text(f"remediator classify: unknown format '{fmt}' ({names})"), file=err)
        return Exit.USAGE
    formats = classify.formats_for(fmt)
    tally = classify.Tally()
    many = len(args.logs) > 1
    stdin = sys.stdin.buffer
    for name in args.logs:
        try:
            f = classify.open_input(name, stdin)
        except OSError as exc:
            print(escape.text(f"{name}: {exc.strerror or exc}"), file=err)
            return Exit.CONFIG
        with f:
            rows = classify.classify_lines(
                f, formats, tally, where=f"{name}:" if many else "", tz=args.tz
            )
            if args.json:
                classify.print_json(rows, out)
            else:
                classify.print_text(rows, out)
    if args.json:
        classify.print_json_summary(tally, out)
    else:
        classify.print_text_summary(tally, out)
    return Exit.OK


def _since(text: str) -> float:
    """``log --since/--until``: ``14:41``, ``yesterday 14:00``, ``2h`` (ago), ISO 8601, epoch."""
    from remediator.when import parse_when  # noqa: PLC0415

    try:
        return parse_when(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _config_or_report(args: argparse.Namespace, err: TextIO) -> Loaded | None:
    loaded = load(args.config)
    if loaded.config is None:
        _report(loaded, err)
        return None
    return loaded


def cmd_log(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """The action log as incident timelines (or JSON lines)."""
    import json  # noqa: PLC0415

    from remediator import review  # noqa: PLC0415

    loaded = _config_or_report(args, err)
    if loaded is None or loaded.config is None:
        return Exit.CONFIG
    path = loaded.config.action_log
    flt = review.Filter(args.since, args.until, args.incident, args.playbook, args.outcome)
    everything = list(review.records(path))
    problem = review.refuse(flt, everything, [pb.name for pb in loaded.playbooks], path)
    if problem is not None:
        print(f"remediator log: {escape.text(problem)}", file=err)
        return Exit.USAGE
    if args.follow:
        try:
            review.follow(path, flt, out, as_json=args.json)
        except KeyboardInterrupt:
            return Exit.OK
    recs = review.select(everything, flt)
    if args.json:
        for rec in recs:
            out.write(json.dumps(rec, separators=(",", ":")) + "\n")
    elif recs:
        review.render(recs, out, all_evidence=args.evidence)
    else:
        print(escape.text(f"no records in {path} match"), file=err)
    return Exit.OK


def cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """One incident as a self-contained HTML page (``remediator.report``); prints its path."""
    import socket  # noqa: PLC0415

    from remediator import logs, report  # noqa: PLC0415 - never in the daemon's import path

    logs.setup(level="error")  # the page is the output
    loaded = _config_or_report(args, err)
    if loaded is None or loaded.config is None:
        return Exit.CONFIG
    try:
        made = report.build(
            loaded.config, args.incident, now=time.time(), host=socket.gethostname(), tz=args.tz
        )
    except report.NoIncident as exc:
        print(f"remediator report: {escape.text(exc)}", file=err)
        return Exit.USAGE
    except OSError as exc:  # the action log (or a log) could not be read at all
        print(
            escape.text(f"remediator report: {exc.filename or ''}: {exc.strerror or exc}"), file=err
        )
        return Exit.FAILURE
    if args.output == "-":
        out.write(made.html)
        return Exit.OK
    path = Path(args.output or made.incident.file_name())
    try:
        report.write(made.html, path)
    except OSError as exc:
        print(escape.text(f"remediator report: {path}: {exc.strerror or exc}"), file=err)
        return Exit.FAILURE
    print(escape.text(path), file=out)
    return Exit.OK


def _switch_config(args: argparse.Namespace, err: TextIO, playbook: str | None) -> Loaded | None:
    """The configuration for a switch (and ``playbook`` in it), or None (reported)."""
    from remediator import logs  # noqa: PLC0415

    logs.setup(level="error")  # a switch prints its answer; the engine's own events are noise
    loaded = _config_or_report(args, err)
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
    import time  # noqa: PLC0415

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


def _duration_arg(text: str) -> float:
    from remediator.schema import parse_duration  # noqa: PLC0415

    value = parse_duration(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration like 30m or 2h")
    return value


def _reason_arg(text: str) -> str:
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
    loaded = _config_or_report(args, err)
    if loaded is None:
        return Exit.CONFIG
    _report(loaded, err)  # a broken playbook file only disables itself: say so loudly
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
        for w in _trust_warnings(loaded.config, loaded.playbooks):
            print(f"warning: {escape.text(w)}", file=err)
    else:  # the file on disk is broken; the daemon may still run on the previous one
        print(f"warning: {args.config} has errors (remediator check shows them)", file=err)
        state_dir = state_dir_hint(args.config)
    return Exit.OK if status.show(state_dir, out, as_json=args.json) else Exit.FAILURE


def cmd_init(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """Write the example configuration into DIR, in dry run; never overwrite."""
    from remediator import initconf  # noqa: PLC0415 - only this command needs it

    try:
        initconf.init(args.dir, out)
    except initconf.InitError as exc:
        print(f"remediator init: {escape.text(exc)}", file=err)
        return Exit.USAGE
    except OSError as exc:
        print(escape.text(f"remediator init: {exc.filename}: {exc.strerror or exc}"), file=err)
        return Exit.FAILURE
    return Exit.OK


def _add_init(sub: Any) -> None:
    it = sub.add_parser("init", help="write the example configuration (in dry run) into DIR")
    it.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=DEFAULT_CONFIG.parent,
        metavar="DIR",
        help=f"where (default: {DEFAULT_CONFIG.parent}); nothing is overwritten",
    )
    it.set_defaults(func=cmd_init)


def _switch_parsers(sub: Any) -> None:
    """pause, resume, reset and trigger: the operator's switches, applied by the daemon."""
    tr = sub.add_parser(
        "trigger", help="run one playbook now, through the same guards (in the daemon)"
    )
    tr.add_argument("playbook")
    tr.add_argument("--dry-run", action="store_true", help="log would_run, change nothing")
    tr.add_argument("--force", action="store_true", help="pass the guards (logged as forced)")
    tr.add_argument("--reason", type=_reason_arg, help="why, for the action log")
    tr.set_defaults(func=cmd_trigger)
    pa = sub.add_parser("pause", help="maintenance: watch and log, but take no action")
    pa.add_argument(
        "--for", dest="duration", type=_duration_arg, help="e.g. 30m (default: until resume)"
    )
    pa.add_argument("--reason", type=_reason_arg, help="shown in the log and status")
    pa.set_defaults(func=cmd_pause)
    re_ = sub.add_parser("resume", help="end a pause")
    re_.add_argument("--reason", type=_reason_arg, help="why, for the action log")
    re_.set_defaults(func=cmd_resume)
    rs = sub.add_parser("reset", help="close a playbook's breaker")
    rs.add_argument("playbook")
    rs.add_argument("--reason", type=_reason_arg, help="why, for the action log")
    rs.set_defaults(func=cmd_reset)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="remediator",
        description="Watch a web host's 502s and follow YAML playbooks to fix them.",
    )
    p.add_argument("--version", action="version", version=f"remediator {__version__}")
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(os.environ.get("REMEDIATOR_CONFIG", str(DEFAULT_CONFIG))),
        help=f"main config file (default: $REMEDIATOR_CONFIG or {DEFAULT_CONFIG})",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("check", help="validate the config and playbooks")
    c.set_defaults(func=cmd_check)
    s = sub.add_parser("schema", help="print the JSON Schema of the config or playbook files")
    s.add_argument("target", nargs="?", choices=("config", "playbook"), default="config")
    s.add_argument("--markdown", action="store_true", help="the Markdown reference instead")
    s.set_defaults(func=cmd_schema)
    _add_replay(sub)
    rn = sub.add_parser("run", help="the daemon (as the systemd service runs it)")
    rn.add_argument("--dry-run", action="store_true", help="log would_run, change nothing")
    rn.add_argument("--polling", action="store_true", help="poll log files instead of inotify")
    rn.set_defaults(func=cmd_run)
    st = sub.add_parser("status", help="sources, incident, guards and last actions of the daemon")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    _add_log(sub)
    _add_report(sub)
    _add_classify(sub)
    _switch_parsers(sub)
    _add_init(sub)
    return p


def _add_replay(sub: Any) -> None:
    r = sub.add_parser(
        "replay", help="show what the playbooks would have done over old logs (dry run)"
    )
    r.add_argument("logs", nargs="+", type=Path, metavar="LOG", help="log files, .gz too")
    r.add_argument("--json", action="store_true", help="JSON lines; the last is the summary")
    which = r.add_mutually_exclusive_group()
    which.add_argument("--source", help="read every LOG as this configured source")
    which.add_argument(
        "--format",
        help="read every LOG in this format (nginx-combined, nginx-error, ...); auto: guess "
        "among the built-in access log formats from each file's first lines, and say which",
    )
    r.add_argument(
        "--tz",
        type=_zone,
        metavar="ZONE",
        help="zone of log times written without a UTC offset (error logs): Europe/Paris, "
        "+01:00, UTC (default: this machine's)",
    )
    r.add_argument(
        "--from", dest="start", help="skip lines before this time (14:41, ISO 8601; naive: --tz)"
    )
    r.add_argument("--to", dest="end", help="skip lines after this time")
    r.set_defaults(func=cmd_replay)


def _add_classify(sub: Any) -> None:
    c = sub.add_parser(
        "classify", help="the cause, time and rule of each error-log line (test your logs)"
    )
    c.add_argument("logs", nargs="+", metavar="FILE", help="error logs (.gz too), - for stdin")
    c.add_argument("--json", action="store_true", help="JSON lines; the last is the summary")
    which = c.add_mutually_exclusive_group()
    which.add_argument("--format", help="nginx-error, apache-error or php-fpm (default: try all)")
    which.add_argument("--source", help="read the lines as this configured source's format")
    c.add_argument(
        "--tz", type=_zone, metavar="ZONE", help="zone of the logs' local times (default: here)"
    )
    c.set_defaults(func=cmd_classify)


def _add_log(sub: Any) -> None:
    lg = sub.add_parser("log", help="review the action log: incident timelines")
    lg.add_argument(
        "--since", type=_since, help="14:41, yesterday 14:00, 2h (ago), ISO 8601 or epoch"
    )
    lg.add_argument("--until", type=_since, help="like --since")
    lg.add_argument("--incident", help="one incident (an id or its prefix)")
    lg.add_argument("--playbook", help="one playbook's records")
    lg.add_argument("--outcome", help="incidents that ended so (resolved, exhausted, ...)")
    lg.add_argument("--evidence", action="store_true", help="every evidence line, not a few")
    lg.add_argument("--json", action="store_true", help="JSON lines for tools")
    lg.add_argument("--follow", action="store_true", help="keep printing new records")
    lg.set_defaults(func=cmd_log)


def _add_report(sub: Any) -> None:
    rp = sub.add_parser("report", help="one incident as a self-contained HTML page (a chart)")
    which = rp.add_mutually_exclusive_group()
    which.add_argument("incident", nargs="?", help="an incident id or its prefix")
    which.add_argument(
        "--last", action="store_const", const=None, dest="incident", help="the newest (default)"
    )
    rp.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write it (default: ./incident-ID.html; - for stdout)",
    )
    rp.add_argument(
        "--tz", type=_zone, metavar="ZONE", help="zone of the times shown (default: this machine's)"
    )
    rp.set_defaults(func=cmd_report)


Command = Callable[[argparse.Namespace, TextIO, TextIO], Exit]


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one command; ``out``/``err`` default to the process's streams (tests pass buffers)."""
    own_stdout = out is None
    out = cast(TextIO, escape.Writer(out or sys.stdout))
    err = cast(TextIO, escape.Writer(err or sys.stderr))
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help/--version exit 0
        return int(exc.code or 0)
    func: Command = args.func
    try:
        rc = int(func(args, out, err))
        out.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:  # the reader went away (`remediator log | head -1`): nothing to say
        if own_stdout:
            _stdout_to_devnull()
        return int(Exit.OK)
    except KeyboardInterrupt:
        return int(Exit.FAILURE)
    except Exception as exc:
        if os.environ.get("REMEDIATOR_DEBUG"):
            traceback.print_exc(file=err)
        print(
            f"remediator: internal error: {type(exc).__name__}: {escape.text(exc)} "
            "(REMEDIATOR_DEBUG=1 shows where)",
            file=err,
        )
        return int(Exit.FAILURE)
    return rc


def _stdout_to_devnull() -> None:
    """Point the process's stdout at /dev/null, so that Python's own flush at exit finds
    nowhere to fail (what is still buffered was meant for a reader who left)."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass
