"""Run one command so that nothing it starts outlives its timeout: a per-command subreaper.

``system.run_contained`` starts this file as its own small program (``python -I -S``, the
standard library only), in a session of its own, and hands it, as JSON on stdin, the argv, the
environment, the timeout and the TERM grace. This *keeper* marks itself a child subreaper
(``prctl(PR_SET_CHILD_SUBREAPER)``) and runs the command as its child. Whatever the command
starts, however it detaches (``setsid``, a double fork), stays a descendant of the keeper:
an orphan is re-parented to its nearest subreaper ancestor, not to PID 1. At the timeout the
keeper walks ``/proc`` by parent links from itself, TERMs every descendant, waits the grace, then
KILLs whatever is left, round after round until nothing below it lives (a process killed
cannot fork again, so the rounds end), and reaps the orphans it adopted. It answers, as JSON on
stdout, with the exit status, the output, and every descendant it signalled.

Why a keeper process and not the daemon itself as the subreaper: the daemon starts services
(a daemonizing ``php-fpm``) whose masters would then become its children, and it would have to
reap adopted children behind the back of ``subprocess``; the keeper has one child and adopts
only what that child started, so it may reap freely and knows exactly whose descendants it
kills. Why not (only) a cgroup: where a cgroup2 hierarchy is mounted differs between hosts
(hybrid or unified), under systemd a unit's cgroup is systemd's unless delegated (and the
shipped unit's ``ProtectControlGroups=yes`` makes ``/sys/fs/cgroup`` read-only), and a child
cannot be placed in one before it runs without ``clone3``; the subreaper works on every Linux.
Under the shipped unit, ``KillMode=mixed`` still ends whatever is left in the daemon's cgroup
when the daemon stops.

Each signal goes through a pidfd opened *before* the process is checked to still descend
from the keeper, so a recycled PID is never signalled: only descendants, never by name.
A command that kills the keeper itself (it runs as root and could) sets its descendants free:
the daemon then ends the keeper's process group, which catches those that did not ``setsid``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
KILL_ROUNDS = 200  # KILL sweeps before giving up (a tree that forks faster than it is killed)
POLL = 0.02


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """Every process: pid -> (parent pid, state letter, name), from /proc/PID/stat."""
    table: dict[int, tuple[int, str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_bytes()
        except OSError:  # gone since the listing
            continue
        head, _, tail = raw.rpartition(b")")  # the name may hold spaces and parentheses
        name = head.partition(b"(")[2].decode("utf-8", "replace")
        fields = tail.split()
        if len(fields) >= 2:
            table[int(entry.name)] = (int(fields[1]), fields[0].decode("ascii", "replace"), name)
    return table


def descendants(root: int) -> dict[int, tuple[str, str]]:
    """The live and zombie processes below ``root``: pid -> (state, name)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, tuple[str, str]] = {}
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid in out or pid == root:
            continue
        out[pid] = table[pid][1:]
        todo.extend(children.get(pid, ()))
    return out


def _descends(pid: int, root: int) -> bool:
    """Whether ``pid`` (as it is now) has ``root`` among its ancestors."""
    for _ in range(4096):
        try:
            raw = Path(f"/proc/{pid}/stat").read_bytes()
            ppid = int(raw.rpartition(b")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if ppid == root:
            return True
        if ppid <= 1:
            return False
        pid = ppid
    return False


def _signal(pid: int, root: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to ``pid`` iff it still descends from ``root``; whether it was sent."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone
        return False
    try:
        if not _descends(pid, root):  # the pidfd pins the process: this check is about it
            return False
        signal.pidfd_send_signal(fd, sig)
    except OSError:
        return False
    else:
        return True
    finally:
        os.close(fd)


def _reap_adopted(leader: subprocess.Popen[bytes]) -> None:
    """Reap the keeper's dead children other than the command (left to ``subprocess``)."""
    for pid, (state, _) in descendants(os.getpid()).items():
        if state == "Z" and pid != leader.pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    leader.poll()


def _live(root: int) -> dict[int, str]:
    return {pid: name for pid, (state, name) in descendants(root).items() if state != "Z"}


def sweep(leader: subprocess.Popen[bytes], grace: float) -> tuple[dict[int, str], dict[int, str]]:
    """TERM every descendant, wait ``grace``, KILL the rest; (signalled, survivors)."""
    me = os.getpid()
    signalled: dict[int, str] = {}
    for pid, name in _live(me).items():
        if _signal(pid, me, signal.SIGTERM):
            signalled[pid] = name
    deadline = time.monotonic() + grace
    while _live(me) and time.monotonic() < deadline:
        _reap_adopted(leader)
        time.sleep(POLL)
    for _ in range(KILL_ROUNDS):
        _reap_adopted(leader)
        live = _live(me)
        if not live:
            break
        for pid, name in live.items():
            if _signal(pid, me, signal.SIGKILL):
                signalled.setdefault(pid, name)
        time.sleep(POLL / 4)
    _reap_adopted(leader)
    return signalled, _live(me)


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Run the request's command as a child of this subreaper; the answer to print."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        return {"error": f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}"}
    argv: list[str] = request["argv"]
    try:
        leader = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=request["env"],
        )
    except OSError as exc:
        return {"returncode": 127, "output": f"cannot run {argv[0]}: {exc.strerror}"}
    answer: dict[str, Any] = {"timed_out": False, "killed": [], "survivors": []}
    try:
        out, _ = leader.communicate(timeout=request["timeout"])
    except subprocess.TimeoutExpired:
        answer["timed_out"] = True
        killed, survivors = sweep(leader, request["grace"])
        answer["killed"] = [{"pid": p, "name": n} for p, n in sorted(killed.items())]
        answer["survivors"] = [{"pid": p, "name": n} for p, n in sorted(survivors.items())]
        try:  # the pipe's writers are dead now, unless a survivor holds it
            out, _ = leader.communicate(timeout=request["grace"])
        except subprocess.TimeoutExpired:
            out = b""
    limit = request["limit"]
    answer["returncode"] = None if answer["timed_out"] else leader.returncode
    answer["output"] = out[:limit].decode("utf-8", "replace") if out else ""
    # What the command left running when it ended on its own (a daemon it started): not
    # killed, re-parented on the keeper's exit; named so that the operator knows.
    left = _live(os.getpid())
    answer["left_running"] = [{"pid": p, "name": n} for p, n in sorted(left.items())]
    return answer


def main() -> int:
    try:
        request = json.loads(sys.stdin.buffer.read())
        answer = run(request)
    except Exception as exc:  # the daemon must get an answer, never a traceback
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
