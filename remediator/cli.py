"""``remediator [-c CONFIG] COMMAND``: the operator's entry point.

Exit status: 0 success, 2 bad configuration or usage, 1 runtime failure. Errors are one line
each; an unexpected exception prints one line too (set REMEDIATOR_DEBUG=1 for the traceback).
What a command prints goes through :class:`remediator.escape.Writer` (outside text reaches no
terminal raw), and a reader that goes away (``remediator log | head``) ends it quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO, cast

from remediator import __version__, escape
from remediator.commands import check, operate, review
from remediator.commands.base import Command, Exit
from remediator.config import DEFAULT_CONFIG


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
    for add in (
        check.add_check,
        check.add_schema,
        review.add_replay,
        operate.add_run,
        operate.add_status,
        review.add_log,
        review.add_report,
        review.add_classify,
        operate.add_switches,
        check.add_init,
    ):
        add(sub)
    return p


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


__all__ = ["Exit", "main"]
