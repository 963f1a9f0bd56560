"""Gradual saturation, for the prevention test and its benchmark: a load of requests at a rate
rising linearly (each on its own thread, so a slow answer never holds back the next send), and
the shipped saturation playbook on the bed's nginx and PHP-FPM under the shipped names
(nginx_access, nginx_error, fpm_log, fpm_pool, site, php-fpm, oncall)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import config, fpm_service, nginx_sources, probe
from tests.stack import Nginx, PhpFpm, http_get

PLAYBOOK = Path(__file__).resolve().parent.parent / "config/playbooks.d/20-php-fpm-saturated.yaml"
RAMP = (1.0, 10.0, 8.0)  # requests a second, from, to, over seconds


def ramp_times(start: float, end: float, over: float) -> list[float]:
    """Send offsets for a request rate rising linearly from ``start`` to ``end`` a second."""
    times: list[float] = []
    t, step = 0.0, 0.001
    due = 0.0
    while t < over:
        due += (start + (end - start) * t / over) * step
        if due >= 1.0:
            times.append(t)
            due -= 1.0
        t += step
    return times


def run_ramp(url: str, ramp: tuple[float, float, float] = RAMP) -> Counter[int]:
    """Send the ramp of slow requests, each on its own thread; their statuses (0: no answer)."""
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            status, _ = http_get(url, timeout=60)
        except OSError:
            status = 0
        with lock:
            statuses.append(status)

    threads = []
    t0 = time.monotonic()
    for offset in ramp_times(*ramp):
        delay = t0 + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not synchronising on the system under test
        th = threading.Thread(target=one, daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join(timeout=90)
    assert len(statuses) == len(threads), "a request of the ramp never returned"
    return Counter(statuses)


def shipped_playbook(*, log_only: bool = False, **scale: Any) -> dict[str, Any]:
    """The shipped saturation playbook, read from its file; ``scale`` overrides the step's
    arguments (a test host's cap on workers). ``log_only``: its trigger without
    ``fpm_saturated``, i.e. acting on 502s and the log lines that name saturation (the
    reactive configuration, as shipped before prevention)."""
    pb = yaml.safe_load(PLAYBOOK.read_text())
    [step] = pb["steps"]
    step["scale_workers"] |= scale
    if log_only:
        [logs] = [c for c in pb["when"]["any"] if "all" in c]
        pb["when"] = logs
    return dict(pb)


def shipped_config(
    workdir: Path,
    nginx: Nginx,
    *,
    playbooks: list[dict[str, Any]] | None = None,
    hook: str = "http://127.0.0.1:9/",
    **scale: Any,
) -> dict[str, Any]:
    """The shipped names (nginx_access, fpm_pool, php-fpm, site, oncall) on the bed's servers."""
    fpm = nginx.fpm
    assert isinstance(fpm, PhpFpm)
    logs = nginx_sources(nginx)
    return config(
        workdir,
        sources={
            "nginx_access": logs["access"],
            "nginx_error": logs["errors"],
            "fpm_log": {"type": "error_log", "path": str(fpm.error_log), "format": "php-fpm"},
            "site": probe(nginx.url(), interval="2s", timeout="1s"),
            "fpm_pool": {
                "type": "fpm_status",
                "socket": str(fpm.socket),
                "path": "/fpm-status",
                "interval": "100ms",
                "service": "php-fpm",
            },
        },
        services={"php-fpm": fpm_service(fpm)},
        notifiers={"oncall": {"url": hook}},
        playbooks=[shipped_playbook(**scale)] if playbooks is None else playbooks,
    )
