"""diagnose: real resolver, real sockets, a real PHP-FPM's socket and config test."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.actions.declare import DiagnoseArgs
from remediator.actions.diagnose import actions, diagnose
from remediator.config import Service
from remediator.system import DryRunSystem, System
from tests.stack import PHP_FPM, PhpFpm, free_port


def fpm_config_test(service: str, ctx: ActionContext) -> ActionResult:
    """``php-fpm8.2 -t -y CONF`` through the seam, as the service actions will do it."""
    svc = ctx.services[service]
    r = ctx.system.observe([PHP_FPM, "-t", "-y", str(svc.config_file)], 10)
    outcome = Outcome.OK if r.ok else Outcome.REFUSED
    return ActionResult(outcome, f"rc {r.returncode}", service, {"output": r.output})


def ctx_with(
    services: dict[str, Service] | None = None, system: System | None = None
) -> ActionContext:
    return ActionContext(
        system=system or System(),
        services=services or {},
        notifiers={},
        playbook="php",
        incident="inc-1",
    )


def run(args: DiagnoseArgs, ctx: ActionContext | None = None) -> ActionResult:
    return diagnose(args, ctx or ctx_with(), config_test=fpm_config_test, connect_timeout=0.3)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s


def test_localhost_resolves_to_loopback() -> None:
    r = run(DiagnoseArgs(resolve=("localhost",), snapshot=False))
    assert r.outcome is Outcome.OK
    [found] = r.details["resolve"]
    assert found["ok"] and set(found["addresses"]) & {"127.0.0.1", "::1"}


def test_an_invalid_name_fails_with_the_resolvers_error() -> None:
    with pytest.raises(socket.gaierror) as expected:
        socket.getaddrinfo("nothing.invalid", None, type=socket.SOCK_STREAM)
    r = run(DiagnoseArgs(resolve=("nothing.invalid",), snapshot=False))
    assert r.outcome is Outcome.OK
    [found] = r.details["resolve"]
    assert (found["ok"], found["error"]) == (False, str(expected.value))


def test_a_listening_loopback_port_connects(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    r = run(DiagnoseArgs(connect=(f"127.0.0.1:{port}",), snapshot=False))
    [c] = r.details["connect"]
    assert c["ok"] and c["peer"] == "127.0.0.1"


def test_a_closed_port_is_refused() -> None:
    r = run(DiagnoseArgs(connect=(f"127.0.0.1:{free_port()}",), snapshot=False))
    [c] = r.details["connect"]
    assert (c["ok"], c["error"]) == (False, "ConnectionRefusedError: Connection refused")


def test_a_connect_that_hangs_gives_up_at_its_timeout(listener: socket.socket) -> None:
    listener.listen(0)
    port = listener.getsockname()[1]
    with contextlib.ExitStack() as stack:
        for _ in range(4):  # fill the accept queue: further SYNs are dropped, connect hangs
            c = stack.enter_context(socket.socket())
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", port))
        r = run(DiagnoseArgs(connect=(f"127.0.0.1:{port}",), snapshot=False))
    [c] = r.details["connect"]
    assert (c["ok"], c["error"]) == (False, "timed out after 0.3s")


def test_a_real_php_fpm_socket_connects(fpm: PhpFpm) -> None:
    r = run(DiagnoseArgs(connect=(f"unix:{fpm.socket}",), snapshot=False))
    assert r.details["connect"][0]["ok"]


def test_a_missing_unix_socket_is_reported(tmp_path: Path) -> None:
    r = run(DiagnoseArgs(connect=(f"unix:{tmp_path}/none.sock",), snapshot=False))
    [c] = r.details["connect"]
    assert (c["ok"], c["error"]) == (False, "FileNotFoundError: No such file or directory")


def fpm_service(fpm: PhpFpm) -> Service:
    return Service(kind="php-fpm", pid_file=fpm.pid_file, start=("x",), config_file=fpm.conf)


def test_the_config_test_of_a_real_php_fpm_is_included(fpm: PhpFpm) -> None:
    r = run(
        DiagnoseArgs(config_test=("php-fpm",), snapshot=False),
        ctx_with({"php-fpm": fpm_service(fpm)}),
    )
    [t] = r.details["config_tests"]
    assert t["ok"] and "test is successful" in t["output"]


def test_a_failing_config_test_is_evidence_not_an_error(fpm: PhpFpm) -> None:
    fpm.set_pool_option("pm", "bogus")
    r = run(
        DiagnoseArgs(config_test=("php-fpm",), snapshot=False),
        ctx_with({"php-fpm": fpm_service(fpm)}),
    )
    assert r.outcome is Outcome.OK
    [t] = r.details["config_tests"]
    assert not t["ok"] and "unable to parse value for entry 'pm'" in t["output"]
    assert r.reason == "config tests passed 0/1"


def test_dry_run_still_gathers_evidence_and_records_no_change(fpm: PhpFpm) -> None:
    dry = DryRunSystem()
    args = DiagnoseArgs(config_test=("php-fpm",), connect=(f"unix:{fpm.socket}",))
    r = run(args, ctx_with({"php-fpm": fpm_service(fpm)}, dry))
    assert r.details["config_tests"][0]["ok"] and r.details["connect"][0]["ok"]
    assert r.details["snapshot"]["memory_available"] > 0
    assert dry.would == []


def test_a_crashing_config_test_is_recorded_and_nothing_raises() -> None:
    def broken(service: str, ctx: ActionContext) -> ActionResult:
        raise RuntimeError("bug")

    svc = Service(kind="nginx", unit="nginx.service")
    fn = actions(config_test=broken)["diagnose"]
    r = fn(DiagnoseArgs(config_test=("nginx",), snapshot=False), ctx_with({"nginx": svc}))
    assert r.outcome is Outcome.OK
    assert r.details["config_tests"][0]["error"] == "probe crashed: RuntimeError: bug"
