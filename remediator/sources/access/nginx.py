"""nginx's ``log_format``: the bare format string, or the directive pasted from nginx.conf.

``log_format main escape=json '{"status":"$status",' '"time":"$time_iso8601"}';``: the word
``log_format`` and the format's name are optional, ``escape=`` is read, the quoted strings are
joined as nginx joins them, the ``;`` may end it. A variable nginx has but this reader does not
know (``$ssl_protocol``, ``$http_x_forwarded_for``, ``$geoip_country_code``) is an opaque field:
any text its neighbours allow.
"""

from __future__ import annotations

import re
from typing import Final

from remediator.sources.access import directive
from remediator.sources.access.compiled import AccessFormat
from remediator.sources.access.model import Escaping, Field, FormatError, Kind, Token, tokenize

_KINDS: Final = {
    name: kind
    for kind, names in (
        (Kind.STATUS, "status"),
        (Kind.TIME_CLF, "time_local"),
        (Kind.TIME_ISO, "time_iso8601"),
        (Kind.TIME_EPOCH, "msec"),
        (Kind.DECIMAL, "request_time"),
        (Kind.TOKEN, "remote_addr realip_remote_addr server_addr"),
        (Kind.INT, "body_bytes_sent bytes_sent request_length connection connection_requests"),
        (Kind.INT, "pid remote_port server_port"),
        (Kind.LIST, "upstream_status upstream_response_time upstream_connect_time"),
        (Kind.LIST, "upstream_header_time upstream_response_length upstream_bytes_received"),
        (Kind.LIST, "upstream_bytes_sent"),
    )
    for name in names.split()
}
_VAR: Final = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_DIRECTIVE: Final = re.compile(r"\s*log_format(?:\s|$)")
_NAME: Final = re.compile(r"[A-Za-z_][\w.-]*")
_LOOKS_PASTED: Final = re.compile(r"""\s*(?:[A-Za-z_][\w.-]*\s+)?(?:escape=\S+\s+)?['"]""")


def compile_nginx_format(
    fmt: str,
    *,
    escape: str = "default",
    name: str = "custom",
    description: str = "an operator's nginx log_format",
) -> AccessFormat:
    """Compile an nginx ``log_format``: its string (quoted parts joined, as nginx joins them),
    or the whole directive as pasted from nginx.conf (then its ``escape=`` wins).

    ``escape`` is the ``log_format``'s ``escape=`` parameter; config escapes (``\\"``) are undone.
    """
    pasted = _pasted(fmt)
    spans: list[tuple[int, int]] = []
    if pasted is not None:
        fmt, spans, escape = pasted[0], pasted[1], pasted[2] or escape
    try:
        esc = Escaping(escape)
    except ValueError:
        raise FormatError(f"unknown escape={escape!r} (default, json or none)", 1) from None
    try:
        return AccessFormat(name, description, fmt, tokenize(fmt, "$", _field), esc)
    except FormatError as exc:
        raise directive.locate(exc, spans) if spans else exc from None


def _pasted(text: str) -> tuple[str, list[tuple[int, int]], str | None] | None:
    """(the joined format, where its pieces were, the escape= given) when ``text`` is a
    pasted directive; None when it is a bare format string."""
    keyword = _DIRECTIVE.match(text)
    marked = keyword is not None
    if not marked and not _LOOKS_PASTED.match(text):
        return None
    try:
        args = directive.words(text[keyword.end() if keyword else 0 :], semicolon=True)
    except FormatError:
        if not marked:
            return None  # a bare format with an odd quote: read as one
        raise
    offset = keyword.end() if keyword else 0
    args = [directive.Word(w.text, w.start + offset, w.quoted) for w in args]
    if args and not args[0].quoted and _NAME.fullmatch(args[0].text) and (keyword or args[1:]):
        args = args[1:]  # the format's name
    escape = None
    while args and not args[0].quoted and args[0].text.startswith("escape="):
        escape = args.pop(0).text.removeprefix("escape=")
    if not args:
        raise FormatError("the log_format has a name but no format string", len(text))
    if not marked and not all(w.quoted for w in args):
        return None  # "$request" $status: a bare format that starts with a quote
    joined, spans = directive.joined(args)
    return joined, spans, escape


def _field(fmt: str, i: int) -> tuple[list[Token] | str, int]:
    m = _VAR.match(fmt, i)
    if m is None:
        raise FormatError("'$' must start a variable ($name or ${name})", i + 1)
    var = m.group(1) or m.group(2)
    return [Field(var, _KINDS.get(var, Kind.TEXT))], m.end()
