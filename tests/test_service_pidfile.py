"""reload / restart / config_test without systemd, against real PHP-FPM, nginx and Apache.

How fast these actions are is measured by ``make bench`` (tests/bench/bench_actions.py), not
asserted here. Some durations are still printed (``pytest -s`` or ``-rP`` shows them).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.actions.control import CONTROL_ACTIONS, config_test, reload, restart
from remediator.actions.declare import ServiceArgs
from remediator.config import Service
from remediator.services.base import config_test_argv
from remediator.system import DryRunSystem, System
from tests.stack import PHP_FPM, Apache, Nginx, PhpFpm, Stack, http_get, is_alive, wait_for

servers = pytest.mark.servers


def _fpm_service(fpm: PhpFpm) -> Service:
    return Service(
        kind="php-fpm",
        pid_file=fpm.pid_file,
        start=(PHP_FPM, "-y", str(fpm.conf)),
        config_file=fpm.conf,
    )


def _nginx_service(nginx: Nginx) -> Service:
    return Service(
        kind="nginx",
        pid_file=nginx.pid_file,
        start=("nginx", "-c", str(nginx.conf), "-e", str(nginx.error_log)),
        config_file=nginx.conf,
    )


def _apache_service(apache: Apache) -> Service:
    return Service(
        kind="apache",
        pid_file=apache.pid_file,
        start=("apache2", "-f", str(apache.conf), "-k", "start"),
        config_file=apache.conf,
    )


def _ctx(dry_run: bool = False, **services: Service) -> ActionContext:
    return ActionContext(
        system=DryRunSystem() if dry_run else System(),
        services=services,
        notifiers={},
        playbook="test",
        incident="test",
    )


def _args(name: str) -> ServiceArgs:
    return ServiceArgs(service=name)


def _serves(url: str) -> bool:
    try:
        return http_get(url, timeout=1.0)[0] == 200
    except OSError:
        return False


def _kinds(result: ActionResult) -> list[str]:
    return [step["kind"] for step in result.details["steps"]]


# --- without servers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "argv"),
    [
        (Service(kind="php-fpm", unit="php8.2-fpm.service"), ["php-fpm8.2", "-t"]),
        (Service(kind="php-fpm", unit="php8.1-fpm.service"), ["php-fpm8.1", "-t"]),
        (
            Service(kind="php-fpm", pid_file=Path("/p"), start=("php-fpm8.2", "-y", "/c")),
            ["php-fpm8.2", "-t"],
        ),
        (
            Service(kind="php-fpm", unit="x.service", config_file=Path("/c.conf")),
            ["php-fpm8.2", "-t", "-y", "/c.conf"],
        ),
        (Service(kind="nginx", unit="nginx.service"), ["nginx", "-t"]),
        (
            Service(kind="nginx", unit="nginx.service", config_file=Path("/n.conf")),
            ["nginx", "-t", "-c", "/n.conf"],
        ),
        (Service(kind="apache", unit="apache2.service"), ["apachectl", "configtest"]),
        (
            Service(kind="apache", unit="apache2.service", config_file=Path("/a b.conf")),
            ["apachectl", "-f", "/a b.conf", "-t"],
        ),
        (
            Service(kind="nginx", unit="nginx.service", config_test=("/usr/local/bin/t", "-q")),
            ["/usr/local/bin/t", "-q"],
        ),
    ],
)
def test_config_test_argv_defaults_by_kind(service: Service, argv: list[str]) -> None:
    assert config_test_argv(service) == argv


def test_registry_names_the_three_actions() -> None:
    assert {"reload": reload, "restart": restart, "config_test": config_test} == CONTROL_ACTIONS


def test_unknown_service_fails_without_acting() -> None:
    result = restart(_args("nope"), _ctx())
    assert result.outcome is Outcome.FAILED and "nope" in result.reason


# --- restart ----------------------------------------------------------------------------------


@servers
def test_restart_after_kill_all_serves_again(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    fpm.kill_all()
    assert not _serves(nginx_fpm.url())
    result = restart(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.OK, result.reason
    assert result.restarted and result.target == "php"
    assert result.details["pid_after"] == fpm.master_pid() and fpm.is_running()
    assert http_get(nginx_fpm.url()) == (200, "ok\n")


@servers
def test_restart_after_master_killed_clears_orphans(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    old_master = fpm.master_pid()
    orphans = fpm.kill_master_only()
    assert orphans and _serves(nginx_fpm.url())  # the orphans still serve, and hold the socket
    result = restart(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.OK, result.reason
    wait_for(lambda: _serves(nginx_fpm.url()), 5.0, "200 after restart", interval=0.001)
    assert result.details["orphans"] == sorted(orphans)
    assert not any(is_alive(pid) for pid in orphans)
    master = fpm.master()
    assert master is not None and master.pid not in (old_master, *orphans)
    assert os.getpgid(master.pid) == master.pid
    assert int(http_get(nginx_fpm.url("/pid.php"))[1]) in fpm.worker_pids()


@servers
def test_restart_finds_orphans_by_their_socket_when_the_pid_file_is_gone(
    fpm: PhpFpm, nginx_fpm: Nginx
) -> None:
    orphans = fpm.kill_master_only()
    fpm.pid_file.unlink()
    result = restart(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.OK, result.reason
    assert set(result.details["socket_holders"]) <= set(orphans)
    assert result.details["stopped"] == sorted(orphans)
    first_start = next(s for s in result.details["steps"] if s["argv"][0] == PHP_FPM)
    assert first_start["rc"] == 70 and "Another FPM instance" in first_start["output"]
    assert not any(is_alive(pid) for pid in orphans)
    assert http_get(nginx_fpm.url()) == (200, "ok\n")


@servers
def test_restart_leaves_another_php_fpm_instance_alone(fpm: PhpFpm, stack: Stack) -> None:
    other = stack.fpm()
    others = [other.master_pid(), *other.worker_pids()]
    fpm.kill_master_only()
    result = restart(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.OK, result.reason
    assert all(is_alive(pid) for pid in others)
    assert [other.master_pid(), *other.worker_pids()] == others


@servers
def test_restart_of_a_running_php_fpm_replaces_master_and_workers(fpm: PhpFpm) -> None:
    before = [fpm.master_pid(), *fpm.worker_pids()]
    result = restart(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.OK, result.reason
    assert result.details["stopped"] == sorted(p for p in before if p is not None)
    assert not any(is_alive(pid) for pid in before)
    assert fpm.is_running() and fpm.ping()


@servers
def test_restart_of_hung_php_fpm_workers_needs_no_sigkill(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    hung = fpm.stop_workers()  # SIGSTOP: TERM alone would wait until they are continued
    result = restart(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.OK, result.reason
    assert "SIGKILL" not in {s.get("signal") for s in result.details["steps"]}
    assert not any(is_alive(pid) for pid in hung)
    assert http_get(nginx_fpm.url()) == (200, "ok\n")


@servers
def test_apache_restart_after_kill_starts_over_its_stale_pid_file(apache_fpm: Apache) -> None:
    apache_fpm.kill()
    assert apache_fpm.pid_file.exists()  # names a dead master: apache2 -k start would refuse
    result = restart(_args("web"), _ctx(web=_apache_service(apache_fpm)))
    assert result.outcome is Outcome.OK, result.reason
    assert {"kind": "remove", "path": str(apache_fpm.pid_file)} in result.details["steps"]
    wait_for(lambda: _serves(apache_fpm.url()), 5.0, "apache to serve")


@servers
def test_nginx_restart_after_kill_serves_again(nginx_fpm: Nginx) -> None:
    nginx_fpm.kill()
    result = restart(_args("web"), _ctx(web=_nginx_service(nginx_fpm)))
    assert result.outcome is Outcome.OK, result.reason
    assert http_get(nginx_fpm.url()) == (200, "ok\n")


# --- reload -----------------------------------------------------------------------------------


@servers
def test_php_fpm_reload_changes_master_pid_and_keeps_serving(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    old = fpm.master_pid()
    result = reload(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.OK, result.reason
    print(
        f"\nphp-fpm reload (config test + SIGUSR2 + new master): {result.details['duration_ms']} ms"
    )
    assert {"kind": "signal", "pid": old, "signal": "SIGUSR2"} in result.details["steps"]
    assert result.details["pid_before"] == old
    assert result.details["pid_after"] == fpm.master_pid() != old
    assert not is_alive(old)
    assert http_get(nginx_fpm.url()) == (200, "ok\n")


@servers
def test_php_fpm_reload_is_refused_on_a_bad_pool_option(fpm: PhpFpm, nginx_fpm: Nginx) -> None:
    old = fpm.master_pid()
    fpm.set_pool_option("pm", "sometimes")
    result = reload(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.REFUSED
    assert "unable to parse value for entry 'pm'" in result.reason
    assert result.details["config_test"]["rc"] == 78
    assert "unable to parse value" in result.details["config_test"]["output"]
    assert _kinds(result) == ["observe"]  # the test only: no signal sent
    assert fpm.master_pid() == old and is_alive(old)
    assert http_get(nginx_fpm.url()) == (200, "ok\n")


@servers
def test_nginx_reload_is_refused_on_a_broken_config(nginx_fpm: Nginx) -> None:
    old = nginx_fpm.master_pid()
    wait_for(lambda: bool(nginx_fpm.worker_pids()), 2.0, "nginx workers")
    workers = nginx_fpm.worker_pids()
    nginx_fpm.break_config()
    result = reload(_args("web"), _ctx(web=_nginx_service(nginx_fpm)))
    assert result.outcome is Outcome.REFUSED
    assert "remediator_bogus_directive" in result.details["config_test"]["output"]
    assert _kinds(result) == ["observe"]
    assert nginx_fpm.master_pid() == old and nginx_fpm.worker_pids() == workers
    assert http_get(nginx_fpm.url()) == (200, "ok\n")


@servers
def test_nginx_reload_keeps_the_master_and_starts_new_workers(nginx_fpm: Nginx) -> None:
    old = nginx_fpm.master_pid()
    wait_for(lambda: bool(nginx_fpm.worker_pids()), 2.0, "nginx workers")
    workers = set(nginx_fpm.worker_pids())
    result = reload(_args("web"), _ctx(web=_nginx_service(nginx_fpm)))
    assert result.outcome is Outcome.OK, result.reason
    print(f"\nnginx reload (nginx -t + nginx -s reload): {result.details['duration_ms']} ms")
    changes = [s["argv"] for s in result.details["steps"] if s["kind"] == "change"]
    assert changes == [["nginx", "-c", str(nginx_fpm.conf), "-s", "reload"]]
    assert result.details["pid_after"] == old
    assert set(result.details["workers_after"]) - workers
    assert http_get(nginx_fpm.url()) == (200, "ok\n")


@servers
def test_apache_graceful_keeps_the_master_and_serves(apache_fpm: Apache) -> None:
    old = apache_fpm.master_pid()
    result = reload(_args("web"), _ctx(web=_apache_service(apache_fpm)))
    assert result.outcome is Outcome.OK, result.reason
    print(
        f"\napache graceful (configtest + graceful + new children): {result.details['duration_ms']} ms"
    )
    changes = [s["argv"] for s in result.details["steps"] if s["kind"] == "change"]
    assert changes == [["apachectl", "-f", str(apache_fpm.conf), "-k", "graceful"]]
    assert apache_fpm.master_pid() == old
    assert http_get(apache_fpm.url()) == (200, "ok\n")


@servers
def test_reload_of_a_dead_service_fails_without_acting(fpm: PhpFpm) -> None:
    fpm.kill_all()
    result = reload(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.FAILED and "not running" in result.reason
    assert result.details["steps"] == []


# --- config_test ------------------------------------------------------------------------------


@servers
def test_config_test_action_passes_on_a_good_config(fpm: PhpFpm) -> None:
    result = config_test(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.OK
    assert result.details["config_test"]["argv"] == [PHP_FPM, "-t", "-y", str(fpm.conf)]
    assert "test is successful" in result.details["config_test"]["output"]


@servers
def test_config_test_action_fails_with_the_servers_words(fpm: PhpFpm) -> None:
    fpm.set_pool_option("pm.max_children", "many")
    result = config_test(_args("php"), _ctx(php=_fpm_service(fpm)))
    assert result.outcome is Outcome.FAILED
    assert "pm.max_children" in result.reason


# --- dry run ----------------------------------------------------------------------------------


@servers
def test_dry_run_restart_changes_nothing_and_names_every_step(fpm: PhpFpm) -> None:
    pids = [fpm.master_pid(), *fpm.worker_pids()]
    stamp = fpm.pid_file.stat().st_mtime_ns
    master = fpm.master_pid()
    result = restart(_args("php"), _ctx(dry_run=True, php=_fpm_service(fpm)))
    assert result.outcome is Outcome.WOULD_RUN and not result.restarted
    assert result.details["argv"] == [PHP_FPM, "-y", str(fpm.conf)]
    assert result.details["would"] == [
        {"kind": "signal_group", "pgid": master, "signal": "SIGTERM"},
        {"kind": "signal_group", "pgid": master, "signal": "SIGCONT"},
        {"kind": "command", "argv": [PHP_FPM, "-y", str(fpm.conf)], "timeout_s": 30.0},
    ]
    time.sleep(0.05)  # a signal, had one been sent, would have acted by now
    assert [fpm.master_pid(), *fpm.worker_pids()] == pids
    assert fpm.pid_file.stat().st_mtime_ns == stamp


@servers
def test_dry_run_reload_records_the_signal_it_did_not_send(fpm: PhpFpm) -> None:
    master = fpm.master_pid()
    result = reload(_args("php"), _ctx(dry_run=True, php=_fpm_service(fpm)))
    assert result.outcome is Outcome.WOULD_RUN
    assert result.details["would"] == [{"kind": "signal", "pid": master, "signal": "SIGUSR2"}]
    assert (result.details["signal"], result.details["pid"]) == ("SIGUSR2", master)
    assert result.reason == f"would reload php: SIGUSR2 to master {master}"
    assert result.details["config_test"]["rc"] == 0  # the test itself ran: it changes nothing
    time.sleep(0.05)  # as above: a claim of absence
    assert fpm.master_pid() == master and is_alive(master)


@servers
def test_dry_run_restart_after_kill_would_remove_the_stale_pid_file_and_start(
    fpm: PhpFpm,
) -> None:
    fpm.kill_all()
    result = restart(_args("php"), _ctx(dry_run=True, php=_fpm_service(fpm)))
    assert result.outcome is Outcome.WOULD_RUN
    assert result.details["would"] == [
        {"kind": "remove", "path": str(fpm.pid_file)},
        {"kind": "command", "argv": [PHP_FPM, "-y", str(fpm.conf)], "timeout_s": 30.0},
    ]
    assert fpm.pid_file.exists() and not fpm.is_running()
