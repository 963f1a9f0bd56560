"""The attacker of issue 9: a compromised PHP app, i.e. commands run as ``www-data``.

Adversarial tests do what such an app could do (write into directories www-data owns, append to
logs logrotate recreated as www-data's, start processes of its own) through :func:`as_www_data`,
so that the kernel, not the test, decides what was possible.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil

from tests.stack import Nginx, wait_for

WWW_DATA = pwd.getpwnam("www-data")
UID = WWW_DATA.pw_uid
GID = WWW_DATA.pw_gid
_DROP = ("setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups", "--")


def as_www_data_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` run as www-data with no supplementary groups."""
    return [*_DROP, *argv]


def as_www_data(argv: Sequence[str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as www-data; fails the test if it fails."""
    return subprocess.run(
        as_www_data_argv(argv), check=True, capture_output=True, text=True, timeout=timeout
    )


def give_to_www_data(path: Path) -> None:
    """Hand ``path`` to www-data, as Debian does with /run/php and logrotate with nginx's logs."""
    os.chown(path, UID, GID)


def append_as_www_data(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` with www-data's rights (the kernel refuses if it may not)."""
    subprocess.run(
        as_www_data_argv(["tee", "-a", str(path)]),
        input=text,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )


def serving(nginx: Nginx) -> tuple[psutil.Process | None, list[int]]:
    """nginx's master and workers once it has workers (a fixture's nginx may still be forking
    them), to compare with after an attack: nothing of nginx may have been signalled."""
    wait_for(lambda: nginx.worker_pids() != [], 10, "nginx's workers")
    return nginx.master(), nginx.worker_pids()
