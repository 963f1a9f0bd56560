"""Outside text reaches a terminal escaped, visibly: remediator.escape."""

from __future__ import annotations

import io

import pytest

from remediator import escape


def test_terminal_escape_sequences_are_shown_not_obeyed() -> None:
    assert escape.text("\x1b[2J\x1b]0;owned\x07") == "\\x1b[2J\\x1b]0;owned\\x07"


def test_a_newline_in_outside_text_cannot_start_a_line_of_its_own() -> None:
    assert escape.text("failed\n  12:00:00 closed: resolved") == (
        "failed\\n  12:00:00 closed: resolved"
    )


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\t", "\\t"),
        ("\r", "\\r"),
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
        ("\x9b31m", "\\x9b31m"),  # a one-character CSI
        ("\u202egnp.exe", "\\u202egnp.exe"),  # right-to-left override
        ("a\u2028b", "a\\u2028b"),
    ],
)
def test_every_control_character_is_escaped(raw: str, shown: str) -> None:
    assert escape.text(raw) == shown


def test_a_byte_that_was_not_utf8_is_shown_as_that_byte() -> None:
    raw = b"GET /\xff\xfe".decode("utf-8", "surrogateescape")
    assert escape.text(raw) == "GET /\\xff\\xfe"


def test_ordinary_text_is_left_as_it_is() -> None:
    line = 'GET /caf\u00e9?q=\\x22 "ok" \u2014 100%'
    assert escape.text(line) == line


def test_the_writer_keeps_line_ends_and_escapes_the_rest() -> None:
    buf = io.StringIO()
    w = escape.Writer(buf)
    w.write("one \x1b[31mred\x1b[0m\ntwo\n")
    assert buf.getvalue() == "one \\x1b[31mred\\x1b[0m\ntwo\n"
