"""Gradual saturation: failed requests with the preventive configuration, the reactive one and
nothing, in one run. Run: ``python -m tests.bench.bench_saturation [--reps N]`` (about 40 s a
repetition).

The bed: nginx in front of a static PHP-FPM pool of ``WORKERS`` workers with a listen backlog
of ``BACKLOG``; the load: requests to a page that sleeps ``SLOW`` seconds, at a rate rising
linearly from 1 to 10 a second over 8 s (the pool serves 2 a second: it is saturated after
about 1 s, and its backlog overflows, 502 at once, after about 5 s). Each repetition starts a
fresh pool for each contestant:

- ``none``: no daemon.
- ``reactive``: the shipped saturation playbook's trigger without ``fpm_saturated``: 502/504s
  that the logs say are saturation (as shipped before prevention), corroborated by the pool's
  status not served.
- ``preventive``: the shipped playbook as it is (``fpm_saturated`` lasting 1 s on the pool's
  own status, every 200 ms).
- ``monit``: monit 5.33 as ``bench_mttr`` runs it (a 1 s cycle, restart when ``/index.php``
  does not answer within 1 s); it cannot add workers, only restart.

Both scale ``pm.max_children`` within memory (capped at ``CAP`` here) through the shipped
``scale_workers`` step; ``process_control_timeout = 10s`` lets the reload finish the requests in
flight. Failed: any answer but 200 (502s, or no answer). The target (issue 11): prevention's
failures at most 1 % of the reactive configuration's, and never more than doing nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from tests.bench.bench_mttr import MIN_FPM_AGE, Monit, Reaper, Site
from tests.e2e import DaemonProcess
from tests.saturation import RAMP, run_ramp, shipped_config, shipped_playbook
from tests.stack import Nginx, PhpFpm, Stack, http_get, wait_for

WORKERS = 2
BACKLOG = 16
SLOW = 1.0
CAP = 12
CONTESTANTS = ("none", "reactive", "preventive", "monit")
_HOME = Path.home() / ".cache" / "remediator-bench"  # the daemon refuses configs under /tmp


def _playbooks(contestant: str) -> list[dict[str, Any]]:
    scale = {"max_children": CAP, "min_children": WORKERS}
    return [shipped_playbook(log_only=contestant == "reactive", **scale)]


def _one(contestant: str, reaper: Reaper) -> tuple[Counter[int], str]:
    """One ramp against a fresh pool: the statuses, and what the contestant did."""
    stack = Stack()
    daemon: DaemonProcess | None = None
    monit: Monit | None = None
    try:
        fpm = stack.fpm(max_children=WORKERS, listen_backlog=BACKLOG, process_control_timeout=10)
        nginx: Nginx = stack.nginx(fpm)
        with tempfile.TemporaryDirectory(prefix="saturation-", dir=_HOME) as d:
            if contestant == "monit":
                monit = Monit(reaper, Path(d))
                monit.start(Site(stack, fpm, nginx))
                # monit mutes its connection test while PHP-FPM is younger than 2 s
                wait_for(lambda: _age(fpm) >= MIN_FPM_AGE, 10, "PHP-FPM old enough")
            elif contestant != "none":
                cfg = shipped_config(Path(d), nginx, playbooks=_playbooks(contestant))
                daemon = DaemonProcess(Path(d), cfg).start()
            statuses = run_ramp(nginx.url(f"/slow.php?s={SLOW:g}"), RAMP)
            did = "-"
            if daemon is not None:
                results = daemon.records("action_result")
                did = "; ".join(f"{r['outcome']}: {r['reason']}" for r in results) or "nothing"
                daemon.kill()
            if monit is not None:
                did = f"{monit.starts()} start(s) of PHP-FPM"
                monit.stop()
            wait_for(lambda: http_get(nginx.url(), timeout=5)[0] == 200, 30, "the pool to drain")
            return statuses, did
    finally:
        if daemon is not None:
            daemon.kill()
        if monit is not None:
            monit.stop()
        stack.cleanup()


def _age(fpm: PhpFpm) -> float:
    """Seconds since PHP-FPM's master started (0 when there is none)."""
    master = fpm.master()
    try:
        return 0.0 if master is None else time.time() - master.create_time()
    except psutil.Error:
        return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    _HOME.mkdir(mode=0o755, parents=True, exist_ok=True)
    failed: dict[str, list[int]] = {c: [] for c in CONTESTANTS}
    sent: dict[str, list[int]] = {c: [] for c in CONTESTANTS}
    reaper = Reaper()  # monit's restarted masters are re-parented here: reap them as init would
    try:
        for rep in range(args.reps):
            for contestant in CONTESTANTS:
                statuses, did = _one(contestant, reaper)
                total = sum(statuses.values())
                bad = total - statuses[200]
                failed[contestant].append(bad)
                sent[contestant].append(total)
                print(f"rep {rep + 1} {contestant}: {dict(statuses)}; {did}", flush=True)
    finally:
        reaper.close()
    print()
    print("| configuration | failed requests (median) | runs | sent |")
    print("|---|---|---|---|")
    for c in CONTESTANTS:
        runs = ", ".join(str(x) for x in failed[c])
        print(f"| {c} | {statistics.median(failed[c]):g} | {runs} | {sent[c][0]} |")
    prevent = statistics.median(failed["preventive"])
    reactive = statistics.median(failed["reactive"])
    none = statistics.median(failed["none"])
    ok = prevent <= 0.01 * reactive and prevent <= none if reactive else prevent <= none
    print(
        f"\nramp {RAMP[0]:g} -> {RAMP[1]:g} requests/s over {RAMP[2]:g} s of {SLOW:g} s requests; "
        f"static pool of {WORKERS}, listen.backlog {BACKLOG}, cap {CAP}; {args.reps} reps; "
        f"python {sys.version.split()[0]}"
    )
    print("PASS" if ok else "FAIL: prevention above 1 % of reactive or above doing nothing")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
