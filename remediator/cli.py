"""``remediator [-c CONFIG] COMMAND``: the operator's entry point.

Exit status: 0 success, 2 bad configuration or usage, 1 runtime failure. Errors are one line
each; an unexpected exception prints one line too (set REMEDIATOR_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from remediator import __version__
from remediator.config import DEFAULT_CONFIG
from remediator.load import Loaded, load


class Exit(enum.IntEnum):
    OK = 0
    FAILURE = 1
    CONFIG = 2


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
        n = len(loaded.all_errors())
        print(f"{loaded.path}: {_plural(n, 'error')}, configuration not usable", file=err)
        return Exit.CONFIG
    cfg = loaded.config
    print(
        f"ok: {_plural(len(cfg.sources), 'source')}, {_plural(len(cfg.services), 'service')}, "
        f"{_plural(len(loaded.playbooks), 'playbook')} "
        f"({_plural(len(loaded.files), 'playbook file')}; {loaded.path})",
        file=out,
    )
    return Exit.OK


def cmd_schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """Print the JSON Schema (or the Markdown reference) generated from the declarations."""
    from remediator import docgen  # noqa: PLC0415 - only this command needs it

    out.write(docgen.markdown() if args.markdown else docgen.json_schema_text(args.target))
    return Exit.OK


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
    return p


Command = Callable[[argparse.Namespace, TextIO, TextIO], Exit]


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one command; ``out``/``err`` default to the process's streams (tests pass buffers)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help/--version exit 0
        return int(exc.code or 0)
    func: Command = args.func
    try:
        return int(func(args, out, err))
    except KeyboardInterrupt:
        return int(Exit.FAILURE)
    except Exception as exc:
        if os.environ.get("REMEDIATOR_DEBUG"):
            traceback.print_exc(file=err)
        print(
            f"remediator: internal error: {type(exc).__name__}: {exc} "
            "(REMEDIATOR_DEBUG=1 shows where)",
            file=err,
        )
        return int(Exit.FAILURE)
