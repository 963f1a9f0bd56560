"""Flapping end to end: the real daemon, nginx and PHP-FPM; a pool that slow requests fill
again right after each restart. The restart "works" each time (verified, resolved) and the
trigger comes back: after three returns the daemon stops restarting and scales the real pool
file instead, and the records say so."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import DaemonProcess, config, fpm_service, nginx_service, nginx_sources, probe
from tests.stack import Nginx, PhpFpm, Stack, http_get

pytestmark = pytest.mark.servers

HOGS = 3  # more slow requests than the pool's 2 workers: the probe queues behind them


@pytest.fixture
def start_daemon(
    request: pytest.FixtureRequest, tmp_path: Path, stack: Stack
) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """The daemon, SIGKILLed by its process group before the servers are cleaned up (hence
    ``stack``); its logs are printed when the test failed."""
    started: list[DaemonProcess] = []
    failures_before = request.session.testsfailed

    def start(cfg: dict[str, Any]) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path / "daemon", cfg)
        started.append(daemon)
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in started:
            daemon.kill()
            if request.session.testsfailed > failures_before:
                print(daemon.report())


def _hog(url: str) -> threading.Thread:
    """One slow request, on its own thread: it holds a worker until the pool is restarted."""

    def run() -> None:
        with contextlib.suppress(OSError):  # the restart cut it, as a user's request would be
            http_get(url, timeout=30)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


PLAYBOOK = {
    "name": "fpm-stuck",
    "when": {"probe_failing": {"probe": "site", "consecutive": 2}},
    "steps": [
        {"restart": "fpm", "verify": {"probe": "site", "within": "5s", "settle": "500ms"}},
        {
            "scale_workers": {"service": "fpm", "min_children": 2, "max_children": 8,
                              "memory_reserve": "256MiB"},
            "name": "scale_workers",
            "verify": {"probe": "site", "within": "5s", "settle": "500ms"},
        },
    ],
    "limits": {"cooldown": "0s", "max_runs": 10, "per": "1m", "backoff": False},
    "flap": {"after": 3, "returns_within": "30s", "window": "5m"},
}  # fmt: skip


@pytest.mark.parametrize("fpm", [{"max_children": 2}], indirect=True)
def test_a_pool_that_fills_again_after_each_restart_is_scaled_instead(
    nginx_fpm: Nginx, tmp_path: Path, start_daemon: Callable[[dict[str, Any]], DaemonProcess]
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    cfg = config(
        tmp_path,
        sources={**nginx_sources(nginx_fpm), "site": probe(nginx_fpm.url(), interval="200ms")},
        services={
            "fpm": fpm_service(fpm, max_actions=10),
            "nginx": nginx_service(nginx_fpm),
        },
        playbooks=[PLAYBOOK],
    )
    daemon = start_daemon(cfg)
    assert fpm.pool_option("pm.max_children") == "2"
    hogs: list[threading.Thread] = []
    for n in range(1, 5):  # the pool fills again as soon as each incident is over
        hogs += [_hog(nginx_fpm.url("/slow.php?s=20")) for _ in range(HOGS)]
        daemon.wait_record("incident_closed", 30, count=n)
    closed = daemon.records("incident_closed")
    assert [r["outcome"] for r in closed] == ["resolved"] * 4
    acted = [(r["action"], r["outcome"]) for r in daemon.records("action_result")]
    assert acted == [("restart", "ok")] * 3 + [("scale_workers", "ok")]
    fourth = daemon.records("incident_opened")[3]
    assert fourth["flapping"]["returns"] == 3
    assert fourth["flapping"]["escalated_to_step"] == 2
    assert "flapping: resolved 3 times in" in fourth["reason"]
    assert "escalating to step 2 (scale_workers)" in fourth["reason"]
    held = daemon.records("action_held", incident=fourth["incident"])
    assert [(r["action"], r["outcome"], r["guard"]) for r in held] == [
        ("restart", "skipped", "flapping")
    ]
    assert fpm.pool_option("pm.max_children") == "8"  # the real pool file
    assert http_get(nginx_fpm.url())[0] == 200  # three slow requests no longer fill it
    fpm.stop()  # ends the slow requests still held
    for hog in hogs:
        hog.join(timeout=10)
