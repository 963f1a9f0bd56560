"""Outside text made safe for a terminal: control characters escaped, visibly, never dropped.

Log lines, probe answers, command output and error messages come from programs (and people)
remediator does not trust. Printed raw, ``\\x1b[2J`` clears the operator's screen and
``\\x1b]0;...\\x07`` retitles their terminal; a ``\\n`` inside a reason forges a timeline line.
:func:`text` turns every such character into its Python-style escape, so the operator sees that
the bytes were there: C0 controls and DEL (``\\x1b``, ``\\n``, ``\\t``), C1 controls
(``\\x9b`` is a one-byte CSI), the Unicode line separators and the bidirectional overrides
that reorder what a terminal shows (``\\u202e``), and the lone surrogates a
``surrogateescape`` decoding leaves for bytes that were not UTF-8 (shown as the byte, ``\\xff``).
Backslashes are left alone: nginx writes ``\\x22`` into its own logs, and a line should read as
it does in the file.

JSON output needs none of this: ``json.dumps`` (``ensure_ascii``) escapes the same characters.
:class:`Writer` is the last line of defence for a command's streams: whatever reaches it is
escaped except the newlines that end its lines.
"""

from __future__ import annotations

import io
from typing import Final, TextIO

__all__ = ["Writer", "text"]

_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(code: int) -> str:
    ch = chr(code)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for a byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


_UNSAFE: Final = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),  # DEL and the C1 controls
    0x061C,  # arabic letter mark
    0x200E,  # left-to-right and right-to-left marks
    0x200F,
    *range(0x2028, 0x202F),  # line/paragraph separators, bidi embeddings and overrides
    *range(0x2066, 0x206A),  # bidi isolates
]
_TABLE: Final = {c: _escape(c) for c in _UNSAFE}
_KEEP_NEWLINES: Final = {c: e for c, e in _TABLE.items() if c != 0x0A}


def _surrogates(s: str) -> str:
    return "".join(_escape(ord(c)) if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


def text(value: object) -> str:
    """``value`` as one line of terminal-safe text (a newline in it is shown as ``\\n``)."""
    s = value if isinstance(value, str) else str(value)
    s = s.translate(_TABLE)
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            s = _surrogates(s)
    return s


def lines(value: str) -> str:
    """Like :func:`text`, but newlines stay: for output already made of safe lines."""
    s = value.translate(_KEEP_NEWLINES)
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            s = _surrogates(s)
    return s


class Writer(io.TextIOBase):
    """A text stream that escapes what is written to it (newlines excepted) before passing it
    on; ``flush`` and errors (a closed pipe) go through unchanged."""

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self.inner = inner

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.inner.write(lines(s))
        return len(s)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def close(self) -> None:
        """Nothing to do: the inner stream is not ours (and a wrapper being collected must not
        flush a pipe that is already closed)."""
