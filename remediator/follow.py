"""Following one incident's records in the action log, from where the log ended before it.

``remediator trigger`` marks the log's end before it asks, then reads only what came after:
an action log of months is never read whole, and a rotation meanwhile (the file renamed, a new
one started) loses nothing, because the old file stays open until it is read to its end.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from remediator.events import Event

CLOSING = frozenset((Event.INCIDENT_CLOSED, Event.INCIDENT_ABANDONED))


class LogTail:
    """The records appended to ``path`` since this object was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: BinaryIO | None = None
        self._ino: int | None = None
        self._partial = b""
        self._open(at_end=True)

    def _open(self, *, at_end: bool) -> None:
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            self._f, self._ino = None, None
            return
        if at_end:
            f.seek(0, os.SEEK_END)
        self._f, self._ino = f, os.fstat(f.fileno()).st_ino
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        """The complete new records (lines that are not records are skipped)."""
        out = self._drain()
        try:
            ino: int | None = self.path.stat().st_ino
        except FileNotFoundError:
            ino = None
        if ino is not None and ino != self._ino:  # rotated (or created): the new file whole
            self.close()
            self._open(at_end=False)
            out += self._drain()
        return out

    def _drain(self) -> list[dict[str, Any]]:
        if self._f is None:
            return []
        data = self._partial + self._f.read()
        *lines, self._partial = data.split(b"\n")
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def incident(
        self,
        incident: str,
        *,
        limit: float,
        alive: Callable[[], bool] = lambda: True,
        poll: float = 0.1,
    ) -> tuple[list[dict[str, Any]], bool]:
        """``incident``'s records until it closes; False with what there is when ``limit``
        seconds pass or ``alive`` says the process running it is gone."""
        recs: list[dict[str, Any]] = []
        deadline = time.monotonic() + limit
        next_check = 0.0
        while True:
            recs += [r for r in self.read() if r.get("incident") == incident]
            if any(r.get("event") in CLOSING for r in recs):
                return recs, True
            now = time.monotonic()
            if now > deadline:
                return recs, False
            if now >= next_check:
                next_check = now + 1.0
                if not alive():
                    recs += [r for r in self.read() if r.get("incident") == incident]
                    return recs, any(r.get("event") in CLOSING for r in recs)
            time.sleep(poll)
