"""What an access-log format is made of: literal bytes and typed fields, and its errors."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final


class FormatError(ValueError):
    """A custom format that cannot be used; ``column`` is 1-based in the format string."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column


class Escaping(enum.StrEnum):
    """How the server escapes values, which decides what a value may contain."""

    NGINX = "default"
    """nginx's default: ``"``, ``\\`` and non-printable bytes become ``\\xHH``."""
    BACKSLASH = "json"
    """Apache, and nginx ``escape=json``: ``\\"`` and ``\\\\`` inside values."""
    NONE = "none"
    """nginx ``escape=none``: anything; fields are told apart by their neighbours only."""


class Kind(enum.Enum):
    """What a field's value looks like."""

    TEXT = enum.auto()
    TOKEN = enum.auto()
    INT = enum.auto()
    INT_OR_DASH = enum.auto()
    DECIMAL = enum.auto()
    LIST = enum.auto()
    STATUS = enum.auto()
    TIME_CLF = enum.auto()
    TIME_ISO = enum.auto()
    TIME_EPOCH = enum.auto()
    TIME_STRF = enum.auto()


TIMES: Final = frozenset({Kind.TIME_CLF, Kind.TIME_ISO, Kind.TIME_EPOCH, Kind.TIME_STRF})

# Fields that hold a request's duration, and their unit in seconds.
DURATION: Final = {
    "request_time": 1.0,
    "request_time_s": 1.0,
    "request_time_ms": 1e-3,
    "request_time_us": 1e-6,
}


@dataclass(frozen=True, slots=True, eq=False)  # identity: a format may repeat a field
class Field:
    name: str
    kind: Kind
    scale: float = 1.0  # TIME_EPOCH: seconds per unit
    strf: str = ""  # TIME_STRF: the strftime format


Token = bytes | Field
FieldReader = Callable[[str, int], tuple[list[Token] | str, int]]
"""Reads the field whose sigil is at an index: its tokens (or a literal) and where it ends."""

_CONF_ESCAPES: Final = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def tokenize(fmt: str, sigil: str, field: FieldReader) -> list[Token]:
    """Split a format into literals (bytes, config escapes undone) and fields."""
    tokens: list[Token] = []
    lit: list[str] = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == sigil:
            got, i = field(fmt, i)
            if isinstance(got, str):
                lit.append(got)
                continue
            if lit:
                tokens.append("".join(lit).encode())
                lit.clear()
            tokens += got
            continue
        if c == "\\" and fmt[i + 1 : i + 2] in _CONF_ESCAPES:
            c = _CONF_ESCAPES[fmt[i + 1]]
            i += 1
        if c in "\n\r":
            raise FormatError("a line break would split every entry over two lines", i + 1)
        lit.append(c)
        i += 1
    if lit:
        tokens.append("".join(lit).encode())
    return tokens


def unique(names: list[str]) -> list[str]:
    """Names made unique by a suffix (``status``, ``status_2``): a format may repeat a field."""
    seen: Counter[str] = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out
