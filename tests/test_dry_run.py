"""A dry run is a dry run everywhere: every action says exactly what it would do, and does none
of it, against real servers.

What "does none of it" means is checked twice: on the servers themselves (the same master and
workers, the same bytes in the files, nothing received by the webhook) and in the interpreter's
own audit trail (``sys.addaudithook``): no ``kill``, no file opened for writing, renamed or
removed, no connection, and no program started but the read-only checks (config tests,
``systemctl show``).

The second half runs the systemd backend on this host, whose PID 1 is not systemd: ``systemctl``
cannot reach it, the state of every unit is unknown. A dry run still says what it would run,
with that error beside it; a real action fails.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.actions.declare import (
    CommandArgs,
    DiagnoseArgs,
    NotifyArgs,
    ScaleArgs,
    ServiceArgs,
)
from remediator.actions.registry import all_actions
from remediator.config import Notifier, Service
from remediator.review import commands
from remediator.system import DryRunSystem, System
from tests.stack import PHP_FPM, Nginx, PhpFpm, http_get
from tests.webhook import Receiver, receiving

pytestmark = pytest.mark.servers

UNIT = "php8.2-fpm.service"
NO_SYSTEMD = pytest.mark.skipif(
    Path("/run/systemd/system").is_dir(),
    reason="needs a host whose PID 1 is not systemd (systemctl cannot reach it); "
    "test_service_systemd.py covers a booted one",
)


# --- the interpreter's audit trail ------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_CHANGES = frozenset(
    {
        "os.kill",
        "os.killpg",
        "os.rename",  # os.replace too
        "os.remove",  # os.unlink too
        "os.rmdir",
        "os.mkdir",
        "os.chown",
        "os.chmod",
        "os.truncate",
        "os.link",
        "os.symlink",
        "tempfile.mkstemp",
        "socket.connect",
        "subprocess.Popen",
        "os.exec",
        "os.posix_spawn",
        "os.system",
    }
)


class SideEffects:
    """What Python code in this process tried to do to the host while :meth:`recording`."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._on = False
        self._lock = threading.Lock()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self._on:
            return
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else False
            if str(path) == os.devnull:  # a child's stdin
                return
            if writes or (isinstance(flags, int) and flags & _WRITE_FLAGS):
                with self._lock:
                    self.events.append(("open-for-write", str(path)))
        elif event in _CHANGES:
            with self._lock:
                self.events.append((event, args))

    def programs(self) -> list[list[str]]:
        """The argv of every program started."""
        return [[str(a) for a in args[1]] for e, args in self.events if e == "subprocess.Popen"]

    def changes(self) -> list[tuple[str, Any]]:
        """Everything but starting a program."""
        return [(e, args) for e, args in self.events if e != "subprocess.Popen"]

    def __enter__(self) -> SideEffects:
        self.events.clear()
        self._on = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._on = False


_AUDIT: SideEffects | None = None


@pytest.fixture
def audit() -> SideEffects:
    """One hook for the process (hooks cannot be removed); it records only inside ``with``."""
    global _AUDIT  # noqa: PLW0603 - the one hook this process may ever add
    if _AUDIT is None:
        _AUDIT = SideEffects()
        sys.addaudithook(_AUDIT.hook)
    return _AUDIT


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as server:
        yield server


# --- every action, pid-file services ----------------------------------------------------------


def _fpm_service(fpm: PhpFpm) -> Service:
    return Service(
        kind="php-fpm",
        pid_file=fpm.pid_file,
        start=(PHP_FPM, "-y", str(fpm.conf)),
        config_file=fpm.conf,
        pool_file=fpm.pool_file,
    )


def _nginx_service(nginx: Nginx) -> Service:
    return Service(
        kind="nginx",
        pid_file=nginx.pid_file,
        start=("nginx", "-c", str(nginx.conf), "-e", str(nginx.error_log)),
        config_file=nginx.conf,
    )


