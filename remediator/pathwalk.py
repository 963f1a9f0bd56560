"""A path's components as the kernel resolves them, one ``lstat`` each, symlinks expanded where
they stand, so a caller can judge every directory and every link on the way (who could have
planted it) before going on: :func:`remediator.trust.resolve` for config and programs,
:func:`remediator.sources.planted.planted_link` for logs."""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Component:
    parent: Path  # the directory it sits in, resolved
    path: Path
    st: os.stat_result  # its lstat
    target: Path | None  # what it points at, for a symlink (expanded next)
    last: bool  # nothing follows it (a symlink's target may still)


def components(path: Path, max_links: int) -> Iterator[Component]:
    """Each component of the absolute ``path``; ``OSError`` for a missing one, and ELOOP
    past ``max_links`` symlinks."""
    current = Path("/")
    parts = deque(path.parts[1:])
    links = 0
    while parts:
        part = parts.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        nxt = current / part
        st = os.lstat(nxt)
        if not stat.S_ISLNK(st.st_mode):
            yield Component(current, nxt, st, None, not parts)
            current = nxt
            continue
        links += 1
        if links > max_links:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
        target = nxt.readlink()
        yield Component(current, nxt, st, target, not parts)
        if target.is_absolute():
            current = Path("/")
            parts.extendleft(reversed(target.parts[1:]))
        else:
            parts.extendleft(reversed(target.parts))
