"""Service control without systemd: the master's pid file, signals, and the start command.

Which processes are the service's is decided from evidence, never from a name alone. The pid
file is untrusted input (its directory may be www-data's, as Debian's ``/run/php`` is): it is
read and judged by :mod:`remediator.services.trust`, and so is the process it names.

- the **master** is the live (non-zombie) process a trusted pid file names, if it passes
  :meth:`~remediator.services.trust.MasterIdentity.problem`: owned by root (or the daemon's
  user), running the service's program (``/proc/PID/exe``), started with its config file;
- its **process group**: all three servers call ``setsid`` when they daemonize, so the workers'
  group is the master's PID. A group is only ever signalled as a whole while that verified
  master leads it. Workers whose master died (PHP-FPM orphans, which keep the socket and make
  every new start fail with rc 70) are found as the live members of the group the pid file
  names that run the service's program, and are signalled one by one;
- the **holders of the service's own socket**, when a start fails because the address is taken
  (``Another FPM instance seems to already listen on SOCK``), if their program is the service's
  and their master is dead.

A pid file that cannot be trusted (a symlink, a FIFO, a device, owned by another user, more
than a PID, a PID of 1 or less) or that names a live process that is not the service's master
makes every action **cannot act**: nothing is signalled, nothing started, and the reason is
recorded. So does a start that fails because a running instance the pid file does not name
holds the service's address: it is left alone.

Liveness is psutil's view through ``/proc``: a zombie counts as dead (PID 1 may reap slowly).
The start command must daemonize (return once the server runs), as ``php-fpm -y CONF``,
``nginx -c CONF`` and ``apache2 -k start`` do.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from remediator.config import Service
from remediator.events import Outcome
from remediator.services.base import (
    Attempt,
    Backend,
    ServiceState,
    ServiceStatus,
    excerpt,
    first_error,
    wait_until,
)
from remediator.services.death import open_pidfd
from remediator.services.trust import MasterIdentity, PidFileRead, read_pid_file
from remediator.system import System

START_TIMEOUT = 30.0  # the start command itself
UP_WAIT = 10.0  # then for its pid file to name a live master
RELOAD_TIMEOUT = 30.0
RELOAD_WAIT = 10.0  # for the reloaded master / new workers
TERM_WAIT = 1.0  # SIGTERM, then SIGKILL
KILL_WAIT = 5.0

_ANY_ADDRESS = frozenset({"0.0.0.0", "::", "*"})  # noqa: S104 - compared with, never bound
# Start errors that name the address held by someone else: (regex, is it a unix socket path).
_ADDRESS_TAKEN = (
    re.compile(r"Another FPM instance seems to already listen on (?P<addr>/\S+)"),
    re.compile(r"unable to bind listening socket for address '(?P<addr>[^']+)'"),
    re.compile(r"bind\(\) to (?P<addr>\S+) failed \(98"),  # nginx
    re.compile(r"could not bind to address \[?(?P<addr>[^\s\]]+?)\]?:(?P<port>\d+)\b"),  # apache
)


@dataclass(frozen=True)
class Proc:
    """A process as ``/proc/PID/stat`` shows it."""

    pid: int
    ppid: int
    pgid: int
    comm: str
    alive: bool  # not a zombie, not dead
    stopped: bool = False  # state T (SIGSTOP) or t (traced): it acts on no signal but KILL/CONT


def read_proc(pid: int) -> Proc | None:
    """The process ``pid``, or None when there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    head, _, tail = raw.rpartition(b")")
    fields = tail.split()
    if len(fields) < 3 or b"(" not in head:
        return None
    comm = head.partition(b"(")[2].decode("utf-8", "replace")
    state = fields[0]
    alive = state not in (b"Z", b"X")
    return Proc(pid, int(fields[1]), int(fields[2]), comm, alive, state in (b"T", b"t"))


def scan() -> list[Proc]:
    """Every process visible in ``/proc``."""
    out: list[Proc] = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                proc = read_proc(int(entry.name))
                if proc is not None:
                    out.append(proc)
    return out


