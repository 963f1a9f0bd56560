"""``check``, ``schema`` and ``init``: the configuration, judged, described and written."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from remediator import escape
from remediator.commands.base import Exit, plural, report_errors
from remediator.config import DEFAULT_CONFIG
from remediator.load import load

if TYPE_CHECKING:
    from remediator.config import Config
    from remediator.playbook import Playbook


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """Validate the config and every playbook file; print a one-line summary."""
    loaded = load(args.config)
    report_errors(loaded, err)
    if loaded.config is None or not loaded.ok:
        if loaded.config is not None:
            # What `run` would do with it (one truth): the main file is sound, so it would
            # start without what the errors disable. The shipped unit runs this check first
            # and does not start; a SIGHUP keeps a broken file's previous playbooks.
            print(
                f"run would start with {plural(len(loaded.playbooks), 'playbook')}, without "
                "what these errors disable (the shipped unit checks first and does not start)",
                file=err,
            )
        n = len(loaded.all_errors())
        print(f"{loaded.path}: {plural(n, 'error')}, configuration not usable", file=err)
        return Exit.CONFIG
    cfg = loaded.config
    for w in trust_warnings(cfg, loaded.playbooks):
        print(f"warning: {escape.text(w)}", file=err)
    if not _check_logs(cfg, out, err):
        return Exit.CONFIG
    print(
        f"ok: {plural(len(cfg.sources), 'source')}, {plural(len(cfg.services), 'service')}, "
        f"{plural(len(loaded.playbooks), 'playbook')} "
        f"({plural(len(loaded.files), 'playbook file')}; {loaded.path})",
        file=out,
    )
    return Exit.OK


def trust_warnings(cfg: Config, playbooks: list[Playbook]) -> list[str]:
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


def add_init(sub: Any) -> None:
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


def add_check(sub: Any) -> None:
    c = sub.add_parser("check", help="validate the config and playbooks")
    c.set_defaults(func=cmd_check)


def add_schema(sub: Any) -> None:
    s = sub.add_parser("schema", help="print the JSON Schema of the config or playbook files")
    s.add_argument("target", nargs="?", choices=("config", "playbook"), default="config")
    s.add_argument("--markdown", action="store_true", help="the Markdown reference instead")
    s.set_defaults(func=cmd_schema)
