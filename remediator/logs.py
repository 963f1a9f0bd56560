"""structlog set-up: snake_case events with key/value context, for whoever reads them.

``auto`` picks: the journal (with its priority and structured ``REMEDIATOR_*`` fields) when
stderr is connected to journald, as under systemd; readable lines on a terminal; JSON lines
otherwise. ``json`` and ``console`` force a renderer.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR

# syslog priorities, which `journalctl -p` filters on
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
_FIELD = re.compile(r"[^A-Z0-9_]")


def under_journald(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd gave us (``$JOURNAL_STREAM``)."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


class JournalLogger:
    """A structlog logger that sends each event to journald with its priority and fields."""

    def __init__(self) -> None:
        import systemd.journal  # noqa: PLC0415

        self._send = systemd.journal.send

    def msg(self, **event: Any) -> None:
        level = str(event.pop("level", "info"))
        name = str(event.pop("event", ""))
        event.pop("timestamp", None)
        text = " ".join([name, *(f"{k}={v}" for k, v in event.items())])
        fields = {
            "REMEDIATOR_" + _FIELD.sub("_", k.upper()): str(v)
            for k, v in event.items()
            if v is not None
        }
        try:
            self._send(
                text,
                PRIORITY=str(_PRIORITY.get(level, 6)),
                SYSLOG_IDENTIFIER="remediator",
                REMEDIATOR_EVENT=name,
                **fields,
            )
        except OSError:  # journald went away: say it on stderr rather than lose it
            print(text, file=sys.stderr, flush=True)

    debug = info = warning = error = critical = exception = log = msg


def _as_kwargs(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Final processor for the journal: hand the event over as keyword arguments."""
    return event


def setup(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process."""
    stream = stream or sys.stderr
    journal = fmt == "auto" and under_journald(stream)
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any
    factory: Any
    if journal:
        renderer = _as_kwargs
        factory = lambda *args: JournalLogger()  # noqa: E731
    else:
        renderer = (
            structlog.dev.ConsoleRenderer(colors=stream.isatty())
            if fmt == "console"
            else structlog.processors.JSONRenderer()
        )
        factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
