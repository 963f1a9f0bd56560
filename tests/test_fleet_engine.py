"""The engine with a real fleet gate against a real etcd (one member for the module): which
playbooks wait for a slot, what they record while they wait, and the slot given back.

The actions are small real functions (as in test_engine.py); the probe's answers are fed as
the watcher would feed them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from remediator.actionlog import ActionLog, read
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.detect import Signals
from remediator.engine import Engine
from remediator.executor import Executor
from remediator.fleet.etcd import Etcd
from remediator.fleet.gate import Gate
from remediator.fleet.semaphore import Semaphore
from remediator.guards import Guards
from remediator.load import load
from remediator.playbook import walk_conditions
from remediator.system import DryRunSystem as DryRun
from remediator.system import System
from tests.etcdcluster import EtcdCluster
from tests.stack import wait_for

CONFIG = """
action_log: {log}
sources:
  site: {{type: probe, url: "http://127.0.0.1:1/"}}
services:
  fpm: {{kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s}}
notifiers:
  oncall: {{url: "http://127.0.0.1:1/hook"}}
fleet: {{etcd: {endpoints}, pool: {pool}, max_concurrent: 1, lease_ttl: 5s, host: web-1}}
playbooks:
  - name: {name}
    when: {{probe_failing: {{probe: site, consecutive: 1}}}}
    steps: [{step}]
    {extra}
