"""The fleet's slot, asked for off the daemon's loop.

The engine calls :meth:`Gate.want` (and :meth:`Gate.release`, :meth:`Gate.withdraw`) on the
main loop; these only note the wish under a lock and return the latest answer the worker
thread published. The worker does the HTTP calls, each bounded by a short timeout: it joins
the pool's line, looks where it stands every ``poll`` while waiting, renews the lease every
third of its TTL while in line or holding, and leaves the line when the wish is over. It wakes
the loop when an answer changes. A hung etcd costs the loop nothing: the answer just stays
``pending`` (then ``unreachable``).
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from remediator.fleet.decision import PENDING, Answer, Decision, State
from remediator.fleet.etcd import Etcd, EtcdError, Tls, Unreachable
from remediator.fleet.options import Fleet
from remediator.fleet.semaphore import Claim, ClaimLost, Semaphore, Standing
from remediator.trust import Untrusted, read_file, trusted_uids

log = structlog.get_logger(__name__)

REFRESH = 15.0  # idle, the pool is looked at this often (for status)
WATCH_FOR = 2.0  # in line, a watch is held this long at most before looking again


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Gate:
    """One host's wish for a slot of its pool, served by a worker thread."""

    def __init__(
        self,
        semaphore: Semaphore,
        *,
        poll: float = 0.5,
        wake: Callable[[], None] | None = None,
        refresh: float = REFRESH,
    ) -> None:
        self.sem = semaphore
        self.poll = poll
        self.refresh = refresh
        self.wake = wake
        self._cond = threading.Condition()
        self._wanted: str | None = None  # the playbook that asked, while a slot is wanted
        self._gen = 0  # a new wish after a release is a new claim (a new place in line)
        self._decision: tuple[int, Decision] = (-1, PENDING)
        self._label: tuple[str, str, str] | None = None  # playbook, incident, since
        self._stop = False
        self._seen: dict[str, Any] = {}  # the pool as last seen, for status
        self._state = State.IDLE
        self._lost: str | None = None  # a held slot lost, until the loop has heard of it
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)

    # --- the loop's side: never waits for etcd ---

    def start(self) -> None:
        self._thread.start()

    def want(self, playbook: str) -> Decision:
        """Ask for a slot (the first call joins the line); the latest answer to this wish."""
        with self._cond:
            if self._wanted is None:
                self._wanted = playbook
                self._cond.notify()
            gen, decision = self._decision
            return decision if gen == self._gen else PENDING

    def opened(self, playbook: str, incident: str) -> None:
        """The slot is used by ``incident``: say so in etcd (status of every host shows it)."""
        with self._cond:
            self._label = (playbook, incident, utc_now())
            self._cond.notify()

    def release(self) -> None:
        """The step is verified (or the wish is over): leave the line, give the slot back."""
        with self._cond:
            if self._wanted is None:
                return
            self._wanted = None
            self._label = None
            self._lost = None
            self._gen += 1
            self._cond.notify()
        self.sem.etcd.interrupt()  # a waiter's watch: leave the line now, not when it ends

    withdraw = release  # the trigger stopped holding before the slot was used

    def lost(self) -> str | None:
        """Why the slot this host held is gone (its lease expired or was revoked), once;
        None when it still holds it, or was told already. The worker has joined the line
        again: :meth:`want` says when a slot is this host's again."""
        with self._cond:
            lost, self._lost = self._lost, None
            return lost

    @property
    def wanted(self) -> bool:
        with self._cond:
            return self._wanted is not None

    def view(self) -> dict[str, Any]:
        """This host's state and the pool as last seen, for ``status``."""
        with self._cond:
            return {
                "pool": self.sem.pool,
                "host": self.sem.host,
                "max_concurrent": self.sem.slots,
                "state": str(self._state),
                **self._seen,
            }

    def close(self, timeout: float = 0.2) -> None:
        """Stop the worker (it revokes a claim it holds, best effort: the lease would expire
        anyway); waits ``timeout`` at most."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self.sem.etcd.interrupt()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the worker ---

    def _publish(self, gen: int, decision: Decision, state: State) -> None:
        changed = False
        with self._cond:
            old_gen, old = self._decision
            changed = old_gen != gen or old.answer != decision.answer or old.hosts != decision.hosts
            self._decision = (gen, decision)
            self._state = state
            self._seen = {
                "holders": [h.record() for h in decision.holders],
                "waiting": decision.waiting,
                "seen": utc_now(),
                "detail": decision.detail,
            }
        if changed and self.wake is not None:
            self.wake()

    def _run(self) -> None:
        w = _Worker()
        while True:
            with self._cond:
                while not self._stop:
                    now = time.monotonic()
                    due = w.due(self._wanted is not None, self._gen, self._label)
                    if now >= due:
                        break
                    self._cond.wait(due - now)
                stop, wanted, gen, label = self._stop, self._wanted, self._gen, self._label
            if stop:
                if w.claim is not None:
                    self._leave(w.claim)
                return
            now = time.monotonic()
            try:
                self._step(w, now, wanted, gen, label)
            except ClaimLost:
                self._slot_lost(w, gen, "its lease expired or was revoked in etcd")
                w.due_check = now + self.poll
            except (Unreachable, EtcdError) as exc:
                if self._state != State.UNREACHABLE:  # said once, not at every retry
                    log.warning("fleet_unreachable", pool=self.sem.pool, error=str(exc)[:300])
                if w.granted and w.claim is not None and now - w.renewed >= w.claim.ttl:
                    # no renewal for a whole lease: etcd has let it expire by now (its clock
                    # runs no slower than ours), whether we hear etcd say so or not
                    w.stale.append(w.claim)  # etcd may not know yet: revoked when it answers
                    self._slot_lost(
                        w, gen, f"etcd unreachable for longer than the lease ({w.claim.ttl} s)"
                    )
                w.retry(now + self.poll, now + self.refresh)
                self._publish(
                    gen, Decision(Answer.UNREACHABLE, detail=str(exc)[:300]), State.UNREACHABLE
                )
            except Exception as exc:  # a bug must not kill the worker: unreachable, as it were
                log.exception("fleet_worker_error", error=str(exc))
                w.retry(now + self.poll, now + self.refresh)
                self._publish(
                    gen, Decision(Answer.UNREACHABLE, detail=type(exc).__name__), State.UNREACHABLE
                )

    def _slot_lost(self, w: _Worker, gen: int, why: str) -> None:
        """The claim is gone: tell the loop (when the slot was this host's and is still
        wanted for the same wish), and join the line again at the next turn."""
        if w.granted:
            log.warning("fleet_slot_lost", pool=self.sem.pool, reason=why)
            with self._cond:
                if self._wanted is not None and self._gen == gen == w.gen:
                    self._lost = why
        w.drop()
        self._publish(gen, PENDING, State.LOST)  # wakes the loop: the answer changed

    def _step(
        self,
        w: _Worker,
        now: float,
        wanted: str | None,
        gen: int,
        label: tuple[str, str, str] | None,
    ) -> None:
        """One turn of the worker: leave, join, renew, look, label, or refresh the view."""
        while w.stale:  # a claim given up for lost while etcd was away: make it so
            self.sem.release(w.stale[0])  # Unreachable: tried again at the next turn
            w.stale.pop(0)
        if w.claim is not None and (wanted is None or w.gen != gen):
            self._leave(w.claim)
            w.drop()
            w.due_refresh = now  # status: who holds the slots now, at the next turn
            self._publish(gen, PENDING, State.IDLE)
        if wanted is not None and w.claim is None and now >= w.due_check:
            w.claim = self.sem.claim(playbook=wanted, since=utc_now())
            w.gen, w.granted, w.renewed = gen, False, now
            w.due_keepalive, w.due_check = now + w.claim.ttl / 3, now
        claim = w.claim
        if claim is None:
            if now >= w.due_refresh:
                w.due_refresh = now + self.refresh
                st = self.sem.standing()
                self._publish(gen, Decision(Answer.PENDING, st.holders, st.waiting), State.IDLE)
            return
        if now >= w.due_keepalive:
            w.due_keepalive = now + claim.ttl / 3
            if not self.sem.keepalive(claim):
                raise ClaimLost(claim.key)
            w.renewed = now
        if not w.granted and now >= w.due_check:
            st = self.sem.standing(claim)
            w.granted = st.granted
            w.due_check = now + self.poll
            answer = Answer.GRANTED if w.granted else Answer.BUSY
            state = State.HOLDING if w.granted else State.WAITING
            self._publish(gen, Decision(answer, st.holders, st.waiting), state)
            if not w.granted:
                self._wait_turn(w, st)
        if w.granted and label is not None and label != w.labelled:
            playbook, incident, since = label
            self.sem.label(claim, playbook=playbook, incident=incident, since=since)
            w.labelled = label

    def _wait_turn(self, w: _Worker, st: Standing) -> None:
        """In line: watch for a claim ahead to go (a slot given back is taken at once), at
        most until the lease needs renewing or WATCH_FOR; if the watch cannot be opened,
        look again after ``poll``. The loop's wishes are seen when this returns."""
        now = time.monotonic()
        wait = min(WATCH_FOR, w.due_keepalive - now)
        if wait < 0.05:
            return
        try:
            self.sem.wait_turn(st, wait)
            w.due_check = time.monotonic()
        except (Unreachable, EtcdError):
            w.due_check = now + self.poll

    def _leave(self, claim: Claim) -> None:
        try:
            self.sem.release(claim)
        except (Unreachable, EtcdError) as exc:  # its lease expires by itself
            log.warning("fleet_release_failed", pool=self.sem.pool, error=str(exc)[:300])


