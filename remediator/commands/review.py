"""``replay``, ``classify``, ``log`` and ``report``: what happened, and what would have."""

from __future__ import annotations

import argparse
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from remediator import escape
from remediator.commands.base import Exit, config_or_report, report_errors
from remediator.load import load

if TYPE_CHECKING:
    import datetime as dt


def zone(text: str) -> dt.tzinfo:
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
            report_errors(loaded, err)
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
        loaded = config_or_report(args, err)
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


def since(text: str) -> float:
    """``log --since/--until``: ``14:41``, ``yesterday 14:00``, ``2h`` (ago), ISO 8601, epoch."""
    from remediator.when import parse_when  # noqa: PLC0415

    try:
        return parse_when(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_log(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """The action log as incident timelines (or JSON lines)."""
    import json  # noqa: PLC0415

    from remediator import review  # noqa: PLC0415

    loaded = config_or_report(args, err)
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
    loaded = config_or_report(args, err)
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


def add_replay(sub: Any) -> None:
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
        type=zone,
        metavar="ZONE",
        help="zone of log times written without a UTC offset (error logs): Europe/Paris, "
        "+01:00, UTC (default: this machine's)",
    )
    r.add_argument(
        "--from", dest="start", help="skip lines before this time (14:41, ISO 8601; naive: --tz)"
    )
    r.add_argument("--to", dest="end", help="skip lines after this time")
    r.set_defaults(func=cmd_replay)


def add_classify(sub: Any) -> None:
    c = sub.add_parser(
        "classify", help="the cause, time and rule of each error-log line (test your logs)"
    )
    c.add_argument("logs", nargs="+", metavar="FILE", help="error logs (.gz too), - for stdin")
    c.add_argument("--json", action="store_true", help="JSON lines; the last is the summary")
    which = c.add_mutually_exclusive_group()
    which.add_argument("--format", help="nginx-error, apache-error or php-fpm (default: try all)")
    which.add_argument("--source", help="read the lines as this configured source's format")
    c.add_argument(
        "--tz", type=zone, metavar="ZONE", help="zone of the logs' local times (default: here)"
    )
    c.set_defaults(func=cmd_classify)


def add_log(sub: Any) -> None:
    lg = sub.add_parser("log", help="review the action log: incident timelines")
    lg.add_argument(
        "--since", type=since, help="14:41, yesterday 14:00, 2h (ago), ISO 8601 or epoch"
    )
    lg.add_argument("--until", type=since, help="like --since")
    lg.add_argument("--incident", help="one incident (an id or its prefix)")
    lg.add_argument("--playbook", help="one playbook's records")
    lg.add_argument("--outcome", help="incidents that ended so (resolved, exhausted, ...)")
    lg.add_argument("--evidence", action="store_true", help="every evidence line, not a few")
    lg.add_argument("--json", action="store_true", help="JSON lines for tools")
    lg.add_argument("--follow", action="store_true", help="keep printing new records")
    lg.set_defaults(func=cmd_log)


def add_report(sub: Any) -> None:
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
        "--tz", type=zone, metavar="ZONE", help="zone of the times shown (default: this machine's)"
    )
    rp.set_defaults(func=cmd_report)
