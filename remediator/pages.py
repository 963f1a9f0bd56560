"""Incident pages written by the running daemon as each incident closes.

The page itself is ``remediator report`` (``remediator/report/``), which the daemon never
imports (no cost while watching): it runs ``remediator -c CONFIG report ID -o PATH`` as a
child process of its own, lets it work while the loop goes on, and looks at it again at each
turn: a page done is logged (``report_written``), a writer that fails or overruns
:data:`WRITE_TIMEOUT` is logged and ended (by its PID: it leads a session of its own). The
oldest pages beyond ``reports.keep`` are then removed. Every notification names the page's
path (``ActionContext.report``), which exists once the incident has closed.

Nothing from a log line reaches the command: the incident id is the engine's own
(``20261205T183620Z-fab56f``) and the paths come from the configuration.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog

log = structlog.get_logger(__name__)

WRITE_TIMEOUT = 120.0  # a page reads the logs around the incident: bounded, but not instant
_ERR_BYTES = 2000


def page_path(directory: Path, incident: str) -> Path:
    """Where the page of ``incident`` goes."""
    return directory / f"{incident}.html"


@dataclass
class _Writing:
    incident: str
    path: Path
    proc: subprocess.Popen[bytes]
    deadline: float
    err: IO[bytes]  # the writer's stderr: a file, never a pipe that could fill and block it


class PageWriter:
    """Starts one ``remediator report`` per closed incident and reaps them off the loop."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._writing: list[_Writing] = []

    @property
    def busy(self) -> bool:
        return bool(self._writing)

    def start(self, directory: Path, incident: str, now: float) -> None:
        """Begin writing the page of ``incident`` (which has just closed) into ``directory``."""
        path = page_path(directory, incident)
        err = tempfile.TemporaryFile()  # noqa: SIM115 - closed when the writer is reaped
        try:
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "remediator",
                    "-c",
                    str(self.config_path),
                    "report",
                    incident,
                    "-o",
                    str(path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            err.close()
            log.warning("report_not_written", incident=incident, path=str(path), error=str(exc))
            return
        self._writing.append(_Writing(incident, path, proc, now + WRITE_TIMEOUT, err))

    def poll(self, now: float, keep: int) -> None:
        """Reap the writers that finished (or end the overdue ones); prune old pages."""
        still: list[_Writing] = []
        pruned: set[Path] = set()
        for w in self._writing:
            rc = w.proc.poll()
            if rc is None and now < w.deadline:
                still.append(w)
                continue
            if rc is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.proc.pid, signal.SIGKILL)
                w.proc.wait()
                log.warning(
                    "report_not_written",
                    incident=w.incident,
                    path=str(w.path),
                    error=f"still writing after {WRITE_TIMEOUT:g}s: ended",
                )
            else:
                w.err.seek(0)
                err = w.err.read(_ERR_BYTES)
                if rc == 0:
                    log.info("report_written", incident=w.incident, path=str(w.path))
                else:
                    log.warning(
                        "report_not_written",
                        incident=w.incident,
                        path=str(w.path),
                        rc=rc,
                        error=err.decode("utf-8", "replace").strip(),
                    )
            w.err.close()
            pruned.add(w.path.parent)
        self._writing = still
        for directory in pruned:
            prune(directory, keep)

    def close(self, timeout: float = 5.0) -> None:
        """At stop: give the writers a moment, then end them."""
        for w in self._writing:
            try:
                w.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.proc.pid, signal.SIGKILL)
                w.proc.wait()
            w.err.close()
        self._writing = []


def prune(directory: Path, keep: int) -> None:
    """Remove the oldest incident pages beyond ``keep``: by when each was written (two
    incidents of one second have ids in no particular order), then by name."""
    try:
        pages = sorted(
            (e.stat().st_mtime_ns, e.name)
            for e in os.scandir(directory)
            if e.name.endswith(".html") and e.is_file(follow_symlinks=False)
        )
    except OSError:
        return
    for _, name in pages[: max(0, len(pages) - keep)]:
        with contextlib.suppress(OSError):
            (directory / name).unlink()
