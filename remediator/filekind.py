"""What kind of file a mode names, in words: for the reasons given when a file that should be
a plain one (a log, a pid file) is not."""

from __future__ import annotations

import stat

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def kind_of(mode: int) -> str:
    """``"a regular file"``, ``"a FIFO"``, ``"a character device"``..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def not_regular(mode: int) -> str:
    """Why a file of ``mode`` is not read: ``"not a regular file (a FIFO)"``."""
    return f"not a regular file ({kind_of(mode)})"
