"""The one seam through which remediator touches the host.

Every side effect (a command, a signal, a file replaced) goes through a :class:`System`.
:class:`RealSystem` does it; :class:`DryRunSystem` records what it *would* have done, with the
exact argv or edit, and changes nothing. Observations (config tests, state queries, reading
files) run for real in both: they are evidence, not changes.

Commands are argv lists, never a shell. A child runs in its own session; on timeout its whole
process group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from remediator.state import write_atomic

OUTPUT_LIMIT = 16 * 1024
TERM_GRACE = 2.0


@dataclass(frozen=True)
class CommandResult:
    """What a command did: exit status (None if killed at the timeout), output, duration."""

    argv: tuple[str, ...]
    returncode: int | None
    output: str
    duration: float
    timed_out: bool = False
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class WouldDo:
    """A change the dry-run system did not make."""

    kind: str  # command, signal, write
    detail: dict[str, object]


def run_command(
    argv: Sequence[str], timeout: float, *, env: dict[str, str] | None = None
) -> CommandResult:
    """Run ``argv`` in its own session; kill its process group if it outlives ``timeout``."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    except OSError as exc:
        return CommandResult(
            tuple(argv), 127, f"cannot run {argv[0]}: {exc.strerror}", time.monotonic() - start
        )
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        out = _kill_group(proc)
    text = out[:OUTPUT_LIMIT].decode("utf-8", "replace") if out else ""
    return CommandResult(
        tuple(argv),
        None if timed_out else proc.returncode,
        text,
        time.monotonic() - start,
        timed_out,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> bytes:
    """TERM the child's whole process group, wait a little, then KILL it."""
    out = b""
    for sig, wait in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            more, _ = proc.communicate(timeout=wait)
            out += more or b""
            break
        except subprocess.TimeoutExpired:
            continue
    # Stragglers of the group that outlived the leader (they ignored TERM): KILL them too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return out


class System:
    """The real host."""

    dry_run = False

    def __init__(self) -> None:
        self.would: list[WouldDo] = []  # what a dry run did not do, in order

    def observe(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """A command that only looks (a config test, a state query): runs even in dry-run."""
        return run_command(argv, timeout)

    def change(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """A command that changes the host (restart, reload)."""
        return run_command(argv, timeout)

    def send_signal(self, pid: int, sig: signal.Signals) -> None:
        os.kill(pid, sig)

    def send_signal_group(self, pgid: int, sig: signal.Signals) -> None:
        os.killpg(pgid, sig)

    def replace_file(self, path: Path, data: bytes) -> None:
        """Atomically replace ``path``, keeping its mode and owner."""
        st = path.stat()
        write_atomic(path, data, mode=st.st_mode & 0o7777)
        os.chown(path, st.st_uid, st.st_gid)

    def copy_file(self, src: Path, dst: Path) -> None:
        """Atomically write ``dst`` as a copy of ``src`` with its mode and owner (a backup)."""
        st = src.stat()
        write_atomic(dst, src.read_bytes(), mode=st.st_mode & 0o7777)
        os.chown(dst, st.st_uid, st.st_gid)

    def remove_file(self, path: Path) -> None:
        """Remove ``path`` (a stale pid file); already gone is fine."""
        path.unlink(missing_ok=True)


class DryRunSystem(System):
    """Records every change it is asked for (in ``would``); changes nothing."""

    dry_run = True

    def change(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.would.append(WouldDo("command", {"argv": list(argv), "timeout_s": timeout}))
        return CommandResult(tuple(argv), 0, "", 0.0, dry_run=True)

    def send_signal(self, pid: int, sig: signal.Signals) -> None:
        self.would.append(WouldDo("signal", {"pid": pid, "signal": sig.name}))

    def send_signal_group(self, pgid: int, sig: signal.Signals) -> None:
        self.would.append(WouldDo("signal_group", {"pgid": pgid, "signal": sig.name}))

    def replace_file(self, path: Path, data: bytes) -> None:
        self.would.append(WouldDo("write", {"path": str(path), "bytes": len(data)}))

    def copy_file(self, src: Path, dst: Path) -> None:
        self.would.append(WouldDo("copy", {"src": str(src), "dst": str(dst)}))

    def remove_file(self, path: Path) -> None:
        self.would.append(WouldDo("remove", {"path": str(path)}))
