"""A K-slot semaphore in etcd, on leases and revisions alone (no clock is compared).

A host that wants a slot puts a key ``<prefix><pool>/claims/<host>/<lease>`` under a lease of
its own. The keys under the pool, ordered by create revision, form the line: the first K hold
the slots, the rest wait. A key's place can only improve (every later key has a larger
revision), so a host that once saw itself among the first K holds a slot until its key goes:
released (the lease revoked) or its host dead (the lease not kept alive expires). At any
revision at most K keys are among the first K: at most K hosts act. This is the pattern of
etcd's own ``concurrency`` recipes (a mutex is the case K = 1), extended to K.

Blocking calls, each bounded by the client's timeout: run them off the daemon's loop
(:mod:`remediator.fleet.gate` does).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from remediator.fleet.decision import Holder

if TYPE_CHECKING:
    from remediator.fleet.etcd import Etcd, KeyValue

DEFAULT_PREFIX = "/remediator/fleet/"


@dataclass(frozen=True)
class Standing:
    """Where a claim stands: whether it holds a slot, who holds them, how many wait."""

    granted: bool
    holders: tuple[Holder, ...]
    waiting: int
    revision: int
    ahead: tuple[str, ...] = ()  # the keys in line before the claim (when it waits)

    @property
    def hosts(self) -> list[str]:
        return [h.host for h in self.holders]


@dataclass(frozen=True)
class Claim:
    key: str
    lease: int
    ttl: int
    revision: int  # the put's revision, which is the key's create revision


class ClaimLost(Exception):
    """The claim's key is gone: its lease expired or was revoked."""


class Semaphore:
    """K slots of ``pool`` for ``host``."""

    def __init__(
        self,
        etcd: Etcd,
        *,
        pool: str,
        slots: int,
        ttl: int,
        host: str,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if slots < 1:
            raise ValueError("a semaphore needs at least one slot")
        self.etcd = etcd
        self.pool = pool
        self.slots = slots
        self.ttl = ttl
        self.host = host
        self.line = f"{prefix.rstrip('/')}/{pool}/claims/"

    def claim(self, *, playbook: str = "", incident: str = "", since: str = "") -> Claim:
        """Join the line: a new lease, and a key under it. Not yet a slot (see
        :meth:`standing`)."""
        lease, ttl = self.etcd.grant(self.ttl)
        key = f"{self.line}{self.host}/{lease:x}"
        try:
            revision = self.etcd.put(key, _value(playbook, incident, since), lease=lease)
        except Exception:
            self._forget(lease)
            raise
        return Claim(key, lease, ttl, revision)

    def label(self, claim: Claim, *, playbook: str, incident: str, since: str) -> None:
        """Say what the claim is for; its place in the line stays (a put keeps the key's
        create revision)."""
        self.etcd.put(claim.key, _value(playbook, incident, since), lease=claim.lease)

    def standing(self, claim: Claim | None = None) -> Standing:
        """Who holds the slots now, and whether ``claim`` is one of them (with the keys
        ahead of it when it waits). Raises :class:`ClaimLost` when its key is gone."""
        # the whole line when a claim waits (a pool is tens of hosts), the holders otherwise
        found = self.etcd.range_prefix(self.line, limit=0 if claim is not None else self.slots)
        holders = tuple(_holder(kv, self.line) for kv in found.kvs[: self.slots])
        waiting = max(0, found.count - len(holders))
        if claim is None:
            return Standing(False, holders, waiting, found.revision)
        keys = [kv.key for kv in found.kvs]
        if claim.key not in keys:
            raise ClaimLost(claim.key)  # its lease expired or was revoked
        place = keys.index(claim.key)
        granted = place < self.slots
        ahead = () if granted else tuple(keys[:place])
        return Standing(granted, holders, waiting, found.revision, ahead)

    def wait_turn(self, standing: Standing, wait: float) -> bool:
        """Wait up to ``wait`` until enough of the claims ahead (as ``standing`` saw them)
        have gone for this one to hold a slot: True then (look again to be sure), False when
        the time ran out. Only the deletes are watched, and counted here: a slot given back
        costs each waiter no request."""
        ahead = set(standing.ahead)

        def gone(key: str) -> bool:
            ahead.discard(key)
            return len(ahead) < self.slots

        return self.etcd.watch_deletes(self.line, standing.revision, wait, gone)

    def keepalive(self, claim: Claim) -> bool:
        """Renew the claim's lease; False when it is gone (the slot with it)."""
        return self.etcd.keepalive(claim.lease) > 0

    def release(self, claim: Claim) -> None:
        """Leave the line (revoking the lease deletes the key in the same step)."""
        self.etcd.revoke(claim.lease)

    def _forget(self, lease: int) -> None:
        with contextlib.suppress(Exception):  # best effort: the lease expires by itself
            self.etcd.revoke(lease)


def _value(playbook: str, incident: str, since: str) -> bytes:
    return json.dumps({"playbook": playbook, "incident": incident, "since": since}).encode()


def _holder(kv: KeyValue, line: str) -> Holder:
    host = kv.key[len(line) :].rsplit("/", 1)[0]
    try:
        data = json.loads(kv.value)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return Holder(
        host=host,
        playbook=str(data.get("playbook", "")),
        incident=str(data.get("incident", "")),
        since=str(data.get("since", "")),
        revision=kv.create_revision,
        lease=kv.lease,
    )
