"""A hundred hosts contending for a pool's slots against a real three-member etcd on loopback.

Each host is the daemon's own gate (:class:`remediator.fleet.gate.Gate`: a worker thread with
its own HTTP client), driven the way the engine drives it: ``want`` on every turn until the
answer is ``granted``, the "step" held for HOLD seconds, then ``release``. All hundred are hit
by the same fault at the same moment. Reported: the time from the fault to each host's slot
(median, p99), how far that is above an ideal FIFO queue of K slots (HOLD per turn, no
overhead), the most hosts seen holding at once, and etcd's request rate (every HTTP request
every host made, over the run), waiting and idle.

All hundred gates run in this one Python process (200 threads with the driver): the GIL
makes the clients slower than a hundred separate hosts would be; the figures are an upper
bound. Run: ``python -m tests.bench.bench_fleet`` (about 40 s).
"""

from __future__ import annotations

import math
import statistics
import time

from remediator.fleet.decision import Answer
from remediator.fleet.etcd import Etcd
from remediator.fleet.gate import Gate
from remediator.fleet.semaphore import Semaphore
from tests.etcdcluster import EtcdCluster

HOSTS = 100
HOLD = 0.2  # seconds a host holds its slot (its step and verification, shortened)
TTL = 10
IDLE = 20.0  # seconds the idle pool is watched for its request rate
POLL = 0.5  # the default: a fallback only (waiters watch the line)


def _gates(cluster: EtcdCluster, pool: str, slots: int, poll: float) -> list[Gate]:
    gates = []
    for i in range(HOSTS):
        sem = Semaphore(
            Etcd(cluster.endpoints, timeout=1.0), pool=pool, slots=slots, ttl=TTL, host=f"web-{i}"
        )
        gate = Gate(sem, poll=poll)
        gate.start()
        gates.append(gate)
    return gates


def _requests(gates: list[Gate]) -> int:
    return sum(g.sem.etcd.requests for g in gates)


def _contend(cluster: EtcdCluster, pool: str, slots: int, poll: float) -> dict[str, float]:
    gates = _gates(cluster, pool, slots, poll)
    time.sleep(0.5)  # the gates' first idle look at the pool is not part of the run
    before = _requests(gates)
    start = time.monotonic()
    took: dict[int, float] = {}
    release_at: dict[int, float] = {}
    held_most = 0
    while len(took) < HOSTS or release_at:
        now = time.monotonic()
        for i, gate in enumerate(gates):
            if i not in took and gate.want("php-fpm-down").answer is Answer.GRANTED:
                took[i] = now - start
                release_at[i] = now + HOLD
        held_most = max(held_most, len(release_at))
        for i, when in list(release_at.items()):
            if now >= when:
                gates[i].release()
                del release_at[i]
        if now - start > 300:
            raise RuntimeError(f"only {len(took)} of {HOSTS} hosts got a slot in 300 s")
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    time.sleep(0.3)  # the last releases reach etcd
    made = _requests(gates) - before
    for gate in gates:
        gate.close(timeout=2)
    waits = sorted(took.values())
    ideal = sorted(math.floor(rank / slots) * HOLD for rank in range(HOSTS))
    over = [w - i for w, i in zip(waits, ideal, strict=True)]
    return {
        "median": statistics.median(waits),
        "p99": waits[min(HOSTS - 1, math.ceil(0.99 * HOSTS) - 1)],
        "over_median": statistics.median(over),
        "held_most": held_most,
        "elapsed": elapsed,
        "rate": made / elapsed,
    }


def _idle_rate(cluster: EtcdCluster) -> float:
    gates = _gates(cluster, "idle", 1, POLL)
    time.sleep(1.0)
    before = _requests(gates)
    time.sleep(IDLE)
    made = _requests(gates) - before
    for gate in gates:
        gate.close(timeout=2)
    return made / IDLE


def main() -> None:
    with EtcdCluster(3) as cluster:
        cluster.start()
        rows = []
        for slots in (HOSTS, 10, 5, 1):
            rows.append((slots, _contend(cluster, f"k{slots}", slots, POLL)))
        idle = _idle_rate(cluster)
    print(f"{HOSTS} hosts, one fault at once, each holds its slot {HOLD:g}s; 3 etcd members\n")
    print(
        "| K | time to a slot: median | p99 | above ideal FIFO (median) | most holding "
        "| run (ideal) | per handover | etcd requests/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for slots, r in rows:
        turns = math.ceil(HOSTS / slots)
        ideal = turns * HOLD
        handover = (r["elapsed"] - ideal) / turns
        print(
            f"| {slots} | {r['median'] * 1000:.0f} ms | {r['p99'] * 1000:.0f} ms "
            f"| {r['over_median'] * 1000:.0f} ms | {r['held_most']:.0f} "
            f"| {r['elapsed']:.1f} s ({ideal:.1f} s) | {handover * 1000:.0f} ms | {r['rate']:.0f} |"
        )
    print(f"\nidle (nobody wants a slot): {idle:.1f} requests/s for the {HOSTS} hosts")


if __name__ == "__main__":
    main()