def is_alive(pid: int) -> bool:
    proc = read_proc(pid)
    return proc is not None and proc.alive


class PidFileControl(Backend):
    """A service started by ``start`` that writes ``pid_file`` (hosts without systemd)."""

    backend = "pid_file"

    def __init__(self, name: str, service: Service, system: System) -> None:
        super().__init__(name, service, system)
        if service.pid_file is None or service.start is None:
            raise ValueError(f"service {name!r} needs pid_file and start without a unit")
        self.pid_file: Path = service.pid_file
        self.start_argv: list[str] = list(service.start)
        self.identity = MasterIdentity.of(service)

    # -- which processes are ours

    def _ours(self, pid: int) -> bool:
        """Whether ``pid`` runs this service's program (its ``/proc/PID/exe``, not its name,
        which any process may set for itself). Never the start command's, which may be a
        shell or wrapper."""
        return self.identity.runs_program(pid)

    def _read(self) -> PidFileRead:
        return read_pid_file(self.pid_file, self.identity.uids)

    def _named(self) -> tuple[int | None, str]:
        """The PID a trusted pid file names (None: none, or nothing to trust) and, when it
        cannot be acted on, why: the file is untrusted, or it names a live process that is
        not the service's master."""
        read = self._read()
        if read.untrusted:
            return None, read.problem
        pid = read.pid
        if pid is None:
            return None, ""
        proc = read_proc(pid)
        if proc is None or not proc.alive:
            return pid, ""  # a dead master (or its zombie): stale, not a lie
        problem = self.identity.problem(pid)
        if problem is not None:
            return pid, f"{self.pid_file} names process {pid}, not {self.name}'s master: {problem}"
        return pid, ""

    def distrust(self) -> str:
        """Why this service cannot be acted on now ("" when it can)."""
        return self._named()[1]

    def _master(self) -> int | None:
        """The live, verified master named by a trusted pid file."""
        pid, problem = self._named()
        if pid is None or problem:
            return None
        return pid if is_alive(pid) else None

    def _group(self, pid: int | None) -> list[Proc]:
        """Live members of the process group ``pid`` leads or led, if tied to this service.

        A live leader must be the verified master (else nothing is ours: the caller refuses);
        a dead leader's group is ours as long as a member runs our program, and then only
        those members are.
        """
        if pid is None:
            return []
        leader = read_proc(pid)
        procs = [p for p in scan() if p.alive]
        if leader is not None and leader.alive:
            if self.identity.problem(pid) is not None:
                return []
            if leader.pgid != pid:
                # A master that does not lead its own group: it and its children only.
                return [p for p in procs if pid in (p.pid, p.ppid)]
            return [p for p in procs if p.pgid == pid]
        return [p for p in procs if p.pgid == pid and self._ours(p.pid)]

    def _workers(self, pid: int) -> set[int]:
        """The master's live children in its process group (not a daemonizing new master)."""
        master = read_proc(pid)
        if master is None:
            return set()
        return {p.pid for p in scan() if p.ppid == pid and p.pgid == master.pgid and p.alive}

    def state(self) -> ServiceState:
        pid, problem = self._named()
        if problem:
            # Neither up nor down: what the pid file says cannot be used (an attacker could
            # fake a crash with it), and nothing is done until it can.
            return ServiceState(ServiceStatus.UNKNOWN, None, problem, distrust=problem)
        master = self._master()
        if master is not None:
            return ServiceState(ServiceStatus.RUNNING, master, f"master {master} running")
        left = tuple(p.pid for p in self._group(pid))
        summary = "no pid file" if pid is None else f"master {pid} not running"
        if left:
            summary += f", {len(left)} of its processes left"
        # A pid file still naming a dead master is a crash: a clean stop removes it (PHP-FPM,
        # nginx and Apache all do, before they exit), and so does a reload's old master.
        crashed = pid is not None or bool(left)
        return ServiceState(ServiceStatus.DOWN, None, summary, leftover_pids=left, crashed=crashed)

    def master_pid(self) -> int | None:
        return self._master()

    def open_master_pidfd(self, state: ServiceState) -> int | None:
        """A pidfd of the verified master ``state`` names (None when there is none).

        Verified again after the pidfd is opened: the PID could have been reused since
        ``state`` was read, and then the pidfd names whatever took it. Once open, it names one
        process for good, and that process passed every check of ``trust.py`` while it was.
        """
        pid = state.master_pid
        if pid is None or state.distrust:
            return None
        fd = open_pidfd(pid)
        if fd is not None and self._master() != pid:
            os.close(fd)
            return None
        return fd

    # -- reload

    def _before_reload(self) -> Attempt | None:
        problem = self.distrust()
        if problem:
            return self._cannot_act("reload", problem)
        master = self._master()
        if master is None:
            return Attempt(
                Outcome.FAILED,
                f"{self.name} is not running ({self.state().summary}): a reload cannot start it",
            )
        proc = read_proc(master)
        if proc is not None and proc.stopped:
            return Attempt(
                Outcome.FAILED,
                f"{self.name}'s master {master} is stopped (SIGSTOP or traced): "
                "it cannot take a reload",
            )
        return None

    def _reload(self) -> Attempt:
        old = self._master()
        if old is None:
            return Attempt(Outcome.FAILED, f"{self.name} stopped running before the reload")
        workers = self._workers(old)
        stamp = self._pid_file_stamp()
        details: dict[str, Any] = {"pid_before": old, "workers_before": sorted(workers)}
        if self.service.reload is None and self.service.kind == "php-fpm":
            details |= {"signal": signal.SIGUSR2.name, "pid": old}
            how = f"SIGUSR2 to master {old}"
            if not self.steps.signal(old, signal.SIGUSR2, check=self.identity.problem):
                refused = self.steps.log[-1].get("refused")
                if refused is not None:  # no longer the master it was judged to be
                    return self._cannot_act("reload", refused, pid=old)
                return Attempt(Outcome.FAILED, f"{self.name} stopped running before the reload")
            # The master ends its workers with QUIT, TERM and, a second later, KILL; a stopped
            # worker (SIGSTOP, a debugger gone) acts on nothing but KILL until it is continued.
            for pid in sorted(workers):
                proc = read_proc(pid)
                if proc is not None and proc.alive and proc.stopped:
                    self.steps.signal(pid, signal.SIGCONT)
        else:
            argv = self._reload_argv()
            details["argv"] = argv
            how = shlex.join(argv)
            result = self.steps.change(argv, RELOAD_TIMEOUT)
            if not result.ok:
                details["pid_after"] = self._master()
                return Attempt(
                    Outcome.FAILED,
                    f"reload command failed (rc {result.returncode}): {excerpt(result.output, 300)}",
                    details,
                )
        if self.system.dry_run:
            return Attempt(Outcome.WOULD_RUN, f"would reload {self.name}: {how}", details)

        def settled() -> bool:
            new = self._master()
            if new is None:
                return not is_alive(old)  # the master died (a bad config): no use waiting
            if self.service.kind == "php-fpm":
                # It re-execs, rewrites its pid file and, when it daemonizes, forks a new
                # master; the old one exits once the new one is ready.
                return self._pid_file_stamp() != stamp and (new == old or not is_alive(old))
            return bool(self._workers(new) - workers)  # the same master, a new generation

        done = wait_until(settled, RELOAD_WAIT)
        new = self._master()
        details["pid_after"] = new
        details["workers_after"] = sorted(self._workers(new)) if new else []
        if new is None:
            return Attempt(
                Outcome.FAILED,
                f"{self.name}'s master exited during the reload: it is down",
                details,
            )
        if not done:
            return Attempt(
                Outcome.FAILED,
                f"{self.name} did not take up the reload in {RELOAD_WAIT:.0f}s (no new master or "
                "workers): it kept its old configuration, see its error log",
                details,
            )
        return Attempt(Outcome.OK, f"reloaded {self.name} (master {old} -> {new})", details)

    def _pid_file_stamp(self) -> tuple[int, int, int | None]:
        """Changes when the pid file is rewritten (inode, mtime) or names another process."""
        try:
            st = self.pid_file.lstat()
        except OSError:
            return (0, 0, None)
        return (st.st_ino, st.st_mtime_ns, self._read().pid)

    def _cannot_act(self, what: str, problem: str, **details: Any) -> Attempt:
        """Nothing signalled, nothing started: the reason is recorded as cannot act."""
        self.steps.note("cannot act", reason=problem)
        return Attempt(
            Outcome.CANNOT_ACT,
            f"not going to {what} {self.name}: {problem}",
            {"pid_file": str(self.pid_file), "distrust": problem, **details},
        )

    def _reload_argv(self) -> list[str]:
        if self.service.reload is not None:
            return list(self.service.reload)
        conf = [str(self.service.config_file)] if self.service.config_file is not None else []
        if self.service.kind == "nginx":
            return ["nginx", *(["-c", *conf] if conf else []), "-s", "reload"]
        return ["apachectl", *(["-f", *conf] if conf else []), "-k", "graceful"]

    # -- restart

    def restart(self, *, allow_reset_failed: bool = True) -> Attempt:
        """Stop the old process group (orphans included), then start and wait for the master.

        ``allow_reset_failed`` is systemd's; there is no start limit here.
        """
        old_pid, problem = self._named()
        if problem:
            return self._cannot_act("restart", problem)
        master = self._master()
        details: dict[str, Any] = {
            "argv": self.start_argv,
            "pid_before": master,
            "pid_file_before": old_pid,
        }
        members = self._group(old_pid)
        if members:
            details["stopped"] = sorted(p.pid for p in members)
            if master is None:
                details["orphans"] = details["stopped"]
            self._stop(old_pid, members)
        self._remove_stale_pid_file()
        stamp = self._pid_file_stamp()  # a new master rewrites it, even one with a reused PID
        result = self.steps.change(self.start_argv, START_TIMEOUT)
        if not result.ok and not self.system.dry_run:
            holders = self._address_holders(result.output)
            if holders:
                details["socket_holders"] = sorted(holders)
                stopped, running = self._stop_orphaned(holders)
                details["stopped"] = sorted(set(stopped) | set(details.get("stopped", [])))
                if running:
                    problem = (
                        f"its address is held by a running instance (master "
                        f"{', '.join(map(str, running))}) that {self.pid_file} does not name: "
                        "left alone"
                    )
                    return self._cannot_act("restart", problem, **details)
                self._remove_stale_pid_file()
                result = self.steps.change(self.start_argv, START_TIMEOUT)
        if self.system.dry_run:
            stop = f"SIGTERM to its {len(members)} old processes, then " if members else ""
            reason = f"would restart {self.name}: {stop}{shlex.join(self.start_argv)}"
            return Attempt(Outcome.WOULD_RUN, reason, details)
        if not result.ok:
            details["pid_after"] = self._master()
            what = "timed out" if result.timed_out else f"failed (rc {result.returncode})"
            return Attempt(
                Outcome.FAILED, f"start command {what}: {first_error(result.output)}", details
            )
        up = wait_until(lambda: self._new_master(master, stamp) is not None, UP_WAIT)
        details["pid_after"] = self._master()
        if not up:
            return Attempt(
                Outcome.FAILED,
                f"started, but no live master in {self.pid_file} after {UP_WAIT:.0f}s",
                details,
            )
        before = master if master is not None else (f"{old_pid} gone" if old_pid else "none")
        return Attempt(
            Outcome.OK,
            f"restarted {self.name} (master {before} -> {details['pid_after']})",
            details,
        )

    def _stop_orphaned(self, holders: set[int]) -> tuple[list[int], list[int]]:
        """Stop the members of ``holders``' groups whose leader (master) is dead; return who
        was stopped, and the live leaders of the groups left alone.

        A holder with a live master is another running instance: left alone, never guessed.
        """
        procs = [p for p in scan() if p.pid in holders]
        stopped: list[int] = []
        running: list[int] = []
        for pgid in sorted({p.pgid for p in procs}):
            if is_alive(pgid):
                self.steps.note("address held by a running instance: left alone", pgid=pgid)
                running.append(pgid)
                continue
            group = self._group(pgid)
            stopped += [p.pid for p in group]
            self._stop(pgid, group)
        return stopped, running

    def _new_master(self, old: int | None, stamp: tuple[int, int, int | None]) -> int | None:
        """The live master, if it is not the one we stopped."""
        new = self._master()
        if new is None or (new == old and self._pid_file_stamp() == stamp):
            return None
        return new

    def _stop(self, pgid: int | None, members: list[Proc]) -> None:
        """SIGTERM (and SIGCONT: a stopped process acts on TERM only once continued) the group
        while the verified master leads it, else each member; SIGKILL what is left after
        TERM_WAIT."""
        pids = [p.pid for p in members]
        led = pgid is not None and pgid in pids and self.identity.problem(pgid) is None
        group = pgid if led and all(p.pgid == pgid for p in members) else None

        def gone() -> bool:
            return not any(map(is_alive, pids))

        self._send(group, pids, signal.SIGTERM)
        self._send(group, pids, signal.SIGCONT)
        if self.system.dry_run:
            self.steps.note(f"SIGKILL if still alive after {TERM_WAIT:g}s", pids=pids)
            return
        if wait_until(gone, TERM_WAIT):
            return
        self.steps.note("still alive after SIGTERM", pids=[p for p in pids if is_alive(p)])
        self._send(group, pids, signal.SIGKILL)
        if not wait_until(gone, KILL_WAIT):
            self.steps.note("still alive after SIGKILL", pids=[p for p in pids if is_alive(p)])

    def _send(self, group: int | None, pids: list[int], sig: signal.Signals) -> None:
        if group is not None:  # led by the verified master: judged again as it is signalled
            self.steps.signal_group(group, sig, check=self.identity.problem)
            return
        for pid in pids:
            if self.system.dry_run or is_alive(pid):
                self.steps.signal(pid, sig)

    def _remove_stale_pid_file(self) -> None:
        """Remove a pid file naming no live master (Apache refuses to start over a zombie's)."""
        if os.path.lexists(self.pid_file) and self._master() is None:
            self.steps.remove_file(self.pid_file)

    def _address_holders(self, output: str) -> set[int]:
        """Live processes of our program listening on the address a failed start names."""
        for rx in _ADDRESS_TAKEN:
            match = rx.search(output)
            if match is None:
                continue
            addr = match.group("addr")
            port = match.groupdict().get("port")
            if port is None and not addr.startswith("/"):
                addr, _, port = addr.rpartition(":")
            self.steps.note("address in use", address=addr, port=port)
            return self._listeners(addr.strip("[]"), int(port) if port else None)
        return set()

    def _listeners(self, addr: str, port: int | None) -> set[int]:
        kind = "unix" if port is None else "inet"
        try:
            conns = psutil.net_connections(kind=kind)
        except (psutil.Error, OSError):
            return set()
        found: set[int] = set()
        for c in conns:
            if c.pid is None:
                continue
            laddr: Any = c.laddr  # a path for unix sockets, (ip, port) for inet ones
            if port is None:
                hit = laddr == addr
            else:
                hit = (
                    c.status == psutil.CONN_LISTEN
                    and bool(laddr)
                    and laddr.port == port
                    and (laddr.ip == addr or laddr.ip in _ANY_ADDRESS)
                )
            if hit:
                proc = read_proc(c.pid)
                if proc is not None and proc.alive and self._ours(c.pid):
                    found.add(c.pid)
        return found
