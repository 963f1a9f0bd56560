"""Symlinks a stranger may have planted on the way to a log.

A log may live in a directory another user can write (an application's own log directory,
www-data's). That user can replace the log, or a directory on its way, by a symlink to any
file: root would then read, and quote as evidence in its action log, a file that user cannot
read (``/etc/shadow``, another site's root-only log). So a symlink is followed only where it
sits in a directory that nobody but root can change; distributions' own links (in root's
directories) are still followed.

The walk is by ``lstat``, component by component, as the kernel resolves the path; what a
stranger could swap after it (the last component) is opened with ``O_NOFOLLOW`` by the caller
(:func:`last_dir_untrusted`).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from remediator.filekind import not_regular
from remediator.pathwalk import components

_MAX_LINKS: Final = 40  # as the kernel's ELOOP


def _name(lookup: Callable[[int], Any], number: int, kind: str) -> str:
    try:
        return f"{lookup(number)[0]} ({kind} {number})"
    except KeyError:
        return f"{kind} {number}"


def _strangers(st: os.stat_result, link: os.stat_result | None = None) -> str:
    """Who other than root may change what directory ``st`` holds ("" when nobody); with
    ``link``, whether they may have put that link there (a sticky directory keeps others'
    names safe, as ``fs.protected_symlinks`` reasons)."""
    if st.st_uid != 0:
        return _name(pwd.getpwuid, st.st_uid, "uid")
    if st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        return "group " + _name(grp.getgrgid, st.st_gid, "gid")
    if st.st_mode & stat.S_IWOTH:
        sticky = st.st_mode & stat.S_ISVTX
        if not sticky or (link is not None and link.st_uid != 0):
            return "everyone"
    return ""


def planted_link(path: Path) -> str | None:
    """Why ``path`` may not be followed (a symlink in a directory a stranger can write), or
    None. A missing component is None: opening it says what it is."""
    if not path.is_absolute():
        path = Path(os.path.abspath(path))  # noqa: PTH100 - no symlink resolution here
    try:
        for c in components(path, _MAX_LINKS):
            if c.target is None:
                continue
            who = _strangers(c.parent.stat(), c.st)
            if who:
                return (
                    f"{c.path} is a symbolic link in a directory {who} can write: it could "
                    "point at any file, root's included; not followed"
                )
    except OSError as exc:
        return os.strerror(errno.ELOOP).lower() if exc.errno == errno.ELOOP else None
    return None


def last_dir_untrusted(path: Path) -> bool:
    """Whether a stranger can replace ``path``'s last component (so it must be opened with
    ``O_NOFOLLOW``, whatever :func:`planted_link` saw a moment before); a sticky
    world-writable directory too: a stranger's own name there is theirs to swap."""
    try:
        st = path.parent.stat()
    except OSError:
        return True
    return bool(_strangers(st)) or bool(st.st_mode & stat.S_IWOTH)


def open_log(path: Path) -> int:
    """A read-only descriptor of the log file ``path`` for a one-off read (``check``,
    ``format: auto``): never through a planted symlink, never blocking on a FIFO, never a
    device. Raises ``OSError`` (its ``strerror`` says why) otherwise."""
    planted = planted_link(path)
    if planted is not None:
        raise OSError(errno.ELOOP, planted, str(path))
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if last_dir_untrusted(path):
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, not_regular(st.st_mode), str(path))
    return fd
