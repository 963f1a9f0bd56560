"""The log formats the language accepts: the seam between the config validator and the parsers.

Names and descriptions come from the parsers' own registries (``accesslog.ACCESS_FORMATS``,
``errorlog.ERROR_FORMATS``), so a format can only be named in a config if a parser exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from remediator.sources import accesslog, errorlog
from remediator.sources.access.guess import AUTO, guess, last_lines
from remediator.sources.accesslog import AccessFormat, FormatError
from remediator.sources.errorlog import ErrorFormat

log = structlog.get_logger(__name__)

ACCESS_FORMATS: dict[str, str] = {n: f.description for n, f in accesslog.ACCESS_FORMATS.items()}
ERROR_FORMATS: dict[str, str] = {n: f.description for n, f in errorlog.ERROR_FORMATS.items()}


def check_custom_format(flavour: str, text: str) -> str | None:
    """Why an operator's nginx ``log_format`` / Apache ``LogFormat`` cannot be used, or None."""
    compile_ = (
        accesslog.compile_nginx_format if flavour == "nginx" else accesslog.compile_apache_format
    )
    try:
        compile_(text)
    except FormatError as exc:
        where = f"column {exc.column} of the format: " if exc.column > 1 else ""
        return where + exc.message
    return None


def access_format(name: str | None, source: Any = None) -> AccessFormat | None:
    """The parser for a built-in format name, or for an access_log source's own format
    (``name`` None: the source's, which is ``nginx-combined`` when it names none)."""
    if source is not None and source.log_format is not None:
        return accesslog.compile_nginx_format(source.log_format)
    if source is not None and source.apache_format is not None:
        return accesslog.compile_apache_format(source.apache_format)
    if name is None:
        name = source.format_name if source is not None else "nginx-combined"
    if name == AUTO and source is not None:
        return _guessed(source.path)
    return accesslog.ACCESS_FORMATS.get(name)


def _guessed(path: Path) -> AccessFormat:
    """``format: auto``: the built-in that reads most of the file's last lines; with none
    (no file yet, or nothing read) ``nginx-combined``, and said so."""
    try:
        found = guess(last_lines(path))
    except OSError:
        found = None
    if found is None:
        log.warning("access_format_not_guessed", path=str(path), using="nginx-combined")
        return accesslog.ACCESS_FORMATS["nginx-combined"]
    log.info(
        "access_format_guessed", path=str(path), format=found.format.name, read=found.describe()
    )
    return found.format


def error_format(name: str) -> ErrorFormat | None:
    return errorlog.ERROR_FORMATS.get(name)
