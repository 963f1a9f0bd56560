"""Where each followed file was read up to, kept across restarts.

One JSON file in the caller's state directory holds, per followed path, the file's identity (device,
inode, a hash of its first bytes) and the offset of the next unread line. It is replaced atomically
(temp file in the same directory, fsync, rename, fsync of the directory), so a crash leaves either
the old or the new version, never a mix. A file that cannot be parsed is reported and taken as "no
state": every log is then read from its end, so old lines never trigger actions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from remediator.state import write_atomic

log = structlog.get_logger(__name__)

STATE_FILE: Final = "tail-offsets.json"
_VERSION: Final = 1


def fingerprint(head: bytes) -> str:
    """The stored form of a file's first bytes: a hash, so no log content lands in the state."""
    return hashlib.sha256(head).hexdigest()


@dataclass(frozen=True, slots=True)
class SavedOffset:
    """Where to resume one path, and which file that offset belongs to.

    ``dev``/``ino`` are None when the path did not exist when saved: whatever file is found
    there next is new and is read from its start. ``fp_len`` 0 means the first bytes are unknown
    (the file could not be read), so only device and inode identify it.
    """

    dev: int | None
    ino: int | None
    fp: str
    fp_len: int
    offset: int
    skip: bool = False
    """The offset is inside an overlong line whose start was already returned: drop to its end."""

    @property
    def known(self) -> bool:
        return self.dev is not None and self.ino is not None

    def identifies(self, fd: int, st: os.stat_result, *, any_inode: bool = False) -> bool:
        """Whether the file open as ``fd`` is the one this was saved for, and still holds the
        offset: same device and inode (or, with ``any_inode``, a copy: any inode but known
        first bytes), at least ``offset`` bytes, the same first bytes."""
        same_inode = (st.st_dev, st.st_ino) == (self.dev, self.ino)
        if st.st_size < self.offset or not (same_inode or (any_inode and self.fp_len > 0)):
            return False
        if self.fp_len == 0:
            return True
        head = os.pread(fd, self.fp_len, 0)
        return len(head) == self.fp_len and fingerprint(head) == self.fp


ABSENT: Final = SavedOffset(dev=None, ino=None, fp="", fp_len=0, offset=0)


class OffsetStore:
    """The offsets file of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE

    def load(self) -> dict[str, SavedOffset]:
        """The saved offsets; empty (and a warning) when the file is corrupt or unreadable."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("offset_state_unreadable", path=str(self.path), error=str(exc))
            return {}
        try:
            return _decode(raw)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("offset_state_corrupt", path=str(self.path), error=str(exc))
            return {}

    def save(self, offsets: dict[str, SavedOffset]) -> None:
        """Replace the file atomically with ``offsets``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        doc = {"version": _VERSION, "files": {p: asdict(o) for p, o in sorted(offsets.items())}}
        data = json.dumps(doc, separators=(",", ":")).encode()
        write_atomic(self.path, data, mode=0o600)


def _decode(raw: bytes) -> dict[str, SavedOffset]:
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("version") != _VERSION:
        raise ValueError(f"expected an object with version {_VERSION}")
    files = doc["files"]
    if not isinstance(files, dict):
        raise TypeError("'files' is not an object")
    return {str(path): _entry(path, entry) for path, entry in files.items()}


def _entry(path: str, entry: Any) -> SavedOffset:
    if not isinstance(entry, dict):
        raise TypeError(f"{path}: entry is not an object")
    dev, ino = entry["dev"], entry["ino"]
    fp, fp_len, offset, skip = entry["fp"], entry["fp_len"], entry["offset"], entry["skip"]
    ints_or_none = all(v is None or (type(v) is int and v >= 0) for v in (dev, ino))
    if not ints_or_none or (dev is None) != (ino is None):
        raise ValueError(f"{path}: bad dev/ino")
    if type(offset) is not int or type(fp_len) is not int or offset < 0 or fp_len < 0:
        raise ValueError(f"{path}: bad offset")
    if not isinstance(fp, str) or not isinstance(skip, bool):
        raise TypeError(f"{path}: bad fingerprint")
    return SavedOffset(dev=dev, ino=ino, fp=fp, fp_len=fp_len, offset=offset, skip=skip)