@dataclass
class _Worker:
    """What the worker thread knows: its claim, and when to do what next (monotonic)."""

    claim: Claim | None = None
    gen: int = -1
    granted: bool = False
    labelled: tuple[str, str, str] | None = None
    due_keepalive: float = 0.0
    due_check: float = 0.0
    due_refresh: float = 0.0
    renewed: float = 0.0  # when the lease was last renewed (monotonic)
    stale: list[Claim] = field(default_factory=list)  # lost while cut off, not yet revoked

    def drop(self) -> None:
        self.claim, self.granted, self.labelled = None, False, None

    def retry(self, when: float, idle: float) -> None:
        """After a failure: a wish is tried again at ``when``; an idle look at ``idle``."""
        self.due_check, self.due_refresh = when, idle
        if self.claim is not None:
            self.due_keepalive = min(self.due_keepalive, when)

    def due(self, wanted: bool, gen: int, label: tuple[str, str, str] | None) -> float:
        """When the worker has something to do (0: now)."""
        if not wanted and self.claim is not None:
            return 0.0  # a claim to leave
        if self.claim is not None and self.gen != gen:
            return 0.0  # released and asked again: a new place in line
        if self.granted and label is not None and label != self.labelled:
            return 0.0
        if self.claim is None:
            return self.due_check if wanted else self.due_refresh
        due = self.due_keepalive
        return min(due, self.due_check) if not self.granted else due


