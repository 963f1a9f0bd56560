"""The K-slot semaphore against a real etcd (one member, started once for the module)."""

from __future__ import annotations

import itertools
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from remediator.fleet.decision import Answer, Decision
from remediator.fleet.etcd import Etcd, EtcdError, Unreachable, prefix_end
from remediator.fleet.gate import Gate
from remediator.fleet.semaphore import Claim, ClaimLost, Semaphore
from tests.etcdcluster import EtcdCluster
from tests.stack import free_port, wait_for

_pools = itertools.count()
PASSWORD = "test-only-" + "secret"  # a throwaway etcd member's user


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(1) as cluster:
        cluster.start()
        yield cluster


def _sem(cluster: EtcdCluster, pool: str, host: str, slots: int = 2, ttl: int = 5) -> Semaphore:
    client = Etcd(cluster.endpoints, timeout=1.0)
    return Semaphore(client, pool=pool, slots=slots, ttl=ttl, host=host)


def _pool() -> str:
    return f"pool{next(_pools)}"


def test_prefix_end_covers_the_prefix() -> None:
    assert prefix_end("/a/b/") == b"/a/b0"
    assert prefix_end("é") == "é".encode()[:-1] + bytes(["é".encode()[-1] + 1])


def test_the_first_k_claims_hold_the_slots_the_next_waits_naming_them(etcd: EtcdCluster) -> None:
    pool = _pool()
    a, b, c = (_sem(etcd, pool, h) for h in ("web-1", "web-2", "web-3"))
    ca = a.claim(playbook="php", incident="i1")
    cb = b.claim(playbook="php", incident="i2")
    cc = c.claim(playbook="php", incident="i3")
    assert a.standing(ca).granted and b.standing(cb).granted
    waiting = c.standing(cc)
    assert not waiting.granted
    assert waiting.hosts == ["web-1", "web-2"]
    assert waiting.holders[0].playbook == "php" and waiting.holders[0].incident == "i1"
    a.release(ca)
    now = c.standing(cc)
    assert now.granted and now.hosts == ["web-2", "web-3"]
    b.release(cb)
    c.release(cc)
    assert c.standing().holders == ()


def test_a_label_keeps_the_claims_place(etcd: EtcdCluster) -> None:
    pool = _pool()
    a, b = _sem(etcd, pool, "web-1", slots=1), _sem(etcd, pool, "web-2", slots=1)
    ca, cb = a.claim(), b.claim()
    a.label(ca, playbook="php", incident="i9", since="2026-12-05T10:00:00Z")
    standing = b.standing(cb)
    assert not standing.granted
    assert standing.holders[0].record() == {
        "host": "web-1",
        "playbook": "php",
        "incident": "i9",
        "since": "2026-12-05T10:00:00Z",
    }
    a.release(ca)
    b.release(cb)


def test_a_dead_holders_slot_frees_when_its_lease_expires(etcd: EtcdCluster) -> None:
    pool = _pool()
    dead = _sem(etcd, pool, "web-1", slots=1, ttl=2)
    alive = _sem(etcd, pool, "web-2", slots=1, ttl=2)
    gone = dead.claim()  # never kept alive: its host "died"
    mine = alive.claim()
    assert not alive.standing(mine).granted

    def granted() -> bool:
        assert alive.keepalive(mine)
        return alive.standing(mine).granted

    wait_for(granted, 15, "the dead holder's lease to expire")
    assert not dead.keepalive(gone)
    with pytest.raises(ClaimLost):
        dead.standing(gone)
    alive.release(mine)


def test_a_kept_alive_claim_outlives_its_ttl(etcd: EtcdCluster) -> None:
    pool = _pool()
    sem = _sem(etcd, pool, "web-1", slots=1, ttl=2)
    claim = sem.claim()
    lease_ids = {claim.lease}
    for _ in range(5):  # each renewal answers with the whole TTL again: the lease lives on
        assert sem.keepalive(claim)
        assert sem.standing(claim).granted
    sem.release(claim)
    assert not sem.keepalive(claim)
    assert lease_ids == {claim.lease}


