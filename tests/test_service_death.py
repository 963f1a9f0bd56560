"""Service death as an event, on the pid-file backend, with a real PHP-FPM behind nginx.

The daemon holds a pidfd of PHP-FPM's verified master in its main loop: the moment the master
exits, its service's state is looked at. A master gone while its pid file still names it is a
crash, definitive, acted on without waiting out ``lasting`` (the playbooks here say 30 s: an
incident before then can only come from the event). A clean stop removes the pid file first and
is never an outage; a reload's old master exits too, and the new one is watched in its place.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediator.config import Service
from remediator.services.base import is_down
from remediator.services.pidfile import PidFileControl
from remediator.system import System
from tests.e2e import DaemonProcess, Record, config, eventually, fpm_service, nginx_sources, probe
from tests.stack import LoadGenerator, Nginx, PhpFpm, http_get

pytestmark = pytest.mark.servers

LASTING = "30s"  # far beyond every deadline here: only a definitive crash can open an incident


def _fpm(nginx: Nginx) -> PhpFpm:
    fpm = nginx.fpm
    assert isinstance(fpm, PhpFpm)
    return fpm


def _service(fpm: PhpFpm) -> Service:
    spec = fpm_service(fpm)
    return Service(
        kind="php-fpm",
        pid_file=Path(spec["pid_file"]),
        start=tuple(spec["start"]),
        config_file=Path(spec["config_file"]),
    )


@pytest.fixture
def daemon(nginx_fpm: Nginx, tmp_path: Path) -> Iterator[DaemonProcess]:
    """The daemon watching ``fpm`` with a master-gone playbook (``lasting: 30s``)."""
    fpm = _fpm(nginx_fpm)
    playbook = {
        "name": "fpm-master-gone",
        "when": {"service_down": {"service": "fpm", "lasting": LASTING}},
        "steps": [{"restart": "fpm", "verify": {"probe": "site", "within": "5s"}}],
        "limits": {"cooldown": "1s", "max_runs": 5, "per": "1m", "backoff": False},
    }
    cfg = config(
        tmp_path,
        sources={**nginx_sources(nginx_fpm), "site": probe(nginx_fpm.url(), interval="1s")},
        services={"fpm": fpm_service(fpm)},
        playbooks=[playbook],
    )
    proc = DaemonProcess(tmp_path / "daemon", cfg)
    try:
        proc.start()
        yield proc
    finally:
        proc.kill()


def _armed(daemon: DaemonProcess, pid: int) -> bool:
    """Whether the daemon said it holds a pidfd for master ``pid``."""
    return any(
        r.get("event") == "service_seen" and r.get("pidfd_for") == pid for r in daemon.log_events()
    )


def _seen(daemon: DaemonProcess, **match: Any) -> list[Record]:
    return [
        r
        for r in daemon.log_events()
        if r.get("event") == "service_seen" and all(r.get(k) == v for k, v in match.items())
    ]


def _proper_master(fpm: PhpFpm, old: int | None, orphans: list[int]) -> bool:
    master = fpm.master()
    return (
        master is not None
        and master.pid != old
        and bool(fpm.worker_pids())
        and not set(fpm.worker_pids()) & set(orphans)
    )


# --- the backend ------------------------------------------------------------------------------


def test_the_pidfd_of_the_verified_master_fires_when_only_the_master_is_killed(
    fpm: PhpFpm,
) -> None:
    control = PidFileControl("fpm", _service(fpm), System())
    state = control.state()
    fd = control.open_master_pidfd(state)
    assert fd is not None
    try:
        assert select.select([fd], [], [], 0)[0] == []  # a live master: nothing to read
        orphans = fpm.kill_master_only()
        assert select.select([fd], [], [], 5)[0] == [fd]
    finally:
        os.close(fd)
    after = control.state()
    assert orphans and after.crashed
    assert is_down(after, _service(fpm))[0]


def test_a_clean_stop_is_no_crash(fpm: PhpFpm) -> None:
    control = PidFileControl("fpm", _service(fpm), System())
    fpm.stop(graceful=True)  # PHP-FPM removes its pid file before it exits
    after = control.state()
    assert not after.crashed
    assert is_down(after, _service(fpm)) == (False, "no pid file")


def test_no_pidfd_for_a_process_that_is_not_the_master(fpm: PhpFpm) -> None:
    """A pid file naming another root process (not PHP-FPM): never watched, never trusted."""
    control = PidFileControl("fpm", _service(fpm), System())
    fpm.stop()
    other = subprocess.Popen(["sleep", "60"])
    try:
        fpm.pid_file.write_text(f"{other.pid}\n")
        state = control.state()
        assert state.distrust
        assert control.open_master_pidfd(state) is None
        forged = control.state().__class__(state.status, other.pid, state.summary)
        assert control.open_master_pidfd(forged) is None  # checked again once open
    finally:
        other.kill()
        other.wait()


# --- the daemon -------------------------------------------------------------------------------


def test_master_only_kill_is_a_crash_seen_by_its_pidfd_and_healed_at_once(
    nginx_fpm: Nginx, daemon: DaemonProcess
) -> None:
    fpm = _fpm(nginx_fpm)
    old = fpm.master_pid()
    assert old is not None
    eventually(lambda: _armed(daemon, old), 10, "a pidfd for the master")
    with LoadGenerator(nginx_fpm.url(), rate=100) as load:
        load.wait_ok()
        orphans = fpm.kill_master_only()
        assert orphans  # they keep serving: users see no error, no log line tells
        eventually(lambda: _proper_master(fpm, old, orphans), 10, "a proper master, no orphans")
        daemon.wait_record("incident_closed", 10)
    opened = daemon.records("incident_opened")[0]
    reading = next(r for r in opened["evidence"]["readings"] if r["condition"] == "service_down")
    assert reading["holds"] and reading["definitive"] is True
    # The pidfd tells; a slow poll that happened to be looking at that very moment may tell
    # first, and then the reading says so (it is the truth), but the pidfd has still fired.
    assert reading["seen_by"] in ("pidfd", "poll")
    assert _seen(daemon, seen_by="pidfd", down=True, definitive=True)
    assert reading["seen_at"] <= opened["ts"]
    assert reading["down_for_s"] < 30  # LASTING was not waited out
    assert f"a crash, seen by {reading['seen_by']}" in opened["reason"]
    restart = daemon.records("action_result")[0]
    assert f"(master {old} gone -> {fpm.master_pid()})" in restart["reason"], restart["reason"]
    assert daemon.records("incident_closed")[0]["outcome"] == "resolved"
    assert http_get(nginx_fpm.url())[0] == 200


def test_the_new_master_is_watched_again_after_the_restart(
    nginx_fpm: Nginx, daemon: DaemonProcess
) -> None:
    fpm = _fpm(nginx_fpm)
    first = fpm.master_pid()
    assert first is not None
    eventually(lambda: _armed(daemon, first), 10, "a pidfd for the first master")
    fpm.kill_master_only()
    daemon.wait_record("incident_closed", 10)
    second = fpm.master_pid()
    assert second is not None and second != first
    eventually(lambda: _armed(daemon, second), 10, "a pidfd for the restarted master")
    fpm.kill_master_only()
    eventually(lambda: fpm.master_pid() not in (None, second), 10, "a third master")
    daemon.wait_record("incident_closed", 10, count=2)
    assert len(daemon.records("incident_opened")) == 2
    assert len(_seen(daemon, seen_by="pidfd", down=True)) >= 2  # each master's own pidfd


def test_an_operators_clean_stop_is_seen_and_is_not_an_outage(
    nginx_fpm: Nginx, daemon: DaemonProcess
) -> None:
    fpm = _fpm(nginx_fpm)
    old = fpm.master_pid()
    assert old is not None
    eventually(lambda: _armed(daemon, old), 10, "a pidfd for the master")
    fpm.stop(graceful=True)
    eventually(
        lambda: bool(_seen(daemon, seen_by="pidfd", down=False)), 10, "the stop to be looked at"
    )
    assert _seen(daemon, seen_by="pidfd", down=False)[0]["detail"] == "no pid file"
    assert _seen(daemon, down=True) == []
    assert daemon.records("incident_opened") == []
    assert not fpm.is_running()  # left stopped, as the operator wanted


def test_an_operators_reload_is_not_an_outage_and_the_new_master_is_watched(
    nginx_fpm: Nginx, daemon: DaemonProcess
) -> None:
    fpm = _fpm(nginx_fpm)
    old = fpm.master_pid()
    assert old is not None
    eventually(lambda: _armed(daemon, old), 10, "a pidfd for the master")
    assert fpm.reload()  # SIGUSR2: the old master exits once the new one wrote the pid file
    new = fpm.master_pid()
    assert new is not None and new != old
    eventually(lambda: _armed(daemon, new), 10, "a pidfd for the reloaded master")
    assert _seen(daemon, down=True) == []
    assert daemon.records("incident_opened") == []
    os.kill(new, signal.SIGKILL)  # the new master is watched: its death is seen
    daemon.wait_record("incident_opened", 10)
