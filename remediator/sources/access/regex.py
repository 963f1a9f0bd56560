"""A format's tokens as byte regexes: an exact one (every field, for evidence) and a fast one
(the time and the status only, strict where it reads and lenient where it skips)."""

from __future__ import annotations

import re
from typing import Final

from remediator.sources.access import timeparse
from remediator.sources.access.model import Escaping, Field, Kind, Token

EXACT: Final[dict[Kind, bytes]] = {
    Kind.TOKEN: rb'[^\s"]+',
    Kind.INT: rb"\d+",
    Kind.INT_OR_DASH: rb"(?:\d+|-)",
    Kind.DECIMAL: rb"(?:\d+(?:\.\d+)?|-)",
    Kind.LIST: rb"[-\d.]+(?:(?:, | : )[-\d.]+)*",
    Kind.STATUS: rb"\d{3}",
    Kind.TIME_CLF: timeparse.CLF,
    Kind.TIME_ISO: timeparse.ISO,
    Kind.TIME_EPOCH: timeparse.EPOCH,
}


def exact_line(tokens: list[Token], esc: Escaping) -> bytes:
    """The regex of a whole line, a group per field."""
    return b"".join(_exact_piece(tokens, i, esc) for i in range(len(tokens)))


def _context(tokens: list[Token], i: int) -> tuple[bytes, bool]:
    """The byte that ends field ``i`` (empty if none) and whether it sits between quotes."""
    prev = tokens[i - 1] if i else b""
    nxt = tokens[i + 1] if i + 1 < len(tokens) else b""
    stop = nxt[:1] if isinstance(nxt, bytes) else b""
    return stop, isinstance(prev, bytes) and prev.endswith(b'"') and stop == b'"'


def _text_class(quoted: bool, esc: Escaping) -> bytes:
    if esc is Escaping.NONE:
        return rb"[^\n]*?"
    if esc is Escaping.NGINX:
        return rb'[^"\n]*' if quoted else rb'[^"\n]*?'
    return rb'(?:[^"\\\n]|\\.)*' if quoted else rb'(?:[^"\\\n]|\\.)*?'


def _exact_piece(tokens: list[Token], i: int, esc: Escaping) -> bytes:
    tok = tokens[i]
    if isinstance(tok, bytes):
        return re.escape(tok)
    if tok.kind is Kind.TEXT:
        return b"(" + _text_class(_context(tokens, i)[1], esc) + b")"
    return b"(" + (timeparse.strf_regex(tok.strf) if tok.strf else EXACT[tok.kind]) + b")"


def _fast_piece(tokens: list[Token], i: int, esc: Escaping, capture: bool) -> bytes:
    """Strict for the fields it reads, lenient for the fields it skips.

    A skipped field is "anything up to the byte that ends it". Between quotes (request,
    referer, user agent: most of a line) that is ``[^"]*``, one negated byte, which sre runs in
    a tight loop about five times faster than any set. ``fields()`` is the strict reader.
    Such a field is possessive (``*+``): its class leaves out the byte that ends it, so giving
    bytes back could never let what follows match, and sre skips keeping track of them
    (a quarter of the time of a combined line).
    """
    tok = tokens[i]
    if isinstance(tok, bytes):
        return re.escape(tok)
    stop, quoted = _context(tokens, i)
    if capture and tok.kind is Kind.STATUS:
        return COMMON_STATUS
    if tok.kind is Kind.TIME_CLF:
        body = rb".{26}"  # the time converter checks it
    elif capture or tok.strf:
        body = timeparse.strf_regex(tok.strf) if tok.strf else EXACT[tok.kind]
    elif esc is Escaping.BACKSLASH and quoted:
        body = rb'[^"\\\n]*+(?:\\.[^"\\\n]*+)*'  # \" does not end it
    elif quoted and esc is Escaping.NGINX:
        body = rb'[^"]*+'
    elif stop and esc is not Escaping.NONE:
        body = _printable_but(stop[0])
    elif i == len(tokens) - 1 and tok.kind is Kind.TEXT:  # the rest of the line
        body = _text_class(True, esc)
    else:
        body = _text_class(quoted, esc) if tok.kind is Kind.TEXT else EXACT[tok.kind]
    return b"(" + body + b")" if capture else body


COMMON_STATUS: Final = rb"(?>200|(\d\d\d))"
"""The status read by the fast regex: captured unless it is 200. Most lines of a log are
200s; for them the group stays unset (None, no object made) and the scan counts them
without a per-line lookup. Atomic: a 200 that fails what follows fails either way."""

LINE_END: Final = rb"\r?+(?![^\n])"
"""What ends a line read by itself or last in a block: a CRLF file's CR is no field."""
INNER_END: Final = rb"\r?+"
"""What ends a line followed by another in the same match: the next line's own ``\n``
is the check that nothing more is on it. Possessive: sre keeps no backtracking state."""


def _printable_but(stop: int) -> bytes:
    """An unquoted field: printable bytes but the one that ends it. A range, which sre tests
    nearly as fast as one negated byte (sets of single bytes are five times slower), and
    which holds no newline, so a match cannot run from a cut line into the next."""
    lo = rb"!-" + re.escape(bytes([stop - 1])) if stop > 0x21 else b""
    hi = re.escape(bytes([max(stop + 1, 0x21)])) + rb"-\xff" if stop < 0xFF else b""
    return b"[" + lo + hi + b"]*+"


def fast_line(
    tokens: list[Token], esc: Escaping, status: Field, tfield: Field | None
) -> tuple[bytes, bytes]:
    """The fast regex of a line (time and status captured, in line order), and that of a later
    line of a block, whose time must equal the first line's and whose status alone is captured;
    neither with its end (:data:`LINE_END` or, inside a block, :data:`INNER_END`).

    It reads the whole line, so that a line with fields the format does not have (the wrong
    format chosen) or cut short (no closing quote) fails it, and then the exact regex too:
    such a line is malformed, never counted as valid. That also keeps a quoted field from
    running on into the next line: ``[^"]*`` stops at a newline only because a line holds its
    closing quote, and a line cut inside one would have the next line's rest, from its first
    quote to its end, fit the rest of the format.
    """
    ref = rb"(?:\1)" if tfield and tokens.index(tfield) < tokens.index(status) else rb"(?:\2)"
    n = len(tokens)
    first = [_fast_piece(tokens, i, esc, tokens[i] in (status, tfield)) for i in range(n)]
    same = [
        ref if tokens[i] is tfield else _fast_piece(tokens, i, esc, tokens[i] is status)
        for i in range(n)
    ]
    return b"".join(first), b"".join(same)
