"""Service state and control: one interface, two backends.

:class:`ServiceControl` is what the reload / restart / config_test actions (``control.py``) and
``scale_workers`` use. :func:`control_for` picks the backend from the service's configuration:
``unit`` means systemd (``systemd.py``, ``systemctl``), ``pid_file`` + ``start`` means a
host without systemd (``pidfile.py``, signals and the start command).

Every change goes through the :class:`~remediator.system.System` seam, recorded step by step
in :class:`Steps` (argv, exit status, an output excerpt, milliseconds), so a dry run is the same
code with a system that only writes down what it would do. Reading pid files, ``/proc`` and
cgroups is observation and happens directly.

A reload is always gated by the service's config test (:meth:`Backend.reload`): a failing test
refuses the reload, whatever the backend.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from signal import Signals
from typing import Any, Protocol

from remediator.config import Service
from remediator.events import Outcome
from remediator.system import Check, CommandResult, System

CONFIG_TEST_TIMEOUT = 30.0
EXCERPT = 2000  # characters of a command's output kept in the details (its tail)
DEFAULT_PHP_FPM = "php-fpm8.2"
_PHP_UNIT = re.compile(r"php(\d+(?:\.\d+)?)-fpm")


class ServiceStatus(enum.StrEnum):
    """What a backend saw of a service."""

    RUNNING = "running"
    CHANGING = "changing"  # systemd: activating, deactivating, reloading
    FAILED = "failed"  # systemd: failed (crashed, start limit hit)
    STOPPED = "stopped"  # systemd: inactive and not failed, i.e. stopped on purpose
    MASKED = "masked"  # systemd: masked by the operator
    MISSING = "missing"  # systemd: no such unit
    DOWN = "down"  # pid file: no live master
    # systemd: the state could not be read (`systemctl show` failed); pid file: it cannot be
    # trusted (see ServiceState.distrust)
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ServiceState:
    """A service's state: its status, live master, and the backend's raw evidence."""

    status: ServiceStatus
    master_pid: int | None
    summary: str  # e.g. "failed/failed result=signal", "master 1234 running"
    properties: Mapping[str, str] = field(default_factory=dict)  # systemd: `systemctl show`
    leftover_pids: tuple[int, ...] = ()  # processes left without a live master (orphans)
    # Why the master cannot be trusted (an untrusted pid file, a process that is not the
    # service's master, a main PID outside the unit's cgroup): nothing may act on it.
    distrust: str = ""
    # The master is known to have died, not to have been stopped: a pid file still naming a
    # dead master, orphans left behind, a unit failed with a crash's result (signal,
    # core-dump, exit-code...). Definitive: no ``lasting`` wait is needed to call it an outage.
    crashed: bool = False

    @property
    def start_limit_hit(self) -> bool:
        return self.properties.get("Result") == "start-limit-hit"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": str(self.status),
            "master_pid": self.master_pid,
            "summary": self.summary,
        }
        if self.properties:
            out["properties"] = dict(self.properties)
        if self.leftover_pids:
            out["leftover_pids"] = list(self.leftover_pids)
        if self.distrust:
            out["distrust"] = self.distrust
        if self.crashed:
            out["crashed"] = True
        return out


@dataclass
class Attempt:
    """What a control operation did: an outcome, why, and evidence for the action's details."""

    outcome: Outcome
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """The tail of a command's output (errors come last), marked when cut."""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def first_error(text: str) -> str:
    """The line of a config test's output that says what is wrong (or its last line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if any(w in line.lower() for w in ("error", "emerg", "syntax error", "failed")):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


class Steps:
    """Runs commands and sends signals through the system, recording each one in ``log``."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.log: list[dict[str, Any]] = []

    def observe(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """A command that only looks (config test): runs in a dry run too."""
        result = self.system.observe(argv, timeout)
        self._record("observe", result)
        return result

    def change(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """A command that changes the host: only recorded in a dry run."""
        result = self.system.change(argv, timeout)
        self._record("change", result)
        return result

    def _record(self, kind: str, result: CommandResult) -> None:
        step: dict[str, Any] = {
            "kind": kind,
            "argv": list(result.argv),
            "rc": result.returncode,
            "ms": round(result.duration * 1000, 1),
        }
        if result.output.strip():
            step["output"] = excerpt(result.output)
        if result.timed_out:
            step["timed_out"] = True
        if result.dry_run:
            step["dry_run"] = True
        self.log.append(step)

    def signal(self, pid: int, sig: Signals, *, check: Check | None = None) -> bool:
        """Send ``sig`` to ``pid``; False (recorded) when it is already gone, or when
        ``check`` (the master's identity) fails on the process that would get it."""
        return self._signal("signal", pid, sig, self.system.send_signal, check)

    def signal_group(self, pgid: int, sig: Signals, *, check: Check | None = None) -> bool:
        """Send ``sig`` to process group ``pgid``; False (recorded) when it is empty, or when
        ``check`` fails on its leader."""
        return self._signal("signal_group", pgid, sig, self.system.send_signal_group, check)

    def _signal(
        self,
        kind: str,
        target: int,
        sig: Signals,
        send: Callable[[int, Signals], None],
        check: Check | None,
    ) -> bool:
        key = "pgid" if kind == "signal_group" else "pid"
        step: dict[str, Any] = {"kind": kind, key: target, "signal": sig.name}
        try:
            if check is None:
                send(target, sig)
            else:  # judged on the very process that gets it (no PID reused in between)
                group = kind == "signal_group"
                refused = self.system.send_signal_checked(target, sig, check, group=group)
                if refused is not None:
                    step["refused"] = refused
                    self.log.append(step)
                    return False
        except ProcessLookupError:
            step["error"] = "no such process"
            self.log.append(step)
            return False
        if self.system.dry_run:
            step["dry_run"] = True
        self.log.append(step)
        return True

    def remove_file(self, path: Path) -> None:
        """Remove a stale file (a dead master's pid file), recorded."""
        step: dict[str, Any] = {"kind": "remove", "path": str(path)}
        self.system.remove_file(path)
        if self.system.dry_run:
            step["dry_run"] = True
        self.log.append(step)

    def note(self, what: str, **fields: Any) -> None:
        """Record something the backend saw or decided (not a side effect)."""
        self.log.append({"kind": "note", "what": what, **fields})


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll ``cond`` (1 ms, doubling to 10 ms) until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    interval = 0.001
    while True:
        if cond():
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(interval, deadline - now))
        interval = min(interval * 2, 0.01)


# --- the config test --------------------------------------------------------------------------


def php_fpm_binary(service: Service) -> str:
    """The php-fpm program: from ``start``, else from a ``phpX.Y-fpm`` unit, else php-fpm8.2."""
    if service.start and Path(service.start[0]).name.startswith("php-fpm"):
        return service.start[0]
    match = _PHP_UNIT.search(service.unit or "")
    return f"php-fpm{match.group(1)}" if match else DEFAULT_PHP_FPM


def config_test_argv(service: Service) -> list[str]:
    """The configured test, or the kind's default, pointed at ``config_file`` when given.

    Apache goes through ``apachectl`` so Debian's ``envvars`` (APACHE_RUN_DIR…) are set;
    ``apachectl -f CONF -t`` passes its arguments on to ``apache2`` quoted.
    """
    if service.config_test is not None:
        return list(service.config_test)
    conf = [str(service.config_file)] if service.config_file is not None else []
    if service.kind == "php-fpm":
        return [php_fpm_binary(service), "-t", *(["-y", *conf] if conf else [])]
    if service.kind == "nginx":
        return ["nginx", "-t", *(["-c", *conf] if conf else [])]
    return ["apachectl", "-f", *conf, "-t"] if conf else ["apachectl", "configtest"]


# --- the interface ----------------------------------------------------------------------------


class ServiceControl(Protocol):
    """How a service is looked at and acted on, whatever controls it."""

    name: str
    service: Service
    backend: str  # "systemd" or "pid_file"
    steps: Steps
    state_error: str | None  # dry run: the state could not be read; the action went on

    def state(self) -> ServiceState: ...

    def master_pid(self) -> int | None: ...

    def open_master_pidfd(self, state: ServiceState) -> int | None: ...

    def config_test(self) -> CommandResult: ...

    def reload(self) -> Attempt: ...

    def restart(self, *, allow_reset_failed: bool = True) -> Attempt: ...


class Backend:
    """What both backends share: the steps, the config test, and the gate in front of reload."""

    backend = "?"

    def __init__(self, name: str, service: Service, system: System) -> None:
        self.name = name
        self.service = service
        self.system = system
        self.steps = Steps(system)
        self.state_error: str | None = None

    def state(self) -> ServiceState:
        raise NotImplementedError

    def master_pid(self) -> int | None:
        return self.state().master_pid

    def open_master_pidfd(self, state: ServiceState) -> int | None:
        """A pidfd of the verified master ``state`` names (see ``services/death.py``)."""
        return None

    def config_test(self) -> CommandResult:
        return self.steps.observe(config_test_argv(self.service), CONFIG_TEST_TIMEOUT)

    def reload(self) -> Attempt:
        """Graceful reload, only after the config test passes (else REFUSED, not attempted)."""
        held = self._before_reload()
        if held is not None:
            return held
        test = self.config_test()
        evidence = {
            "argv": list(test.argv),
            "rc": test.returncode,
            "output": excerpt(test.output),
        }
        if not test.ok:
            why = "timed out" if test.timed_out else first_error(test.output)
            return Attempt(
                Outcome.REFUSED,
                f"config test failed, reload not attempted: {why}",
                {"config_test": evidence},
            )
        attempt = self._reload()
        attempt.details.setdefault("config_test", evidence)
        return attempt

    def restart(self, *, allow_reset_failed: bool = True) -> Attempt:
        raise NotImplementedError

    def _before_reload(self) -> Attempt | None:
        """A reason not to reload at all (not running, stopped on purpose), or None."""
        raise NotImplementedError

    def _reload(self) -> Attempt:
        raise NotImplementedError


def control_for(name: str, service: Service, system: System) -> ServiceControl:
    """The backend for ``service``: systemd when it names a unit, else its pid file."""
    # Imported here: the backends build on this module.
    from remediator.services.pidfile import PidFileControl  # noqa: PLC0415
    from remediator.services.systemd import SystemdControl  # noqa: PLC0415

    if service.unit is not None:
        return SystemdControl(name, service, system)
    if service.pid_file is not None and service.start is not None:
        return PidFileControl(name, service, system)
    raise ValueError(f"service {name!r} has neither a unit nor a pid_file and start")


def is_down(state: ServiceState, svc: Service) -> tuple[bool, str]:
    """Whether a backend's state means the master is gone while it should run."""
    if state.leftover_pids:
        return True, state.summary  # orphaned workers: the master died under them
    if state.status is ServiceStatus.FAILED:
        return True, state.summary
    if state.status is ServiceStatus.DOWN:
        # a pid file naming a dead master is a crash; no pid file is a deliberate stop
        return svc.pid_file is not None and svc.pid_file.exists(), state.summary
    return False, state.summary
