"""The action log: one JSON object per line, appended and fsynced before and after each action.

It is the record an operator reviews after an incident, so it fails closed: if a record cannot
be written, :class:`ActionLogError` is raised and the caller must not act. Each write opens the
file afresh (``O_APPEND``), so logrotate's rename or copytruncate needs no signal to us.
Records also go to the journal with structured fields when journald is there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

FIELDS = (
    "ts",
    "event",
    "incident",
    "playbook",
    "step",
    "action",
    "target",
    "dry_run",
    "outcome",
    "reason",
    "duration_ms",
)


class ActionLogError(RuntimeError):
    """The action log cannot be written: do not act."""


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339(epoch: float) -> str:
    """``epoch`` (Unix time) as the action log writes times: UTC, milliseconds, ``Z``."""
    stamp = dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class ActionLog:
    """Appends records to ``path`` (created 0640 with its directory when missing)."""

    def __init__(self, path: Path, *, journal: bool = True) -> None:
        self.path = path
        self._journal = _journal_sender() if journal else None

    def check(self) -> str | None:
        """Why the log cannot be written, or None (checked at start-up and before acting)."""
        try:
            os.close(self._open())
        except OSError as exc:
            return f"{self.path}: {exc.strerror}"
        return None

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            return os.open(self.path, flags, 0o640)
        except FileNotFoundError:  # first record, or its directory was removed: make it
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            return os.open(self.path, flags, 0o640)

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` (``ts`` added, the standard fields present) and fsync it."""
        full: dict[str, Any] = dict.fromkeys(FIELDS)
        full.update(record)
        full["ts"] = record.get("ts") or now_rfc3339()
        line = json.dumps(full, default=str, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            fd = self._open()
            try:
                data = line.encode()
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(28, "short write")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.critical(
                "action_log_unwritable",
                path=str(self.path),
                error=exc.strerror or str(exc),
                refused=full.get("event"),
            )
            raise ActionLogError(f"cannot write the action log {self.path}: {exc}") from exc
        if self._journal is not None:
            self._journal(full)
        return full


def read(path: Path) -> Iterator[dict[str, Any]]:
    """Records of an action log, oldest first; lines that are not records are skipped."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec


def _journal_sender() -> Any:
    """A function sending a record to journald, or None when there is no journald."""
    if not Path("/run/systemd/journal/socket").exists():
        return None
    try:
        from systemd import journal  # noqa: PLC0415
    except ImportError:
        return None

    def send(rec: dict[str, Any]) -> None:
        fields = {
            f"REMEDIATOR_{k.upper()}": str(v)
            for k, v in rec.items()
            if v is not None and k in FIELDS and k != "ts"
        }
        message = f"{rec.get('event')} {rec.get('playbook') or ''} {rec.get('action') or ''}"
        try:
            journal.send(" ".join(message.split()), SYSLOG_IDENTIFIER="remediator", **fields)
        except OSError as exc:  # journald gone: the file is the record that matters
            log.warning("journal_send_failed", error=str(exc))

    return send
