"""Three hosts, each a daemon in front of its own nginx + PHP-FPM, one pool in a real etcd
cluster of three members (started once for the module): the same fault on every host.

What is proved, from the action logs: at no moment do more than K hosts act; coordination
goes on with a member dead; a holder killed mid-step gives its slot up through its lease;
with every member down `hold` holds and `act` acts alone.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediator.fleet.etcd import Etcd
from remediator.fleet.semaphore import Semaphore
from tests.e2e import DaemonProcess, config, eventually, fpm_service, probe, wall_ts
from tests.etcdcluster import EtcdCluster
from tests.stack import Nginx, PhpFpm, Stack

pytestmark = pytest.mark.servers

TTL = "2s"
_pools = itertools.count()


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as cluster:
        cluster.start()
        yield cluster


def _playbook(verify_probe: str) -> dict[str, Any]:
    return {
        "name": "fpm-down",
        "when": {"service_down": {"service": "fpm"}},
        "steps": [
            {
                "restart": "fpm",
                "verify": {"probe": verify_probe, "within": "30s", "settle": "500ms"},
            }
        ],
        "limits": {"cooldown": "60s"},
    }


def _host(
    stack: Stack,
    tmp_path: Path,
    etcd: EtcdCluster,
    name: str,
    pool: str,
    *,
    slots: int = 1,
    verify: str = "site",
    **fleet: Any,
) -> tuple[DaemonProcess, PhpFpm]:
    fpm = stack.fpm()
    nginx: Nginx = stack.nginx(fpm)
    workdir = tmp_path / name
    cfg = config(
        workdir,
        sources={
            "site": probe(nginx.url(), interval="200ms"),
            "broken": probe(nginx.url("/missing.php"), interval="200ms"),  # never healthy
        },
        services={"fpm": fpm_service(fpm)},
        playbooks=[_playbook(verify)],
        fleet={
            "etcd": etcd.endpoints,
            "pool": pool,
            "max_concurrent": slots,
            "lease_ttl": TTL,
            "host": name,
            "poll": "100ms",
            **fleet,
        },
    )
    return DaemonProcess(workdir, cfg), fpm


def _pool() -> str:
    return f"e2e{next(_pools)}"


def _acting(d: DaemonProcess) -> list[tuple[float, float]]:
    """When ``d`` acted: from each changing step's intent to its incident's close."""
    closes = {r["incident"]: wall_ts(r) for r in d.records("incident_closed")}
    return [
        (wall_ts(r), closes.get(r["incident"], float("inf"))) for r in d.records("action_intent")
    ]


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = now = 0
    for _, step in edges:  # at equal times an end (-1) sorts before a start
        now += step
        most = max(most, now)
    return most


def test_three_hosts_one_fault_one_slot_they_take_turns_with_a_member_dead(
    stack: Stack, daemons: list[DaemonProcess], tmp_path: Path, etcd: EtcdCluster
) -> None:
    pool = _pool()
    hosts = [_host(stack, tmp_path, etcd, f"web-{i}", pool) for i in (1, 2, 3)]
    etcd.kill(0)  # one member dead: the other two are a quorum
    try:
        for d, _ in hosts:
            daemons.append(d.start())
        for _, fpm in hosts:
            fpm.kill_all()
        for d, _ in hosts:
            d.wait_record("incident_closed", 60, outcome="resolved")
    finally:
        etcd.restart(0)
    reports = "\n".join(d.report() for d, _ in hosts)
    intervals = [i for d, _ in hosts for i in _acting(d)]
    assert len(intervals) == 3, reports
    assert _most_at_once(intervals) == 1, reports
    held = [r for d, _ in hosts for r in d.records("trigger_held_back", guard="fleet")]
    assert held, reports
    assert all(r["reason"].startswith("fleet slots busy (web-") for r in held), reports
    for d, _ in hosts:
        assert [r["event"] for r in d.records() if r["event"].startswith("fleet_")] == [
            "fleet_slot_acquired",
            "fleet_slot_released",
        ], d.report()
        opened = d.records("incident_opened")[0]
        assert opened["fleet"]["slot"] == "granted"
    # the operator's view: `log` says who held the slots, `status` shows the pool
    d = next(d for d, _ in hosts if d.records("trigger_held_back", guard="fleet"))
    shown = subprocess.run(
        [sys.executable, "-m", "remediator", "-c", str(d.config_path), "log"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(shown)
    assert "fpm-down held: fleet slots busy (web-" in shown
    assert "fleet slot acquired" in shown and "fleet slot released" in shown
    eventually(
        lambda: (
            json.loads((d.state_dir / "status.json").read_text()).get("fleet", {}).get("pool")
            == pool
        ),
        10,
        "status to show the pool",
    )
    status = subprocess.run(
        [sys.executable, "-m", "remediator", "-c", str(d.config_path), "status"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(status)
    assert f"fleet: pool {pool}, " in status


def test_a_holder_killed_mid_step_loses_its_slot_with_its_lease(
    stack: Stack, daemons: list[DaemonProcess], tmp_path: Path, etcd: EtcdCluster
) -> None:
    pool = _pool()
    # verification never passes: whoever holds the slot holds it for the whole 30 s step
    hosts = [_host(stack, tmp_path, etcd, f"web-{i}", pool, verify="broken") for i in (1, 2)]
    for d, _ in hosts:
        daemons.append(d.start())
    for _, fpm in hosts:
        fpm.kill_all()
    eventually(lambda: any(d.records("action_result") for d, _ in hosts), 30, "a host to act")
    first = next(d for d, _ in hosts if d.records("action_result"))
    other = next(d for d, _ in hosts if d is not first)
    other.wait_record("trigger_held_back", 15, guard="fleet")
    assert not other.records("action_intent"), other.report()
    first.kill()  # mid-step: it never gives the slot back
    other.wait_record("fleet_slot_acquired", 30)
    assert not first.records("fleet_slot_released"), first.report()
    other.wait_record("action_intent", 15)


def test_every_member_down_hold_holds_and_act_acts_alone(
    stack: Stack, daemons: list[DaemonProcess], tmp_path: Path, etcd: EtcdCluster
) -> None:
    hold, hold_fpm = _host(stack, tmp_path, etcd, "web-hold", _pool())
    act, act_fpm = _host(stack, tmp_path, etcd, "web-act", _pool(), on_unreachable="act")
    etcd.kill_all()
    try:
        for d in (hold, act):
            daemons.append(d.start())
        hold_fpm.kill_all()
        act_fpm.kill_all()
        act.wait_record("incident_closed", 30, outcome="resolved")
        held = hold.wait_record("trigger_held_back", 30, guard="fleet")
        assert held[0]["reason"] == "fleet unreachable (connection refused)"
        alone = act.records("fleet_acting_alone")
        assert len(alone) == 1 and "acting alone" in alone[0]["reason"], act.report()
        assert act.records("incident_opened")[0]["fleet"]["slot"] == "alone"
        assert not hold.records("action_intent"), hold.report()
        assert hold.is_running() and act.is_running()
    finally:
        etcd.restart_all()


def test_a_dry_run_takes_no_slot_and_says_so(
    stack: Stack, daemons: list[DaemonProcess], tmp_path: Path, etcd: EtcdCluster
) -> None:
    pool = _pool()
    d, fpm = _host(stack, tmp_path, etcd, "web-dry", pool)
    d.dry_run = True
    daemons.append(d.start())
    fpm.kill_all()
    opened = d.wait_record("incident_opened", 30)[0]
    assert opened["fleet"] == {"slot": "none", "reason": "dry run: no fleet slot taken"}
    d.wait_record("action_result", 30, outcome="would_run")
    assert not [r for r in d.records() if r["event"].startswith("fleet_")], d.report()
    line = Semaphore(Etcd(etcd.endpoints), pool=pool, slots=1, ttl=5, host="x")
    assert line.standing().holders == ()