def test_never_more_than_k_hold_under_contention(etcd: EtcdCluster) -> None:
    pool, slots, hosts = _pool(), 2, 6
    holding: set[str] = set()
    most = [0]
    order: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def host(name: str) -> None:
        try:
            sem = _sem(etcd, pool, name, slots=slots)
            claim = sem.claim()
            wait_for(lambda: sem.standing(claim).granted, 30, f"{name} to get a slot", 0.01)
            with lock:
                holding.add(name)
                most[0] = max(most[0], len(holding))
                order.append(name)
            standing = sem.standing(claim)
            assert claim.key in {f"{sem.line}{h.host}/{h.lease:x}" for h in standing.holders}
            assert len(standing.holders) <= slots  # etcd's own view, not only ours
            time.sleep(0.2)  # the scenario: a step holds its slot a while (others wait)
            with lock:
                holding.discard(name)
            sem.release(claim)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=host, args=(f"web-{i}",)) for i in range(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(order) == hosts
    assert most[0] == slots  # never more than K at once, and K did hold together


def test_unreachable_when_no_endpoint_answers() -> None:
    client = Etcd([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])
    sem = Semaphore(client, pool="p", slots=1, ttl=5, host="web-1")
    with pytest.raises(Unreachable):
        sem.claim()


def test_a_dead_endpoint_is_passed_over(etcd: EtcdCluster) -> None:
    client = Etcd([f"http://127.0.0.1:{free_port()}", *etcd.endpoints])
    sem = Semaphore(client, pool=_pool(), slots=1, ttl=5, host="web-1")
    claim: Claim = sem.claim()
    assert sem.standing(claim).granted
    sem.release(claim)


# --- the gate: the same semaphore, asked for off the caller's thread ---


def _gate(
    cluster: EtcdCluster | list[str], pool: str, host: str, **kw: Any
) -> tuple[Gate, list[int]]:
    endpoints = cluster if isinstance(cluster, list) else cluster.endpoints
    sem = Semaphore(Etcd(endpoints, timeout=0.5), pool=pool, slots=1, ttl=5, host=host)
    woken: list[int] = []
    gate = Gate(sem, poll=0.05, wake=lambda: woken.append(1), **kw)
    gate.start()
    return gate, woken


def _answer(gate: Gate, playbook: str, answer: Answer) -> Decision:
    seen: list[Decision] = []

    def arrived() -> bool:
        seen.append(gate.want(playbook))
        return seen[-1].answer is answer

    wait_for(arrived, 15, f"{gate.sem.host} to be answered {answer}", 0.01)
    return seen[-1]


def test_the_gate_grants_names_the_holder_and_passes_the_slot_on(etcd: EtcdCluster) -> None:
    pool = _pool()
    a, woken = _gate(etcd, pool, "web-1")
    b, _ = _gate(etcd, pool, "web-2")
    try:
        _answer(a, "php", Answer.GRANTED)
        assert woken, "the caller is woken when the answer arrives"
        a.opened("php", "inc-1")
        busy = _answer(b, "php", Answer.BUSY)
        assert busy.reason() == "fleet slots busy (web-1)"
        # web-2 looks again while it waits: it sees what web-1 holds its slot for
        wait_for(
            lambda: [h["incident"] for h in b.view()["holders"]] == ["inc-1"],
            15,
            "the holder's label",
            0.01,
        )
        a.release()
        _answer(b, "php", Answer.GRANTED)
        assert b.view()["state"] == "holding"
    finally:
        a.close()
        b.close()


def test_a_withdrawn_wish_leaves_the_line(etcd: EtcdCluster) -> None:
    pool = _pool()
    a, _ = _gate(etcd, pool, "web-1")
    b, _ = _gate(etcd, pool, "web-2")
    probe = _sem(etcd, pool, "probe", slots=10)
    try:
        _answer(a, "php", Answer.GRANTED)
        _answer(b, "php", Answer.BUSY)
        b.withdraw()
        wait_for(lambda: probe.standing().hosts == ["web-1"], 15, "web-2 to leave the line")
        a.close(timeout=5)
        wait_for(lambda: probe.standing().hosts == [], 15, "a closed gate to give its slot back")
    finally:
        a.close()
        b.close()


def test_a_hung_etcd_never_blocks_the_caller_and_ends_unreachable() -> None:
    with socket.socket() as hung:  # accepts connections (the backlog does), never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        gate, woken = _gate([f"http://127.0.0.1:{hung.getsockname()[1]}"], "p", "web-1")
        try:
            assert gate.want("php").answer is Answer.PENDING  # at once: the worker asks
            decision = _answer(gate, "php", Answer.UNREACHABLE)
            assert decision.reason() == "fleet unreachable (no answer in time)"
            assert woken
        finally:
            gate.close()


def test_a_holder_cut_off_for_longer_than_its_lease_is_told_its_slot_is_lost(
    etcd: EtcdCluster,
) -> None:
    pool = _pool()
    sem = Semaphore(Etcd(etcd.endpoints, timeout=0.3), pool=pool, slots=1, ttl=2, host="web-1")
    gate = Gate(sem, poll=0.05)
    gate.start()
    try:
        _answer(gate, "php", Answer.GRANTED)
        assert gate.lost() is None
        etcd.kill(0)
        try:
            told: list[str] = []

            def lost() -> bool:
                why = gate.lost()
                told.extend([why] if why else [])
                return bool(told)

            wait_for(lost, 15, "the loss", 0.02)
            assert told == ["etcd unreachable for longer than the lease (2 s)"]
            assert gate.lost() is None  # said once
        finally:
            etcd.restart_all()
        # etcd back (its new leader renews every lease's TTL): the claim given up for lost is
        # revoked, not left behind; the host holds a slot again by a new claim
        _answer(gate, "php", Answer.GRANTED)
        probe = _sem(etcd, pool, "probe")
        wait_for(lambda: probe.etcd.range_prefix(probe.line).count == 1, 15, "one claim left")
    finally:
        gate.close()


def test_a_waiter_is_told_when_a_claim_ahead_goes(etcd: EtcdCluster) -> None:
    pool = _pool()
    a, b = _sem(etcd, pool, "web-1", slots=1), _sem(etcd, pool, "web-2", slots=1)
    ca, cb = a.claim(), b.claim()
    seen = b.standing(cb)
    assert seen.ahead == (ca.key,)
    assert not b.wait_turn(seen, 0.3)  # nothing went: the wait runs out
    a.label(ca, playbook="php", incident="i", since="")  # a put is no news to a waiter
    assert not b.wait_turn(seen, 0.3)
    a.release(ca)
    assert b.wait_turn(seen, 10)  # the delete happened before the watch: still seen
    assert b.standing(cb).granted
    b.release(cb)


def test_a_waiter_wakes_only_when_enough_ahead_have_gone(etcd: EtcdCluster) -> None:
    pool = _pool()
    sems = [_sem(etcd, pool, f"web-{i}", slots=2) for i in range(4)]
    claims = [s.claim() for s in sems]
    last = sems[3].standing(claims[3])
    assert not last.granted and len(last.ahead) == 3
    sems[0].release(claims[0])  # two ahead still: both slots taken
    assert not sems[3].wait_turn(last, 0.3)
    sems[2].release(claims[2])  # one ahead: a slot is free
    assert sems[3].wait_turn(last, 10)
    assert sems[3].standing(claims[3]).granted
    for s, c in ((sems[1], claims[1]), (sems[3], claims[3])):
        s.release(c)


def test_with_etcd_auth_a_user_with_its_password_gets_a_slot_others_do_not() -> None:
    with EtcdCluster(1) as cluster:  # its own member: auth changes it for good
        cluster.start()
        ctl = ["etcdctl", f"--endpoints={cluster.endpoints[0]}"]
        for args in (
            ["user", "add", "root:rootpw"],
            ["role", "add", "remediator"],
            [
                "role",
                "grant-permission",
                "remediator",
                "--prefix=true",
                "readwrite",
                "/remediator/",
            ],
            ["user", "add", f"web:{PASSWORD}"],
            ["user", "grant-role", "web", "remediator"],
            ["auth", "enable"],
        ):
            subprocess.run([*ctl, *args], check=True, capture_output=True, env=_ctl_env())
        good = Etcd(cluster.endpoints, username="web", password=PASSWORD)
        sem = Semaphore(good, pool="p", slots=1, ttl=5, host="web-1")
        claim = sem.claim()
        assert sem.standing(claim).granted
        sem.release(claim)
        wrong = Etcd(cluster.endpoints, username="web", password=PASSWORD + "x")
        bad = Semaphore(wrong, pool="p", slots=1, ttl=5, host="web-2")
        with pytest.raises(EtcdError, match="authentication failed"):
            bad.claim()
        anonymous = Semaphore(Etcd(cluster.endpoints), pool="p", slots=1, ttl=5, host="web-3")
        with pytest.raises(EtcdError):
            anonymous.claim()


def _ctl_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "ETCDCTL_API": "3"}
