"""A unit killed with no log evidence, under a real systemd: kill -> 200s again.

Run: ``.venv/bin/python -m tests.bench.bench_unit_death [--reps N]`` (about 1 minute; root, a
cgroup2 hierarchy, Debian's nginx and php8.2-fpm). It boots systemd 252 in private namespaces
(``tests/sysd.py``), starts Debian's php8.2-fpm and nginx units and the shipped
``systemd/remediator.service`` (with the drop-in of ``tests/test_service_unit.py``, so the
sandbox, ``ProtectControlGroups=yes`` included, is in force) on a config whose one playbook is
the shipped ``15-php-fpm-master-gone.yaml`` with its limits opened up for repetition
(``service_down`` lasting 500 ms, restart, verify by the probe): no log line can set anything
off, as on a host whose logs the daemon cannot see.

Each trial waits out the start-up grace (5 s) of the last restart, waits until the daemon holds a pidfd of php8.2-fpm's current main process, runs
paced GETs of ``/index.php`` from inside the namespace (one every 20 ms, 2 s timeout), SIGKILLs
the main process after 1 s of load, and measures from the kill: the first 200 after which every
answer was a 200 (the load stops after 20 of them), the failed requests, and from the action
log how the death was seen (pidfd or cgroup.events) and when the incident opened. Without
remediation (Debian's unit has no ``Restart=``) the unit stays failed: never.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import threading
import time
from typing import Any

from tests.stack import wait_for
from tests.sysd import DEBIAN_PHP_SITE, PHP_OK, BootedSystemd, available
from tests.test_service_unit import (
    _CONFIG,
    _LOAD,
    CONFIG,
    FPM,
    NGINX,
    PLAYBOOKS,
    SHIPPED_PLAYBOOKS,
    SHIPPED_UNIT,
    SITE,
    UNIT,
    Service,
    _write_config,
    dropin,
)

WARM = 1.0
GRACE = 5.5  # the config's startup_grace (5 s) after the last restart: one crash at a time


def _playbook() -> str:
    text = (SHIPPED_PLAYBOOKS / "15-php-fpm-master-gone.yaml").read_text()
    shipped = "limits: {cooldown: 2m, max_runs: 3, per: 1h}"
    assert shipped in text, "the shipped playbook changed: update this benchmark"
    # each trial kills it again seconds after the last recovery, on purpose: no flap detection
    return text.replace(
        shipped,
        "limits: {cooldown: 0s, max_runs: 100, per: 1h, backoff: false}\nflap: {after: 0}",
    )


def _install(host: BootedSystemd) -> Service:
    (host.root / "etc/nginx/sites-enabled/default").unlink(missing_ok=True)
    host.write("/etc/nginx/sites-enabled/default", DEBIAN_PHP_SITE)
    host.write("/var/www/html/index.php", PHP_OK)
    host.write("/var/www/html/health.php", PHP_OK)
    _write_config(host, playbooks=())
    # the service's own budget (6 actions an hour) would refuse the 7th trial's restart
    host.write(
        CONFIG,
        _CONFIG.replace(
            "    startup_grace: 5s\n", "    startup_grace: 5s\n    max_actions: 1000\n"
        ),
    )
    host.write(f"{PLAYBOOKS}/15-php-fpm-master-gone.yaml", _playbook())
    host.install_unit(UNIT, SHIPPED_UNIT.read_text(), reload=False)
    host.install_unit(f"{UNIT}.d/test.conf", dropin(watchdog_s=30))
    host.systemctl("start", FPM, NGINX, check=True)
    host.systemctl("start", UNIT, check=True)
    svc = Service(host)
    svc.wait_serving()
    return svc


def _armed(svc: Service, pid: int) -> bool:
    out = svc.host.run(["journalctl", "-u", UNIT, "-b", "-o", "cat", "--no-pager"]).stdout
    return f"pidfd_for={pid}" in out


def _trial(svc: Service) -> dict[str, Any]:
    host = svc.host
    restarts = [r for r in svc.actions() if r["event"] == "action_result"]
    if restarts:  # a crash within the grace of the last restart is held back by design
        last = dt.datetime.fromisoformat(restarts[-1]["ts"].replace("Z", "+00:00")).timestamp()
        time.sleep(max(0.0, last + GRACE - time.time()))
    host.wait_for(FPM, "ActiveState", ["active"], timeout=15)
    main = host.main_pid(FPM)
    wait_for(lambda: _armed(svc, main), 15, "the daemon to watch the main process")
    before = len(svc.actions())
    result: list[list[Any]] = []

    def load() -> None:
        res = host.run(["python3", "-c", _LOAD, SITE, "15"], timeout=40)
        result.extend(json.loads(res.stdout or "[]"))

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    time.sleep(WARM)  # the scenario: a site in service when the unit dies
    killed, killed_wall = time.monotonic(), time.time()
    host.run(["kill", "-9", str(main)], check=True)
    thread.join(40)
    wait_for(
        lambda: any(r["event"] == "incident_closed" for r in svc.actions()[before:]),
        20,
        "the incident to close",
    )
    after = [(t, s) for t, s in result if t >= killed]
    recovered = None
    for t, s in after:
        if s != 200:
            recovered = None
        elif recovered is None:
            recovered = t
    recs = svc.actions()[before:]
    opened = next(r for r in recs if r["event"] == "incident_opened")
    reading = opened["evidence"]["readings"][0]
    action = next(r for r in recs if r["event"] == "action_result")
    opened_at = dt.datetime.fromisoformat(opened["ts"].replace("Z", "+00:00")).timestamp()
    return {
        "recovered_s": None if recovered is None else recovered - killed,
        "failed": sum(1 for _, s in after if s != 200),
        "sent": len(after),
        "seen_by": reading.get("seen_by"),
        "definitive": reading.get("definitive"),
        "opened_ms": (opened_at - killed_wall) * 1000,
        "action_ms": action.get("duration_ms"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_unit_death")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    reason = available()
    if reason is not None:
        print(f"cannot boot systemd here: {reason}", file=sys.stderr)
        return 1
    trials: list[dict[str, Any]] = []
    errors = 0
    with BootedSystemd() as host:
        host.start()
        svc = _install(host)
        for i in range(args.reps):
            before = len(svc.actions())
            try:
                trial = _trial(svc)
            except AssertionError as exc:  # one bad trial, not the run: shown, counted
                errors += 1
                got = [(r["event"], r.get("reason", "")[:120]) for r in svc.actions()[before:]]
                print(f"  trial {i + 1} FAILED: {exc}; action log: {got}", file=sys.stderr)
                continue
            trials.append(trial)
            print(f"  trial {i + 1}: {trial}", file=sys.stderr, flush=True)
        host.systemctl("stop", UNIT, NGINX, FPM)
    done = [t["recovered_s"] for t in trials if t["recovered_s"] is not None]
    seen: dict[str, int] = {}
    for t in trials:
        seen[str(t["seen_by"])] = seen.get(str(t["seen_by"]), 0) + 1
    print("| measure | median (min–max) |\n|---|---:|")
    if done:
        print(
            f"| kill -9 of php8.2-fpm's main → 200s again | {statistics.median(done):.3f} s "
            f"({min(done):.3f}–{max(done):.3f}) |"
        )
    print(
        f"| kill → incident opened | {statistics.median(t['opened_ms'] for t in trials):.0f} ms |"
    )
    print(
        f"| restart action (systemctl restart) | "
        f"{statistics.median(t['action_ms'] for t in trials):.0f} ms |"
    )
    print(
        f"| failed requests (one every 20 ms) | "
        f"{statistics.median(t['failed'] for t in trials):g} "
        f"({min(t['failed'] for t in trials)}–{max(t['failed'] for t in trials)}) |"
    )
    print(
        f"\n{len(trials)} trials; seen by: {seen}; never recovered: {len(trials) - len(done)}; "
        f"trials that could not run: {errors}."
    )
    return 0 if len(done) == len(trials) and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
