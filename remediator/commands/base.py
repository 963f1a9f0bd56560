"""What every command shares: exit statuses and how a configuration's errors are told."""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable
from typing import TextIO

from remediator.load import Loaded, load


class Exit(enum.IntEnum):
    OK = 0
    FAILURE = 1
    CONFIG = 2
    USAGE = 2  # the same status as a bad configuration: the operator has something to fix


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def report_errors(loaded: Loaded, err: TextIO) -> None:
    for e in sorted(loaded.all_errors()):
        print(e, file=err)
    for w in loaded.warnings:
        print(f"warning: {w}", file=err)


def config_or_report(args: argparse.Namespace, err: TextIO) -> Loaded | None:
    loaded = load(args.config)
    if loaded.config is None:
        report_errors(loaded, err)
        return None
    return loaded


Command = Callable[[argparse.Namespace, TextIO, TextIO], Exit]
