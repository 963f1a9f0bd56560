"""The fleet's files (``ca_file``, ``cert_file``, ``key_file``, ``password_file``), judged when
the config is loaded: ``check`` says which one cannot be used, and why, before the daemon finds
its pool "unreachable" for that reason.

Judged like config (:mod:`remediator.trust`): owned by root (or the daemon's user), written by
no one else, in directories only they can write: whoever can change the CA decides whom the
host trusts. The password is a secret (root's alone, or the load fails, as the daemon would
refuse it); a client key others can read is only warned about, etcd being the judge of what
the key opens. Nothing of etcd is imported here.
"""

from __future__ import annotations

import stat
from pathlib import Path

from remediator.fleet.options import Fleet
from remediator.trust import Untrusted, quote, read_file

MAX_BYTES = 1024 * 1024  # a CA bundle of a few hundred certificates fits
PASSWORD_BYTES = 4096

_PEM = {
    "ca_file": (b"-----BEGIN CERTIFICATE-----", "a PEM certificate (BEGIN CERTIFICATE)"),
    "cert_file": (b"-----BEGIN CERTIFICATE-----", "a PEM certificate (BEGIN CERTIFICATE)"),
    "key_file": (b"PRIVATE KEY-----", "a PEM private key (BEGIN ... PRIVATE KEY)"),
}


def problems(
    fleet: Fleet, uids: frozenset[int]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(key, error)`` for each file that cannot be used, ``(key, warning)`` for a client key
    others can read. Never quotes a file's contents."""
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    for key in ("ca_file", "cert_file", "key_file"):
        path: Path | None = getattr(fleet, key)
        if path is None:
            continue
        try:
            raw, st, _ = read_file(path, uids, max_bytes=MAX_BYTES)
        except Untrusted as exc:
            errors.append((key, f"refusing to use {path}: {exc}"))
            continue
        except OSError as exc:
            errors.append((key, f"cannot read {path}: {exc.strerror or exc}"))
            continue
        marker, what = _PEM[key]
        if marker not in raw:
            errors.append((key, f"{path} is not {what}"))
        if key == "key_file":
            readable = _readable(st.st_mode, st.st_gid)
            if readable:
                warnings.append(
                    (
                        key,
                        f"the client key {path} is readable by {readable} (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}): anyone who reads it is this host "
                        f"to etcd; fix with: chown root:root {quote(path)} && chmod 0600 "
                        f"{quote(path)}",
                    )
                )
    if fleet.password_file is not None:
        path = fleet.password_file
        try:
            raw, _, _ = read_file(path, uids, max_bytes=PASSWORD_BYTES, secret=True)
        except Untrusted as exc:
            errors.append(("password_file", f"refusing to use {path}: {exc}"))
        except OSError as exc:
            errors.append(("password_file", f"cannot read {path}: {exc.strerror or exc}"))
        else:
            try:
                if not raw.decode("utf-8").strip():
                    errors.append(("password_file", f"{path} is empty: one line, the password"))
            except UnicodeDecodeError:
                errors.append(("password_file", f"{path} is not valid UTF-8"))
    return errors, warnings


def _readable(mode: int, gid: int) -> str:
    """Who besides the owner can read a file (group root counts as the owner's)."""
    who = []
    if mode & stat.S_IRGRP and gid != 0:
        who.append("its group")
    if mode & stat.S_IROTH:
        who.append("others")
    return " and ".join(who)
