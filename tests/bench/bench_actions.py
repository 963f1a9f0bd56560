"""The restart action by pid file against a real PHP-FPM behind nginx: how long it takes, and
how soon nginx answers 200 again, beside a bare start of PHP-FPM measured in the same run.

Run: ``python -m tests.bench.bench_actions`` (about 20 s). Three faults, interleaved, ROUNDS each:

- ``killed``: SIGKILL to the master's process group (the socket file stays): the action removes
  the stale pid file and starts PHP-FPM;
- ``orphans``: SIGKILL to the master only: its workers keep the socket; the action must clear
  them before a start can bind;
- ``hung``: SIGSTOP to every worker: TERM alone would wait until they are continued (the action
  sends SIGCONT after TERM, so PHP-FPM's 1 s SIGKILL fallback is not needed).

Baseline: after the same SIGKILL as ``killed``, ``php-fpm8.2 -y CONF`` run by hand (it returns
once the pool is ready): the least any restart can take. These were once asserted by the test
suite (tests/test_service_pidfile.py), which asserts no timings now; the targets are here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from remediator.actions.base import ActionContext, Outcome
from remediator.actions.control import restart
from remediator.actions.declare import ServiceArgs
from remediator.config import Service
from remediator.system import System
from tests.stack import PHP_FPM, Nginx, PhpFpm, Stack, http_get

ROUNDS = 9
# fault -> (target for "action start -> first 200", ms); from the suite's former asserts
TARGETS = {"killed": 150.0, "orphans": 1000.0, "hung": 500.0}


def _serves(url: str) -> bool:
    try:
        return http_get(url, timeout=1.0)[0] == 200
    except OSError:
        return False


def _until_200(url: str, start: float, limit: float = 10.0) -> float:
    """ms from ``start`` to the first 200 through nginx."""
    while not _serves(url):
        if time.monotonic() - start > limit:
            raise RuntimeError(f"no 200 within {limit}s")
        time.sleep(0.001)
    return (time.monotonic() - start) * 1000


class _Bench:
    def __init__(self, fpm: PhpFpm, nginx: Nginx) -> None:
        self.fpm, self.url = fpm, nginx.url()
        service = Service(
            kind="php-fpm",
            pid_file=fpm.pid_file,
            start=(PHP_FPM, "-y", str(fpm.conf)),
            config_file=fpm.conf,
        )
        self.ctx = ActionContext(
            system=System(),
            services={"php": service},
            notifiers={},
            playbook="bench",
            incident="bench",
        )
        self.action_ms: dict[str, list[float]] = {k: [] for k in TARGETS}
        self.to_200_ms: dict[str, list[float]] = {k: [] for k in (*TARGETS, "baseline")}

    def fault(self, name: str) -> None:
        inject: dict[str, Callable[[], object]] = {
            "killed": self.fpm.kill_all,
            "orphans": self.fpm.kill_master_only,
            "hung": self.fpm.stop_workers,
        }
        inject[name]()
        start = time.monotonic()
        result = restart(ServiceArgs(service="php"), self.ctx)
        if result.outcome is not Outcome.OK:
            raise RuntimeError(f"{name}: restart {result.outcome}: {result.reason}")
        self.to_200_ms[name].append(_until_200(self.url, start))
        self.action_ms[name].append(float(result.details["duration_ms"]))

    def baseline(self) -> None:
        self.fpm.kill_all()
        self.fpm.pid_file.unlink(missing_ok=True)
        start = time.monotonic()
        self.fpm.start()
        self.to_200_ms["baseline"].append(_until_200(self.url, start))


def main() -> None:
    with Stack() as stack:
        fpm = stack.fpm()
        nginx = stack.nginx(fpm)
        bench = _Bench(fpm, nginx)
        for _ in range(ROUNDS):
            bench.baseline()
            for name in TARGETS:
                bench.fault(name)
    base = statistics.median(bench.to_200_ms["baseline"])
    print(
        "| fault | restart action (median, max) | action start -> first 200 | vs bare start | target | |"
    )
    print("|---|---:|---:|---:|---:|---|")
    print(f"| bare `php-fpm8.2 -y` after a kill (baseline) | | {base:.1f} ms | 100 % | | |")
    for name, target in TARGETS.items():
        action = bench.action_ms[name]
        to_200 = statistics.median(bench.to_200_ms[name])
        verdict = "met" if to_200 <= target else "**missed**"
        print(
            f"| {name} | {statistics.median(action):.1f} ms ({max(action):.1f}) | "
            f"{to_200:.1f} ms | {to_200 / base:.0%} | <= {target:.0f} ms | {verdict} |"
        )
    print(f"\nmedians of {ROUNDS} rounds, interleaved (baseline, killed, orphans, hung)")


if __name__ == "__main__":
    main()
