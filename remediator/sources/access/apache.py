"""Apache's ``LogFormat``: the bare format string, or the directive pasted from apache2.conf.

``LogFormat "%h %l %u %t \\"%r\\" %>s %O" common``: the word ``LogFormat`` and the nickname are
optional; the format is the one quoted argument, its ``\\"`` undone. Apache writes ``\\"`` and
``\\\\`` inside values, which the regexes allow.
"""

from __future__ import annotations

import re
from typing import Final, cast

from remediator.sources.access import directive, timeparse
from remediator.sources.access.compiled import AccessFormat
from remediator.sources.access.model import Escaping, Field, FormatError, Kind, Token, tokenize

_DIRECTIVE: Final = re.compile(r"%(!?\d{3}(?:,\d{3})*)?([<>])?(?:\{([^}]*)\})?(\^t[io]|.?)")
# directive, field name, kind
_TABLE: Final = """
a remote_addr TOKEN      A local_addr TOKEN     B bytes INT          b bytes INT_OR_DASH
D request_time_us INT    f filename TEXT        h remote_host TOKEN  H protocol TOKEN
k keepalive INT          l remote_logname TEXT  L log_id TOKEN       m method TOKEN
p port INT               P pid TOKEN            q query TEXT         r request TEXT
R handler TEXT           u remote_user TEXT     U url_path TEXT      v server_name TOKEN
V server_name TOKEN      X connection_status TOKEN                   I bytes_in INT
O bytes_out INT          S bytes_total INT
"""
_WORDS: Final = _TABLE.split()
_SIMPLE: Final = {
    d: (n, Kind[k]) for d, n, k in zip(_WORDS[0::3], _WORDS[1::3], _WORDS[2::3], strict=True)
}
_NAMED: Final = {
    "i": "http_",
    "o": "sent_http_",
    "e": "env_",
    "n": "note_",
    "C": "cookie_",
    "^ti": "trailer_in_",
    "^to": "trailer_out_",
}
_EPOCHS: Final = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
_KEYWORD: Final = re.compile(r"\s*LogFormat(?:\s|$)", re.IGNORECASE)
_QUOTED_ONLY: Final = re.compile(r"""\s*(["'])(?:(?!\1)[^\\]|\\.)*\1(?:\s+[\w.:-]+)?\s*""", re.S)


def compile_apache_format(
    fmt: str, *, name: str = "custom", description: str = "an operator's Apache LogFormat"
) -> AccessFormat:
    """Compile an Apache ``LogFormat``: its string, or the whole directive as pasted from the
    server's config (``LogFormat "..." nickname``); config escapes (``\\"``, ``\\t``) are undone."""
    spans: list[tuple[int, int]] = []
    keyword = _KEYWORD.match(fmt)
    if keyword is not None or _QUOTED_ONLY.fullmatch(fmt):
        offset = keyword.end() if keyword else 0
        args = directive.words(fmt[offset:], semicolon=False)
        if not args or len(args) > 2:
            raise FormatError(
                "LogFormat takes a format string and, optionally, a nickname", offset + 1
            )
        first = args[0]
        fmt, spans = first.text, [(0, first.start + offset)]
    try:
        tokens = tokenize(fmt, "%", _field)
        return AccessFormat(name, description, fmt, tokens, Escaping.BACKSLASH)
    except FormatError as exc:
        raise directive.locate(exc, spans) if spans else exc from None


def _field(fmt: str, i: int) -> tuple[list[Token] | str, int]:
    """The tokens of the ``%`` directive at ``i`` (a plain string for ``%%``)."""
    m = cast(re.Match[str], _DIRECTIVE.match(fmt, i))  # every part is optional
    cond, mod, arg, d = m.groups()
    col = i + 1
    if d == "%":
        return "%", m.end()
    if d == "s":  # %s and %<s: the original request's status; %>s: the final one
        return [Field("status" if mod == ">" else "original_status", Kind.STATUS)], m.end()
    if d == "t":
        return _time(arg, col), m.end()
    if d == "T":
        unit = {None: "s", "s": "s", "ms": "ms", "us": "us"}.get(arg)
        if unit is None:
            raise FormatError(f"unknown %{{{arg}}}T unit (s, ms or us)", col)
        return [Field(f"request_time_{unit}", Kind.INT)], m.end()
    if d in _NAMED:
        if not arg:
            raise FormatError(f"%{d} needs a name: %{{Name}}{d}", col)
        fname = _NAMED[d] + re.sub(r"\W", "_", arg.lower())
        return [Field(fname, Kind.TEXT)], m.end()
    if d in _SIMPLE:
        fname, kind = _SIMPLE[d]
        if cond and kind is not Kind.TEXT:
            kind = Kind.TOKEN  # "-" when the status condition does not hold
        return [Field(fname, kind)], m.end()
    raise FormatError(f"unknown directive '%{d}'" if d else "'%' ends the format", col)


def _time(arg: str | None, col: int) -> list[Token]:
    if arg is None:
        return [b"[", Field("time", Kind.TIME_CLF), b"]"]
    spec = arg.removeprefix("begin:").removeprefix("end:")
    if spec in _EPOCHS:
        return [Field("time", Kind.TIME_EPOCH, scale=_EPOCHS[spec])]
    if spec in ("msec_frac", "usec_frac"):
        return [Field("time_frac", Kind.INT)]
    return [Field("time", Kind.TIME_STRF, strf=timeparse.expand_strf(spec, col))]
