"""Outside text made safe for an HTML page: every value from a record goes through here.

A log line (``</script><img src=x onerror=...>``), a probe's answer or a command's output must
render as the text it is. :func:`text` first makes control characters visible as the terminal
output does (``\\x1b[2J`` stays readable, and an HTML parser never sees a raw control
character), then escapes ``& < > " '``, so the result is safe in element content and in
quoted attribute values alike. :func:`tone` names the colour class of an outcome.
"""

from __future__ import annotations

import html
from typing import Final

from remediator import escape

__all__ = ["text", "tone"]

GOOD: Final = frozenset({"ok", "resolved", "completed", "verified", "passed"})
BAD: Final = frozenset(
    {"failed", "exhausted", "aborted", "incomplete", "not verified", "interrupted", "unfinished"}
)
HELD: Final = frozenset({"held", "cannot_act", "skipped", "refused", "unverified", "superseded"})
WOULD: Final = frozenset({"would_run"})


def text(value: object) -> str:
    """``value`` as HTML text (also safe inside a double- or single-quoted attribute)."""
    return html.escape(escape.text(value), quote=True)


def tone(word: str) -> str:
    """The colour class of an outcome or a verdict."""
    if word in GOOD:
        return "good"
    if word in BAD:
        return "bad"
    if word in HELD:
        return "held"
    return "would" if word in WOULD else "other"
