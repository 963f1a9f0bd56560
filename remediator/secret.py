"""Notifier secrets: read from root-only files, spotted where others can read them, never shown.

A webhook URL often *is* the credential (Slack's ``/services/T…/B…/xyz``), or carries one in its
userinfo or query; an ``Authorization`` header is one. They may live in ``url_file`` and
``headers_file``: files judged like config and, being secrets, readable by root alone
(:func:`remediator.trust.read_file` with ``secret=True``). :func:`exposures` finds secrets
written in a file others can read, for ``check``'s warnings; :func:`redact` takes them out of any
text remediator prints or logs.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from pathlib import Path

from remediator.config import Notifier
from remediator.schema import check_url
from remediator.trust import Untrusted, read_file

MAX_BYTES = 64 * 1024
REDACTED = "[secret]"

_SECRET_QUERY = re.compile(r"token|key|secret|pass|sig|auth|code|credential", re.IGNORECASE)
_SECRET_PATH = re.compile(r"/(services|hooks|webhooks|webhook|api/webhooks)/[^/]+", re.IGNORECASE)
_SECRET_HEADER = re.compile(r"auth|token|secret|key|cookie|pass|signature", re.IGNORECASE)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def url_secret(url: str) -> str | None:
    """What in ``url`` looks like a credential, in a few words, or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        return "a user and password"
    for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_QUERY.search(name):
            return f"a '{name}' query parameter"
    if parts.hostname == "hooks.slack.com" or _SECRET_PATH.search(parts.path):
        return "a webhook token in its path"
    return None


def header_secret(name: str) -> bool:
    """Whether a header of this name carries a credential."""
    return bool(_SECRET_HEADER.search(name))


def exposures(notifier: Notifier) -> list[tuple[str, str]]:
    """``(key, what)`` for each secret written inline in ``notifier`` (not in its files)."""
    out = []
    if notifier.url is not None and notifier.url_file is None:
        what = url_secret(notifier.url)
        if what is not None:
            out.append(("url", f"this URL carries {what}"))
    out.extend(
        (f"headers.{name}", f"header '{name}' carries a credential")
        for name in notifier.headers
        if header_secret(name)
    )
    return out


def load(notifier: Notifier, uids: frozenset[int]) -> tuple[Notifier, list[tuple[str, str]]]:
    """``notifier`` with its ``url_file`` and ``headers_file`` read in, and ``(key, problem)``
    for each that could not be used. Problems never quote the files' contents."""
    problems: list[tuple[str, str]] = []
    url, headers = notifier.url, dict(notifier.headers)
    if notifier.url_file is not None:
        text, problem = _read(notifier.url_file, uids)
        if problem is not None:
            problems.append(("url_file", problem))
        else:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if len(lines) != 1 or check_url(lines[0]) is not None:
                problems.append(
                    ("url_file", "must hold one http:// or https:// URL with a host, on one line")
                )
            else:
                url = lines[0]
    if notifier.headers_file is not None:
        text, problem = _read(notifier.headers_file, uids)
        if problem is not None:
            problems.append(("headers_file", problem))
        else:
            parsed, problem = _headers(text)
            if problem is not None:
                problems.append(("headers_file", problem))
            headers.update(parsed)
    return dataclasses.replace(notifier, url=url, headers=headers), problems


def _read(path: Path, uids: frozenset[int]) -> tuple[str, str | None]:
    try:
        raw, _, _ = read_file(path, uids, max_bytes=MAX_BYTES, secret=True)
    except Untrusted as exc:
        return "", f"refusing to use {path}: {exc}"
    except OSError as exc:
        return "", f"cannot read {path}: {exc.strerror or exc}"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return "", f"{path} is not valid UTF-8"


def _headers(text: str) -> tuple[dict[str, str], str | None]:
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition(":")
        name = name.strip()
        if not sep or not _HEADER_NAME.fullmatch(name) or not value.strip():
            return out, f"line {number} is not a 'Name: value' header"  # never the line itself
        out[name] = value.strip()
    return out, None


def secrets_of(notifier: Notifier) -> list[str]:
    """The strings of ``notifier`` that must never be shown: the URL's userinfo, path and query
    (with the whole URL), and every header value."""
    found: list[str] = []
    if notifier.url:
        parts = urllib.parse.urlsplit(notifier.url)
        found += [notifier.url, parts.netloc.rpartition("@")[0], parts.query]
        if parts.path not in ("", "/"):
            found.append(parts.path)
    found += notifier.headers.values()
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def redact(text: str, notifier: Notifier | None) -> str:
    """``text`` with every secret of ``notifier`` replaced by ``[secret]``."""
    if notifier is None:
        return text
    for secret in secrets_of(notifier):
        text = text.replace(secret, REDACTED)
    return text
