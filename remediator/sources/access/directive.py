"""A server's config directive as an operator pastes it: its words, quoted or not.

Both nginx and Apache split a directive into arguments separated by blanks, an argument
quoted with ``"`` or ``'`` (a backslash keeps the quote inside it) or bare. What is inside the
quotes is kept as written, escapes and all: the format's own tokenizer undoes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from remediator.sources.access.model import FormatError


@dataclass(frozen=True, slots=True)
class Word:
    text: str  # inside the quotes, escapes kept
    start: int  # index of the text in the pasted string (after the opening quote)
    quoted: bool


def words(text: str, *, semicolon: bool) -> list[Word]:
    """The arguments of ``text``; ``semicolon``: nginx's ``;`` ends the directive (nothing
    may follow it but blanks and a comment). ``#`` starts a comment outside quotes."""
    out: list[Word] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            i = _line_end(text, i)
        elif semicolon and c == ";":
            rest = text[i + 1 :].strip()
            if rest and not rest.startswith("#"):
                raise FormatError("text after the ';' that ends the directive", i + 2)
            break
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise FormatError(f"no closing {c} for the quote opened here", i + 1)
            out.append(Word(text[i + 1 : j], i + 1, True))
            i = j + 1
        else:
            j = i
            stops = ";" if semicolon else ""
            while j < n and not text[j].isspace() and text[j] not in stops:
                j += 1
            out.append(Word(text[i:j], i, False))
            i = j
    return out


def _line_end(text: str, i: int) -> int:
    j = text.find("\n", i)
    return len(text) if j < 0 else j


def joined(pieces: list[Word]) -> tuple[str, list[tuple[int, int]]]:
    """The pieces' texts joined (as nginx joins a format's strings) and, for each piece,
    (its start in the joined text, its start in the pasted one), to locate errors."""
    spans, at = [], 0
    for w in pieces:
        spans.append((at, w.start))
        at += len(w.text)
    return "".join(w.text for w in pieces), spans


def locate(exc: FormatError, spans: list[tuple[int, int]]) -> FormatError:
    """``exc`` (a column in the joined text) with its column in the pasted text."""
    index = exc.column - 1
    for joined_at, pasted_at in reversed(spans):
        if index >= joined_at:
            return FormatError(exc.message, pasted_at + index - joined_at + 1)
    return exc
