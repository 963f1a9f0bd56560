"""Service control through systemd: ``systemctl`` for every change, ``systemctl show`` to look.

What systemd 252 does here, seen in a booted systemd with Debian's units (tests/sysd.py):

- ``kill -9`` of php8.2-fpm's master: the unit ends ``failed`` (``Result=signal``, no
  ``Restart=``) and, with the default ``KillMode=control-group``, systemd kills the orphaned
  workers itself within milliseconds. ``systemctl restart`` then brings it back.
- With ``KillMode=process`` (or ``none``) the orphans stay in the unit's cgroup, keep the socket,
  and every start fails (``Another FPM instance seems to already listen``): before starting a
  unit that is not active, processes left in its cgroup are ended with ``systemctl kill
  --kill-who=all`` (TERM, then KILL).
- The default start limit (5 starts in 10 s) makes the 6th restart fail with "start of the
  service was attempted too often", ``Result=start-limit-hit``. Policy: never loop. Report
  ``start_limit_hit``; when the caller allows it (once per restart action), ``systemctl
  reset-failed`` and retry once.
- An operator's ``systemctl stop`` leaves ``inactive``/``dead`` with ``Result=success``, the
  same as a unit never started or reset: all of them are left alone (REFUSED). So is a masked
  unit.

A service's own ``reload`` command, when configured, runs instead of ``systemctl reload UNIT``
(after the same config test), and is judged the same way: the unit still active, new processes
in its cgroup.

A state that cannot be read (``systemctl show`` fails: no systemd as PID 1, no D-Bus) fails a
real action. A dry run goes on: it says what it would run, with the error beside it
(``state_error``), since it changes nothing either way.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

from remediator.config import Service
from remediator.events import Outcome
from remediator.services.base import (
    Attempt,
    Backend,
    ServiceState,
    ServiceStatus,
    excerpt,
    wait_until,
)
from remediator.services.death import open_pidfd
from remediator.services.pidfile import read_proc
from remediator.services.trust import in_cgroup
from remediator.system import CommandResult, System

SYSTEMCTL_TIMEOUT = 120.0  # a job waits for the unit's own start/stop timeouts (90 s default)
SHOW_TIMEOUT = 10.0
SETTLE_WAIT = 2.0  # for a unit being started/stopped to settle, and to show active again
RELOAD_SETTLE = 1.0  # after a reload, for new workers (or a dead master) to show
LEFTOVER_TERM_WAIT = 1.0
LEFTOVER_KILL_WAIT = 5.0
JOURNAL_LINES = 20

PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "NRestarts",
    "UnitFileState",
    "ControlGroup",
)
# systemctl's words when Result=start-limit-hit, and PID 1's in the journal. A unit that had
# already failed keeps its old Result (e.g. exit-code) when the limit stops its next start, and
# systemctl then explains the failure with that: only the journal says it.
_START_LIMIT_TEXT = ("attempted too often", "start request repeated too quickly")
# Results of a unit that died rather than stopped: its main process was killed or dumped core,
# exited non-zero, missed its watchdog, or the kernel's OOM killer took it.
CRASH_RESULTS = frozenset({"signal", "core-dump", "exit-code", "watchdog", "oom-kill"})


def cgroup_root() -> Path:
    """The unified (v2) cgroup hierarchy: ``/sys/fs/cgroup`` (Debian 12), else the hybrid
    layout's ``/sys/fs/cgroup/unified``. Checked on the path, so the mount on top counts."""
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (root / "cgroup.controllers").exists():
            return root
    return Path("/sys/fs/cgroup")


def cgroup_events(control_group: str) -> Path | None:
    """A unit's ``cgroup.events`` (``populated 0`` once its last process is gone), or None."""
    if not control_group:
        return None
    return cgroup_root() / control_group.lstrip("/") / "cgroup.events"


def cgroup_pids(control_group: str) -> tuple[int, ...]:
    """Processes in a unit's cgroup and below it (empty when it has none or is gone)."""
    if not control_group:
        return ()
    base = cgroup_root() / control_group.lstrip("/")
    pids: set[int] = set()
    try:
        files = list(base.rglob("cgroup.procs"))
    except OSError:
        return ()
    for procs in files:
        try:  # a sub-cgroup may go away between the listing and the read
            pids.update(int(x) for x in procs.read_text().split())
        except OSError:
            continue
    return tuple(sorted(pids))