def _ctx(system: System, services: dict[str, Service], url: str = "http://127.0.0.1:9/") -> Any:
    return ActionContext(
        system=system,
        services=services,
        notifiers={"ops": Notifier(url=url)},
        playbook="php-fpm-down",
        incident="inc-1",
        summary="tripped: 502 rate 40% (40 of 100 in 20s); done: restart php (would_run)",
    )


def _snapshot(fpm: PhpFpm, nginx: Nginx) -> dict[str, Any]:
    """What a change to these servers would alter."""
    files = (fpm.pool_file, fpm.conf, fpm.pid_file, nginx.conf, nginx.pid_file)
    return {
        "fpm": (fpm.master_pid(), sorted(fpm.worker_pids())),
        "nginx": (nginx.master_pid(), sorted(nginx.worker_pids())),
        "files": {str(f): (f.read_bytes(), f.stat().st_mtime_ns, f.stat().st_ino) for f in files},
        "dir": sorted(p.name for p in fpm.pool_file.parent.iterdir()),
    }


def test_every_action_in_a_dry_run_says_what_it_would_do_and_does_none_of_it(
    fpm: PhpFpm, nginx_fpm: Nginx, receiver: Receiver, audit: SideEffects, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    ctx = _ctx(
        DryRunSystem(),
        {"php": _fpm_service(fpm), "web": _nginx_service(nginx_fpm)},
        receiver.url(),
    )
    steps: list[tuple[str, Any]] = [
        ("restart", ServiceArgs(service="php")),
        ("reload", ServiceArgs(service="php")),
        ("restart", ServiceArgs(service="web")),
        ("reload", ServiceArgs(service="web")),
        ("scale_workers", ScaleArgs(service="php", by=2, max_children=8, memory_reserve=0)),
        ("command", CommandArgs(argv=("/usr/bin/touch", str(canary)))),
        ("notify", NotifyArgs(notifier="ops", message="php-fpm down")),
        ("config_test", ServiceArgs(service="php")),
        ("diagnose", DiagnoseArgs(config_test=("php", "web"), snapshot=False)),
    ]
    actions = all_actions()
    before = _snapshot(fpm, nginx_fpm)
    master, web_master = fpm.master_pid(), nginx_fpm.master_pid()
    with audit:
        results = [actions[name](args, ctx) for name, args in steps]
    after = _snapshot(fpm, nginx_fpm)
    # A request through both servers is answered by the same processes: had a signal been
    # sent, it would have been delivered before the request got through.
    assert http_get(nginx_fpm.url())[0] == 200

    restart_php, reload_php, restart_web, reload_web, scale, command, notify, test, diag = results
    outcomes = [str(r.outcome) for r in results]
    assert outcomes == [*["would_run"] * 7, "ok", "ok"], [r.reason for r in results]

    # What each would do, at the top of its details.
    assert restart_php.details["argv"] == [PHP_FPM, "-y", str(fpm.conf)]
    assert restart_php.details["would"] == [
        {"kind": "signal_group", "pgid": master, "signal": "SIGTERM"},
        {"kind": "signal_group", "pgid": master, "signal": "SIGCONT"},
        {"kind": "command", "argv": [PHP_FPM, "-y", str(fpm.conf)], "timeout_s": 30.0},
    ]
    assert (reload_php.details["signal"], reload_php.details["pid"]) == ("SIGUSR2", master)
    assert reload_php.details["config_test"]["argv"] == [PHP_FPM, "-t", "-y", str(fpm.conf)]
    assert restart_web.details["argv"] == list(_nginx_service(nginx_fpm).start or ())
    assert reload_web.details["argv"] == ["nginx", "-c", str(nginx_fpm.conf), "-s", "reload"]
    assert reload_web.details["would"] == [
        {"kind": "command", "argv": reload_web.details["argv"], "timeout_s": 30.0}
    ]
    assert scale.details["file"] == str(fpm.pool_file.resolve())
    assert scale.details["set"] == {"pm.max_children": 4}
    assert [w["kind"] for w in scale.details["would"]] == ["copy", "write", "signal"]
    assert command.details["argv"] == ["/usr/bin/touch", str(canary)]
    assert notify.details["notifier"] == "ops"
    assert notify.details["payload"]["summary"] == ctx.summary
    assert test.details["argv"] == [PHP_FPM, "-t", "-y", str(fpm.conf)]
    assert all(t["ok"] for t in diag.details["config_tests"])
    assert not any(r.restarted for r in results)

    # None of it done.
    assert after == before
    assert not canary.exists()
    assert receiver.received == []
    assert audit.changes() == []
    fpm_test = [PHP_FPM, "-t", "-y", str(fpm.conf)]
    nginx_test = ["nginx", "-t", "-c", str(nginx_fpm.conf)]
    assert {tuple(argv) for argv in audit.programs()} == {tuple(fpm_test), tuple(nginx_test)}
    assert fpm.master_pid() == master and nginx_fpm.master_pid() == web_master


def test_a_dry_run_reload_whose_config_test_fails_is_refused(
    nginx_fpm: Nginx, audit: SideEffects
) -> None:
    nginx_fpm.break_config()
    ctx = _ctx(DryRunSystem(), {"web": _nginx_service(nginx_fpm)})
    with audit:
        r = all_actions()["reload"](ServiceArgs(service="web"), ctx)
    assert r.outcome is Outcome.REFUSED
    assert r.reason.startswith("config test failed, reload not attempted")
    assert r.details["would"] == []
    assert audit.programs() == [["nginx", "-t", "-c", str(nginx_fpm.conf)]]


def test_a_dry_run_scale_whose_reload_would_be_refused_is_refused(
    fpm: PhpFpm, audit: SideEffects
) -> None:
    """The edit is not written, so the reload's config test sees the file as it is: broken
    there, the real edit's test would fail too."""
    fpm.set_pool_option("request_terminate_timeout", "soon")
    original = fpm.pool_file.read_bytes()
    ctx = _ctx(DryRunSystem(), {"php": _fpm_service(fpm)})
    with audit:
        r = all_actions()["scale_workers"](
            ScaleArgs(service="php", by=1, max_children=8, memory_reserve=0), ctx
        )
    assert r.outcome is Outcome.REFUSED, r.reason
    assert "the reload would be refused" in r.reason
    assert r.details["set"] == {"pm.max_children": 3}
    assert fpm.pool_file.read_bytes() == original
    assert audit.changes() == []


# --- the systemd backend where systemctl cannot reach PID 1 -----------------------------------


def _unit_service(fpm: PhpFpm, **options: Any) -> Service:
    """php8.2-fpm.service, tested with the bed's config (the test runs for real)."""
    return Service(
        kind="php-fpm", unit=UNIT, config_file=fpm.conf, pool_file=fpm.pool_file, **options
    )


def _unit_action(
    fpm: PhpFpm, name: str, args: Any, *, dry_run: bool = True, **options: Any
) -> ActionResult:
    system = DryRunSystem() if dry_run else System()
    return all_actions()[name](args, _ctx(system, {"php": _unit_service(fpm, **options)}))


def _changes(r: ActionResult) -> list[list[str]]:
    return [s["argv"] for s in r.details["steps"] if s["kind"] == "change"]


@NO_SYSTEMD
def test_dry_run_restart_of_a_unit_whose_state_cannot_be_read_would_run(
    fpm: PhpFpm, audit: SideEffects
) -> None:
    with audit:
        r = _unit_action(fpm, "restart", ServiceArgs(service="php"))
    assert r.outcome is Outcome.WOULD_RUN and not r.restarted
    assert r.details["argv"] == ["systemctl", "restart", UNIT]
    assert r.details["would"] == [
        {"kind": "command", "argv": ["systemctl", "restart", UNIT], "timeout_s": 120.0}
    ]
    assert r.details["state_error"].startswith("systemctl show failed: ")
    assert "\n" not in r.details["state_error"]
    assert r.reason.startswith(f"would restart {UNIT} (its state is unknown: systemctl show")
    assert audit.changes() == []
    assert {argv[1] for argv in audit.programs()} == {"show"}  # systemctl show, nothing else


@NO_SYSTEMD
def test_a_real_restart_of_a_unit_whose_state_cannot_be_read_fails_without_acting(
    fpm: PhpFpm,
) -> None:
    r = _unit_action(fpm, "restart", ServiceArgs(service="php"), dry_run=False)
    assert r.outcome is Outcome.FAILED
    assert r.reason.startswith(f"cannot tell the state of {UNIT}: systemctl show failed")
    assert _changes(r) == []


@NO_SYSTEMD
def test_dry_run_reload_of_a_unit_whose_state_cannot_be_read_tests_and_would_run(
    fpm: PhpFpm,
) -> None:
    r = _unit_action(fpm, "reload", ServiceArgs(service="php"))
    assert r.outcome is Outcome.WOULD_RUN, r.reason
    assert r.details["argv"] == ["systemctl", "reload", UNIT]
    assert r.details["config_test"]["argv"] == [PHP_FPM, "-t", "-y", str(fpm.conf)]
    assert r.details["config_test"]["rc"] == 0
    assert "state_error" in r.details
    # `log` shows both: the config test it ran, the reload it did not
    assert commands(r.details, dry_run=True) == [
        f"$ systemctl reload {UNIT}  (not run: dry run)",
        f"$ {PHP_FPM} -t -y {fpm.conf}  (exit 0)",
    ]


@NO_SYSTEMD
def test_dry_run_reload_of_a_unit_names_the_services_own_reload_command(fpm: PhpFpm) -> None:
    own = ("/usr/local/sbin/fpm-graceful", "--pool", "www")
    r = _unit_action(fpm, "reload", ServiceArgs(service="php"), reload=own)
    assert r.outcome is Outcome.WOULD_RUN, r.reason
    assert r.details["argv"] == list(own)
    assert _changes(r) == [list(own)]


@NO_SYSTEMD
def test_dry_run_reload_of_a_unit_with_a_failing_config_test_is_refused(fpm: PhpFpm) -> None:
    fpm.set_pool_option("pm", "sometimes")
    r = _unit_action(fpm, "reload", ServiceArgs(service="php"))
    assert r.outcome is Outcome.REFUSED
    assert "unable to parse value for entry 'pm'" in r.reason
    assert r.details["would"] == []


@NO_SYSTEMD
def test_dry_run_scale_of_a_unit_that_cannot_be_measured_says_what_it_would_set(
    fpm: PhpFpm, audit: SideEffects
) -> None:
    original = fpm.pool_file.read_bytes()
    with audit:
        by = _unit_action(fpm, "scale_workers", ScaleArgs(service="php", by=2, memory_reserve=0))
        fit = _unit_action(fpm, "scale_workers", ScaleArgs(service="php", memory_reserve=0))
    assert by.outcome is Outcome.WOULD_RUN, by.reason
    assert by.details["set"] == {"pm.max_children": 4}
    assert by.details["state_error"].startswith("systemctl show failed")
    assert "memory cap not checked: the pool could not be measured" in by.details["notes"]
    assert [w["kind"] for w in by.details["would"]] == ["copy", "write", "command"]
    assert by.details["would"][-1]["argv"] == ["systemctl", "reload", UNIT]
    assert fit.outcome is Outcome.WOULD_RUN, fit.reason
    assert fit.details["set"] == {"pm.max_children": None}
    assert fit.details["at_most"] == 64
    assert "to what memory allows (at most 64)" in fit.reason
    assert fpm.pool_file.read_bytes() == original
    assert audit.changes() == []