def start(options: Fleet, *, wake: Callable[[], None]) -> Gate:
    """A started gate for the configured pool, as this host (``host``, or the hostname)."""
    host = options.host or socket.gethostname().split(".")[0]
    password: str | None = None
    if options.password_file is not None:
        try:
            raw, _, _ = read_file(
                options.password_file, trusted_uids(), max_bytes=4096, secret=True
            )
            password = raw.decode("utf-8").strip()
        except (OSError, Untrusted, UnicodeDecodeError) as exc:
            # etcd refuses us then: the pool is unreachable to this host, and says so
            log.error("fleet_password_unreadable", path=str(options.password_file), error=str(exc))
    return build(options, host, password=password, wake=wake)


def build(options: Fleet, host: str, *, password: str | None, wake: Callable[[], None]) -> Gate:
    """A started gate for the configured pool."""
    tls = Tls(
        ca_file=str(options.ca_file) if options.ca_file else None,
        cert_file=str(options.cert_file) if options.cert_file else None,
        key_file=str(options.key_file) if options.key_file else None,
    )
    client = Etcd(
        options.etcd,
        timeout=options.timeout,
        tls=tls,
        username=options.username,
        password=password,
    )
    sem = Semaphore(
        client,
        pool=options.pool,
        slots=options.max_concurrent,
        ttl=max(1, round(options.lease_ttl)),
        host=host,
        prefix=options.prefix,
    )
    gate = Gate(sem, poll=options.poll, wake=wake)
    gate.start()
    return gate
