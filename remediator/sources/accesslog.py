"""Access-log formats: the status and time of every line, at C speed.

The front door of :mod:`remediator.sources.access`, where each part lives in a module of its
own (the formats of each server, the regexes, the scanner, time parsing, the built-ins).
"""

from __future__ import annotations

from remediator.sources.access.apache import compile_apache_format
from remediator.sources.access.builtin import ACCESS_FORMATS
from remediator.sources.access.compiled import AccessFormat
from remediator.sources.access.model import Escaping, FormatError
from remediator.sources.access.nginx import compile_nginx_format
from remediator.sources.access.scanner import Batch

__all__ = [
    "ACCESS_FORMATS",
    "AccessFormat",
    "Batch",
    "Escaping",
    "FormatError",
    "compile_apache_format",
    "compile_nginx_format",
]