def workers_of(control_group: str, master: int | None) -> set[int]:
    """The live children of ``master`` in the unit's cgroup (every process there if unknown).

    A reload is done when the master has new children: a helper that systemd ran in the cgroup
    (``ExecReload=/bin/kill``) is not one, nor is a master re-executing itself on a bad config.
    """
    pids = set(cgroup_pids(control_group))
    if not master:
        return pids
    out: set[int] = set()
    for pid in pids:
        proc = read_proc(pid)
        if proc is not None and proc.alive and proc.ppid == master:
            out.add(pid)
    return out


def _says_start_limit(text: str) -> bool:
    low = text.lower()
    return any(t in low for t in _START_LIMIT_TEXT)


def parse_show(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def status_of(props: dict[str, str]) -> ServiceStatus:
    if props.get("LoadState") == "masked" or props.get("UnitFileState", "").startswith("masked"):
        return ServiceStatus.MASKED
    if props.get("LoadState") not in ("loaded", None):
        return ServiceStatus.MISSING
    active = props.get("ActiveState", "")
    if active == "active":
        return ServiceStatus.RUNNING
    if active in ("activating", "deactivating", "reloading"):
        return ServiceStatus.CHANGING
    if active == "inactive" and props.get("Result", "success") == "success":
        return ServiceStatus.STOPPED
    return ServiceStatus.FAILED


def crashed(props: dict[str, str]) -> bool:
    """Whether a unit failed by dying (a crash's ``Result``), not by a stop, a start limit or
    a job that could not run: definitive, no ``lasting`` wait."""
    return status_of(props) is ServiceStatus.FAILED and props.get("Result") in CRASH_RESULTS


class SystemdControl(Backend):
    """A systemd unit, controlled with ``systemctl``."""

    backend = "systemd"

    def __init__(self, name: str, service: Service, system: System) -> None:
        super().__init__(name, service, system)
        if service.unit is None:
            raise ValueError(f"service {name!r} has no systemd unit")
        self.unit: str = service.unit

    def state(self) -> ServiceState:
        argv = ["systemctl", "show", self.unit, f"--property={','.join(PROPERTIES)}"]
        result = self.system.observe(argv, SHOW_TIMEOUT)
        if not result.ok:
            lines = [x.strip() for x in excerpt(result.output, 300).splitlines() if x.strip()]
            why = "; ".join(lines) or f"rc {result.returncode}"
            return ServiceState(ServiceStatus.UNKNOWN, None, f"systemctl show failed: {why}")
        props = parse_show(result.output)
        status = status_of(props)
        main = int(props.get("MainPID") or 0) or None
        group = props.get("ControlGroup", "")
        left: tuple[int, ...] = ()
        if status not in (ServiceStatus.RUNNING, ServiceStatus.CHANGING):
            left = cgroup_pids(group)
        summary = (
            f"{props.get('ActiveState', '?')}/{props.get('SubState', '?')} "
            f"result={props.get('Result', '?')}"
        )
        distrust = ""
        if main and group and in_cgroup(main, group) is False:
            # systemd takes a PIDFile= naming a process outside the unit if root owns the
            # file; a restart would then signal that process.
            distrust = f"main pid {main} is outside the unit's cgroup {group}"
            summary += f" main={main} (outside its cgroup)"
            main = None
        elif main:
            summary += f" main={main}"
        if left:
            summary += f", {len(left)} processes left in its cgroup"
        return ServiceState(status, main, summary, props, left, distrust, crashed(props))

    def open_master_pidfd(self, state: ServiceState) -> int | None:
        """A pidfd of the unit's main process as ``state`` names it (None when it has none, or
        it is not in the unit's cgroup), checked again once the pidfd is open (see pidfile.py)."""
        group = state.properties.get("ControlGroup", "")
        pid = state.master_pid
        if pid is None or not group or state.status is not ServiceStatus.RUNNING:
            return None
        fd = open_pidfd(pid)
        if fd is not None and in_cgroup(pid, group) is not True:
            os.close(fd)
            return None
        return fd

    def _settled_state(self) -> ServiceState:
        """The state once systemd is done changing the unit (waiting SETTLE_WAIT at most):
        a stop in progress ends stopped on purpose, a crash being cleaned up ends failed."""
        states = [self.state()]

        def settled() -> bool:
            if states[-1].status is not ServiceStatus.CHANGING:
                return True
            states.append(self.state())
            return states[-1].status is not ServiceStatus.CHANGING

        wait_until(settled, SETTLE_WAIT)
        return states[-1]

    # -- what not to touch

    def _refusal(self, state: ServiceState, what: str) -> Attempt | None:
        details = {"unit": self.unit, "state_before": state.as_dict()}
        if state.distrust:
            self.steps.note("cannot act", reason=state.distrust)
            return Attempt(
                Outcome.CANNOT_ACT, f"not going to {what} {self.unit}: {state.distrust}", details
            )
        if state.status is ServiceStatus.UNKNOWN:
            if self.system.dry_run:
                self.state_error = state.summary  # beside the command it would run
                return None
            return Attempt(
                Outcome.FAILED, f"cannot tell the state of {self.unit}: {state.summary}", details
            )
        if state.status is ServiceStatus.STOPPED:
            return Attempt(
                Outcome.REFUSED,
                f"{self.unit} is {state.summary}: stopped on purpose (or never started); "
                f"not going to {what} it",
                details,
            )
        if state.status is ServiceStatus.MASKED:
            return Attempt(
                Outcome.REFUSED, f"{self.unit} is masked: not going to {what} it", details
            )
        if state.status is ServiceStatus.MISSING:
            return Attempt(Outcome.FAILED, f"{self.unit}: {state.summary}", details)
        return None

    # -- reload

    def _before_reload(self) -> Attempt | None:
        state = self._settled_state()
        refusal = self._refusal(state, "reload")
        if refusal is not None:
            return refusal
        if state.status is not ServiceStatus.RUNNING and state.status is not ServiceStatus.UNKNOWN:
            return Attempt(
                Outcome.FAILED,
                f"{self.unit} is {state.summary}: a reload cannot bring it back",
                {"unit": self.unit, "state_before": state.as_dict()},
            )
        return None

    def _reload(self) -> Attempt:
        before = self.state()
        group = before.properties.get("ControlGroup", "")
        old = set(cgroup_pids(group))  # every process: a worker may be re-parented, not new
        argv = self._reload_argv()
        details: dict[str, Any] = {"unit": self.unit, "argv": argv, "pid_before": before.master_pid}
        result = self.steps.change(argv, SYSTEMCTL_TIMEOUT)
        if self.system.dry_run:
            return self._would(f"would reload {self.unit}: {shlex.join(argv)}", details)
        if not result.ok:
            what = "systemctl reload" if self.service.reload is None else "the reload command"
            failed = "timed out" if result.timed_out else f"failed (rc {result.returncode})"
            why = f"{what} {failed}: {excerpt(result.output, 300)}".rstrip(": ")
            return self._failed(why, details)
        # ExecReload only sends a signal: the reload happens after systemctl returns. Done when
        # new workers show up in the unit's cgroup; a master that died of it (PHP-FPM on a bad
        # config) shows as a unit no longer active. An ondemand pool may have no worker to
        # replace: then the unit still being active after RELOAD_SETTLE has to do.
        states: list[ServiceState] = []

        def settled() -> bool:
            states.append(self.state())
            if states[-1].status is not ServiceStatus.RUNNING:
                return states[-1].status is not ServiceStatus.CHANGING
            return bool(workers_of(group, states[-1].master_pid) - old)

        wait_until(settled, RELOAD_SETTLE)
        after = states[-1]
        new = sorted(workers_of(group, after.master_pid) - old)
        details.update(state_after=after.as_dict(), pid_after=after.master_pid, new_processes=new)
        if after.status is not ServiceStatus.RUNNING:
            return self._failed(f"{self.unit} is {after.summary} after the reload", details)
        note = "" if new else f" (no new worker seen in {RELOAD_SETTLE:g}s)"
        return Attempt(
            Outcome.OK,
            f"reloaded {self.unit} (main pid {before.master_pid} -> {after.master_pid}){note}",
            details,
        )

    # -- restart

    def restart(self, *, allow_reset_failed: bool = True) -> Attempt:
        """``systemctl restart``; clears leftovers of a dead master; one reset-failed at most."""
        before = self._settled_state()
        refusal = self._refusal(before, "restart")
        if refusal is not None:
            return refusal
        details: dict[str, Any] = {
            "unit": self.unit,
            "argv": ["systemctl", "restart", self.unit],
            "state_before": before.as_dict(),
            "pid_before": before.master_pid,
            "start_limit_hit": before.start_limit_hit,
            "reset_failed": False,
        }
        retried = False
        if before.start_limit_hit:
            if not allow_reset_failed:
                return self._failed(
                    f"{self.unit} hit its start limit and reset-failed is not allowed now", details
                )
            self._reset_failed(details)
            retried = True
        if before.leftover_pids:
            self._end_leftovers(before.leftover_pids, details)
        since = time.time()  # wall clock: a journal query, not a timeout
        result = self._systemctl("restart")
        if self.system.dry_run:
            return self._would(f"would restart {self.unit}", details)
        if not result.ok and not retried:
            result = self._retry_once(result, since, details, allow_reset_failed=allow_reset_failed)
        if not result.ok:
            return self._failed(f"systemctl restart failed: {excerpt(result.output, 300)}", details)
        return self._verify_active("restarted", details)

    def _retry_once(
        self,
        failed: CommandResult,
        since: float,
        details: dict[str, Any],
        *,
        allow_reset_failed: bool,
    ) -> CommandResult:
        """After a failed restart: one more try, if a start limit or leftovers explain it."""
        state = self.state()
        if state.start_limit_hit or _says_start_limit(failed.output) or self._limit_logged(since):
            details["start_limit_hit"] = True
            if not allow_reset_failed:
                self.steps.note("start limit hit; reset-failed not allowed", unit=self.unit)
                return failed
            self._reset_failed(details)
        elif state.leftover_pids:
            self._end_leftovers(state.leftover_pids, details)
        else:
            return failed
        return self._systemctl("restart")

    def _reset_failed(self, details: dict[str, Any]) -> None:
        self._systemctl("reset-failed")
        details["reset_failed"] = True

    def _end_leftovers(self, pids: tuple[int, ...], details: dict[str, Any]) -> None:
        """TERM, then KILL, every process left in the unit's cgroup (orphans of a dead main)."""
        details["leftovers"] = list(pids)
        for sig, wait in (("SIGTERM", LEFTOVER_TERM_WAIT), ("SIGKILL", LEFTOVER_KILL_WAIT)):
            self._systemctl("kill", "--kill-who=all", f"--signal={sig}")
            if self.system.dry_run:
                return
            if wait_until(lambda: not self.state().leftover_pids, wait):
                return
        self.steps.note(
            "leftovers still alive after SIGKILL", pids=list(self.state().leftover_pids)
        )

    def _limit_logged(self, since: float) -> bool:
        """Whether systemd logged that it refused to start the unit since ``since``."""
        argv = ["journalctl", "-u", self.unit, f"--since=@{since:.3f}", "--no-pager", "-o", "cat"]
        return _says_start_limit(self.system.observe(argv, SHOW_TIMEOUT).output)

    # -- helpers

    def _reload_argv(self) -> list[str]:
        """The service's own reload command when it has one, else ``systemctl reload UNIT``."""
        if self.service.reload is not None:
            return list(self.service.reload)
        return ["systemctl", "reload", self.unit]

    def _would(self, reason: str, details: dict[str, Any]) -> Attempt:
        """WOULD_RUN (a dry run), saying when the unit's state could not be read."""
        if self.state_error is not None:
            details["state_error"] = self.state_error
            reason += f" (its state is unknown: {self.state_error})"
        return Attempt(Outcome.WOULD_RUN, reason, details)

    def _systemctl(self, verb: str, *args: str) -> CommandResult:
        return self.steps.change(["systemctl", verb, *args, self.unit], SYSTEMCTL_TIMEOUT)

    def _verify_active(self, done: str, details: dict[str, Any]) -> Attempt:
        """Wait (briefly) for the unit to be active; OK when it is."""
        states: list[ServiceState] = []

        def active() -> bool:
            states.append(self.state())
            return states[-1].status is ServiceStatus.RUNNING

        wait_until(active, SETTLE_WAIT)
        after = states[-1]
        details["state_after"] = after.as_dict()
        details["pid_after"] = after.master_pid
        if after.status is not ServiceStatus.RUNNING:
            return self._failed(f"{self.unit} is {after.summary} after being {done}", details)
        return Attempt(
            Outcome.OK,
            f"{done} {self.unit} (main pid {details.get('pid_before')} -> {after.master_pid})",
            details,
        )

    def _failed(self, reason: str, details: dict[str, Any]) -> Attempt:
        """FAILED, with the unit's last journal lines as evidence."""
        argv = ["journalctl", "-u", self.unit, "-n", str(JOURNAL_LINES), "--no-pager", "-o", "cat"]
        journal = self.system.observe(argv, SHOW_TIMEOUT)
        if journal.output.strip():
            details["journal"] = excerpt(journal.output)
        return Attempt(Outcome.FAILED, reason, details)