"""


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(1) as cluster:
        cluster.start()
        yield cluster


class _Bed:
    def __init__(
        self,
        tmp_path: Path,
        etcd: EtcdCluster,
        step: str,
        extra: str = "",
        *,
        executor: Executor | None = None,
        ttl: int = 5,
        system: System | None = None,
    ) -> None:
        self.pool = tmp_path.name.replace("_", "-")[-40:]
        self.log = tmp_path / "actions.jsonl"
        text = CONFIG.format(
            endpoints=etcd.endpoints,
            pool=self.pool,
            name="pb",
            step=step,
            extra=extra,
            log=self.log,
        )
        (tmp_path / "playbooks.d").mkdir()
        self.cfg = tmp_path / "r.yaml"
        self.cfg.write_text(textwrap.dedent(text))
        loaded = load(self.cfg)
        assert loaded.config is not None, loaded.all_errors()
        conds = [c for pb in loaded.playbooks for c in walk_conditions(pb.when)]
        self.signals = Signals.for_conditions(conds)
        self.calls: list[str] = []
        self.going = threading.Event()  # the actions run when it is set
        self.going.set()
        actions = {n: self._action(n) for n in ("restart", "notify")}
        self.engine = Engine(
            loaded.config,
            loaded.playbooks,
            self.signals,
            Guards(tmp_path / "state", loaded.config.guards, 0),
            ActionLog(self.log, journal=False),
            system or System(),
            actions,
            executor=executor,
        )
        self.gate = Gate(self._sem(etcd, "web-1", ttl), poll=0.05)
        self.gate.start()
        self.engine.seat.slots = self.gate
        self.other = self._sem(etcd, "web-9")

    def _sem(self, etcd: EtcdCluster, host: str, ttl: int = 5) -> Semaphore:
        return Semaphore(Etcd(etcd.endpoints), pool=self.pool, slots=1, ttl=ttl, host=host)

    def _action(self, name: str) -> Any:
        def run(args: Any, ctx: ActionContext) -> ActionResult:
            self.calls.append(name)
            self.going.wait(30)
            return ActionResult(Outcome.OK, f"{name} done", target=getattr(args, "service", None))

        return run

    def fail(self) -> None:
        self.signals.probes["site"].record(False, "HTTP 502", time.monotonic())

    def heal(self) -> None:
        self.signals.probes["site"].record(True, "HTTP 200", time.monotonic())

    def tick_until(self, cond: Any, what: str) -> None:
        def turned() -> bool:
            self.engine.tick(time.monotonic())
            return bool(cond())

        wait_for(turned, 15, what, 0.01)

    def records(self, event: str) -> list[dict[str, Any]]:
        return [r for r in read(self.log) if r.get("event") == event]


@pytest.fixture
def bed(tmp_path: Path, etcd: EtcdCluster) -> Iterator[_Bed]:
    b = _Bed(tmp_path, etcd, "{restart: fpm, verify: {probe: site, within: 5s, settle: 0s}}")
    yield b
    b.gate.close()


def test_a_changing_playbook_waits_for_the_slot_naming_its_holder(bed: _Bed) -> None:
    theirs = bed.other.claim(playbook="fpm-down", incident="x")
    bed.fail()
    bed.tick_until(lambda: bed.records("trigger_held_back"), "a hold-back")
    held = bed.records("trigger_held_back")[0]
    assert (held["guard"], held["reason"]) == ("fleet", "fleet slots busy (web-9)")
    assert bed.calls == [] and bed.engine.incident is None
    assert bed.engine.holds.by_fleet("pb") == "fleet slots busy (web-9)"  # status shows it
    assert bed.gate.wanted
    bed.other.release(theirs)
    bed.tick_until(lambda: bed.calls, "the restart")
    opened = bed.records("incident_opened")[0]
    assert opened["fleet"]["slot"] == "granted"
    assert bed.records("fleet_slot_acquired")
    bed.heal()
    bed.tick_until(lambda: bed.records("incident_closed"), "the incident to close")
    assert bed.records("fleet_slot_released")
    wait_for(lambda: bed.other.standing().holders == (), 15, "the slot given back")


def test_a_trigger_that_clears_leaves_the_line(bed: _Bed) -> None:
    theirs = bed.other.claim()
    bed.fail()
    bed.tick_until(lambda: bed.records("trigger_held_back"), "a hold-back")
    assert bed.other.standing().hosts == ["web-9"]  # only the holders are listed...
    assert bed.other.etcd.range_prefix(bed.other.line).count == 2  # ...web-1 waits behind
    bed.heal()
    bed.tick_until(lambda: not bed.gate.wanted, "the wish withdrawn")
    wait_for(lambda: bed.other.etcd.range_prefix(bed.other.line).count == 1, 15, "web-1 to leave")
    bed.other.release(theirs)
    assert bed.calls == []


@pytest.mark.parametrize(
    ("step", "extra"),
    [
        ("{notify: oncall}", ""),  # changes nothing: never takes a slot
        ("{restart: fpm, verify: {probe: site, within: 5s, settle: 0s}}", "fleet: false"),
    ],
    ids=["notify-only", "opted-out"],
)
def test_playbooks_that_need_no_slot_act_while_the_pool_is_full(
    tmp_path: Path, etcd: EtcdCluster, step: str, extra: str
) -> None:
    bed = _Bed(tmp_path, etcd, step, extra)
    try:
        theirs = bed.other.claim()
        bed.fail()
        bed.tick_until(lambda: bed.calls, "the step")
        assert not bed.records("trigger_held_back")
        assert "fleet" not in bed.records("incident_opened")[0]
        assert not bed.gate.wanted
        bed.other.release(theirs)
    finally:
        bed.gate.close()


def test_a_dry_run_engine_asks_no_one(tmp_path: Path, etcd: EtcdCluster) -> None:
    bed = _Bed(
        tmp_path,
        etcd,
        "{restart: fpm, verify: {probe: site, within: 5s, settle: 0s}}",
        system=DryRun(),
    )
    try:
        theirs = bed.other.claim()
        bed.fail()
        bed.tick_until(lambda: bed.records("incident_opened"), "the dry run")
        assert bed.records("incident_opened")[0]["fleet"]["reason"] == (
            "dry run: no fleet slot taken"
        )
        assert not bed.gate.wanted
        bed.other.release(theirs)
    finally:
        bed.gate.close()


def test_a_slot_revoked_mid_step_is_recorded_and_no_further_step_runs_without_one(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    steps = "{restart: fpm, verify: {probe: site, within: 500ms, settle: 0s}}, {restart: fpm}"
    with ThreadPoolExecutor(1) as pool:
        bed = _Bed(tmp_path, etcd, steps, executor=pool, ttl=2)  # renewed, so checked, often
        bed.going.clear()  # the first restart runs until the test lets it end
        try:
            bed.fail()
            bed.tick_until(lambda: bed.calls, "the first restart to start")
            (mine,) = bed.other.etcd.range_prefix(bed.other.line).kvs
            patient = Semaphore(  # next in line, and keeps its lease through the test
                Etcd(etcd.endpoints), pool=bed.pool, slots=1, ttl=60, host="web-9"
            )
            theirs = patient.claim()
            subprocess.run(
                [
                    "etcdctl",
                    f"--endpoints={etcd.endpoints[0]}",
                    "lease",
                    "revoke",
                    f"{mine.lease:x}",
                ],
                check=True,
                capture_output=True,
                env={"PATH": "/usr/bin:/bin", "ETCDCTL_API": "3"},
            )
            bed.tick_until(lambda: bed.records("fleet_slot_lost"), "the loss to be recorded")
            lost = bed.records("fleet_slot_lost")[0]
            assert "revoked" in lost["reason"] and "carries on" in lost["reason"], lost
            assert bed.records("action_result") == []  # the step under way goes on
            bed.going.set()
            bed.tick_until(lambda: bed.records("incident_closed"), "the incident to close")
            assert bed.calls == ["restart"], "no second restart without a slot"
            held = bed.records("action_held")
            assert [(r["step"], r["guard"]) for r in held] == [(2, "fleet")], held
            assert held[0]["reason"] == "the fleet slot was lost: fleet slots busy (web-9)"
            shown = subprocess.run(
                [sys.executable, "-m", "remediator", "-c", str(bed.cfg), "log"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "fleet slot LOST: its lease expired or was revoked in etcd" in shown, shown
            patient.release(theirs)
        finally:
            bed.going.set()
            bed.gate.close()


def test_a_trigger_by_hand_gets_the_slot_when_asked_again(bed: _Bed) -> None:
    # docs/fleet.md: the first `remediator trigger` may answer "try again"; the next one must
    # find the fleet's answer, although no trigger of the playbook holds in between.
    first = bed.engine.trigger(bed.engine.playbooks[0], time.monotonic())
    assert (first.allowed, first.reason) == (False, "asking the fleet for a slot: try again")
    bed.tick_until(lambda: bed.other.standing().hosts == ["web-1"], "web-1 to hold the slot")
    assert bed.gate.wanted  # the loop's turns left the operator's wish in line
    second = bed.engine.trigger(bed.engine.playbooks[0], time.monotonic())
    assert second.allowed, second.reason
    assert bed.records("incident_opened")[0]["fleet"]["slot"] == "granted"
    bed.tick_until(lambda: bed.calls, "the restart")  # the gate's close gives the slot back
