"""``remediator run``: the main loop, its signals, and systemd integration.

Signal handlers only note the signal; the loop acts on it (SIGHUP: load and check the new
configuration whole, swap it in, keep the old one if it fails; SIGTERM/SIGINT: finish or
abandon the step in progress, log it, save offsets and state, stop). Under systemd
(``Type=notify``) it says READY=1 once the sources are open, RELOADING=1/READY=1 around a
reload, STOPPING=1, a short STATUS=, and pings the watchdog only while the loop turns; the
loop turns at least every half of WatchdogSec (``WATCHDOG_USEC``), as sd_watchdog_enabled(3)
advises, even when nothing happens.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from remediator import operator, status, switches
from remediator.actionlog import ActionLog, ActionLogError
from remediator.actions.base import ActionFn, ActionResult
from remediator.config import Config
from remediator.engine import Engine
from remediator.events import Event, Outcome
from remediator.guards import Guards
from remediator.inbox import Inbox
from remediator.load import Loaded, load
from remediator.pages import PageWriter
from remediator.schema import ConfigError
from remediator.sources import host as hostmod
from remediator.sources.tail import Backend
from remediator.state import HostLock
from remediator.system import DryRunSystem, System
from remediator.watch import Watcher
from remediator.wiring import wire

if TYPE_CHECKING:
    from remediator.metrics import Metrics

log = structlog.get_logger(__name__)

TICK_WHILE_VERIFYING = 0.05
FLEET_ANSWER_WAIT = 10.0  # `trigger` with no daemon: how long it waits for the fleet's answer


def notify(message: str) -> None:
    """sd_notify, when there is a NOTIFY_SOCKET; silent otherwise (and on a stale socket)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    try:
        from systemd import daemon as sd  # type: ignore[attr-defined]  # noqa: PLC0415

        sd.notify(message)
    except (ImportError, OSError) as exc:
        log.warning("sd_notify_failed", error=str(exc))


def watchdog_every(environ: Mapping[str, str]) -> float | None:
    """Half of systemd's WatchdogSec for this process (``WATCHDOG_USEC``, when
    ``WATCHDOG_PID`` is unset or ours): the longest the loop may wait between pings. None
    without a watchdog."""
    usec, owner = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid()):
        return None
    try:
        every = int(usec) / 2_000_000
    except ValueError:
        return None
    return every if every > 0 else None


@dataclass
class _Flags:
    hup: bool = False
    stop: bool = False


class Daemon:
    """Everything the running daemon owns, rebuilt on reload."""

    def __init__(
        self,
        config_path: Path,
        actions: Mapping[str, ActionFn],
        *,
        dry_run: bool = False,
        backend: Backend = Backend.AUTO,
    ) -> None:
        self.config_path = config_path
        self.actions = actions
        self.force_dry_run = dry_run
        self.backend = backend
        self.flags = _Flags()
        self.reload_error: str | None = None
        self.loaded: Loaded | None = None
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="action")
        self.watcher: Watcher | None = None
        self.engine: Engine | None = None
        self._status_due = 0.0
        self._shown_incident: object = None  # the incident status.json last showed
        self._ping_every: float | None = None  # run(): half of WatchdogSec, under systemd
        # The 5xx and error lines matched when no trigger counted any (status skips them)
        self.nearing_quiet_at: int | None = None
        self.published: tuple[str | None, float] = (None, 0.0)  # status.json's last body, when
        self._reload_deferred = False
        self.is_service = False  # run(): the daemon itself, which owns status.json
        self.state_dir = Path("/var/lib/remediator")
        self.inbox: Inbox | None = None  # run(): the operator's requests
        self.metrics: Metrics | None = None  # run(): once `metrics:` asks for them
        self.pages = PageWriter(config_path)  # incident pages, written as incidents close
        self._reports_keep = 200
        self.fleet: Any = None  # a remediator.fleet.gate.Gate, with a `fleet:` section

    # --- set-up ---

    def build(self, loaded: Loaded, cfg: Config) -> None:
        """Open sources and make the engine for ``loaded`` (the old ones must be closed)."""
        self.nearing_quiet_at = None  # new sources count their matched lines from 0
        for f in loaded.files:
            for e in f.errors:
                log.error("playbook_file_disabled", file=str(f.path), error=str(e))
        playbooks = loaded.playbooks
        now = time.monotonic()
        state_dir = self.state_dir = cfg.state_dir
        dry = self.force_dry_run or cfg.dry_run
        wiring = wire(
            cfg,
            playbooks,
            system=DryRunSystem() if dry else System(),
            # a dry run fixes nothing, so its incidents end exhausted: in the real book their
            # cooldowns, back-off and breakers would hold back the first real remediation
            guards=Guards(
                state_dir, cfg.guards, now, book="guards.dry-run.json" if dry else "guards.json"
            ),
            actionlog=ActionLog(cfg.action_log),
            actions=self.actions,
            executor=_WakingExecutor(self.executor, self._wake),
            snapshot=hostmod.snapshot,
            lock=HostLock(state_dir / "act.lock"),
        )
        # only the daemon itself keeps offsets; a `trigger` run reads from the end, passing by
        offsets = state_dir if self.is_service else None
        self.watcher = Watcher(
            cfg, wiring.signals, state_dir=offsets, backend=self.backend, feeder=wiring.feeder
        )
        self.engine = wiring.engine
        self.engine.request_probe = self.watcher.probes.request
        self.engine.request_service = self.watcher.services.request
        if self.metrics is not None:
            self.metrics.configure(cfg, (pb.name for pb in playbooks))
            self.metrics.forget_lines()
        self.engine.records.on_record = self._on_record
        # Only the daemon itself writes incident pages (a one-shot `trigger` leaves none).
        self.engine.report_dir = cfg.report_dir() if self.is_service else None
        self._reports_keep = cfg.reports.keep
        if cfg.fleet is not None and not dry:  # no section, no etcd: not even imported
            from remediator.fleet.gate import start  # noqa: PLC0415

            self.fleet = self.engine.seat.slots = start(cfg.fleet, wake=self._wake)
        self.loaded = loaded
        self.engine.close_interrupted()
        self.watcher.start()
        log.info(
            "daemon_ready",
            sources=len(cfg.sources),
            playbooks=len(playbooks),
            dry_run=dry,
            backend=str(self.watcher.tailer.backend),
        )

    def _wake(self) -> None:
        if self.watcher is not None:
            self.watcher.wake()

    def teardown(self) -> None:
        if self.fleet is not None:
            self.fleet.close()  # gives a held slot back (its lease would expire anyway)
            self.fleet = None
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None

    # --- signals ---

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.flags.hup = True
        else:
            self.flags.stop = True
        if self.watcher is not None:
            self.watcher.wake()

    def _on_record(self, rec: dict[str, Any]) -> None:
        """Each action-log record as the engine writes it: metrics, and a closed incident's
        page started (in a process of its own: remediator/pages.py)."""
        if self.metrics is not None:
            self.metrics.record(rec)
        engine = self.engine
        if rec.get("event") == Event.INCIDENT_CLOSED and engine is not None and engine.report_dir:
            self.pages.start(engine.report_dir, str(rec.get("incident")), time.monotonic())

    def install_signals(self) -> None:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    # --- the loop ---

    def run(self) -> int:
        loaded = load(self.config_path)
        if loaded.config is None:
            for e in loaded.all_errors():
                log.error("config_invalid", error=str(e))
            return 2
        problem = ActionLog(loaded.config.action_log).check()
        if problem:
            log.critical("action_log_unwritable", error=problem, consequence="not starting")
            return 1
        self.inbox = Inbox(loaded.config.state_dir)
        other = self.inbox.open()  # the daemon lock, held for life
        if other is not None:
            log.critical("daemon_already_running", error=other, consequence="not starting")
            return 1
        self.is_service = True
        self._ping_every = watchdog_every(os.environ)
        self.install_signals()
        self._expose(loaded.config, whole=not any(f.errors for f in loaded.files))
        self.build(loaded, loaded.config)
        notify("READY=1\nSTATUS=watching")
        try:
            while not self.flags.stop:
                self._turn()
                if self.flags.hup:
                    self.flags.hup = False
                    self._reload()
        finally:
            notify("STOPPING=1")
            self._shutdown()
        return 0

    def trigger(self, request: operator.Request, *, limit: float = 600) -> operator.Reply:
        """``remediator trigger`` while no daemon runs (the caller holds the daemon lock):
        apply the request here and watch its incident through."""
        loaded = load(self.config_path)
        if loaded.config is None:
            return operator.Reply(False, "the configuration is not usable")
        self.build(loaded, loaded.config)
        try:
            if self.engine is None:
                return operator.Reply(False, "the daemon is not built")
            if self.fleet is not None and request.playbook and not request.dry_run:
                self._fleet_answer(request.playbook)
            now = time.monotonic()
            self.engine.guards.save(now)  # the runs a dead daemon left are closed now
            reply = switches.apply(self.engine, request, now, pid=None)
            deadline = now + limit
            while self.engine.incident is not None and time.monotonic() < deadline:
                self._turn()
            return reply
        finally:
            self._shutdown()

    def _fleet_answer(self, playbook: str) -> None:
        """``trigger`` with no daemon running: this process may wait for the fleet's first
        answer (a slot, the holders, or unreachable) before asking the engine."""
        from remediator.fleet.decision import Answer  # noqa: PLC0415

        cfg = self.fleet.sem
        deadline = time.monotonic() + FLEET_ANSWER_WAIT
        while self.fleet.want(playbook).answer is Answer.PENDING:
            if time.monotonic() > deadline:
                log.warning("fleet_no_answer", pool=cfg.pool, waited_s=FLEET_ANSWER_WAIT)
                return
            time.sleep(0.02)

    def _turn(self) -> None:
        if self.watcher is None or self.engine is None:
            raise RuntimeError("the daemon is not built")
        now = time.monotonic()
        busy = self.engine.incident is not None or self.engine.corroboration.asking
        wait = TICK_WHILE_VERIFYING if busy else max(0.0, self._status_due - now)
        if self.inbox is not None:
            wait = min(wait, self.inbox.look_every)
            self.watcher.extra_fds = [self.inbox.fileno()]
        if self._ping_every is not None:
            wait = min(wait, self._ping_every)
        self.watcher.run_once(now, wait)
        now = time.monotonic()
        self.engine.tick(now)
        inbox = self.inbox
        served = [
            (req, switches.apply(self.engine, req, now, pid=os.getpid()))
            for req in (inbox.take(now) if inbox is not None else [])
        ]
        # An answered switch, an incident opened or closed: shown in `status` at once.
        changed = self.engine.incident is not self._shown_incident
        if served or changed or now >= self._status_due:
            self._status_due = now + status.EVERY
            self._shown_incident = self.engine.incident
            try:
                if self.is_service:
                    snap = status.publish(self, self.state_dir, now)
                    if self.metrics is not None:
                        self.metrics.sample(snap, self.engine.guards.breakers(now), now)
            except OSError as exc:
                log.warning("status_unwritable", error=str(exc))
        if inbox is not None:
            for req, reply in served:
                inbox.answer(req, reply)
        if self.pages.busy:
            self.pages.poll(now, self._reports_keep)
        notify("WATCHDOG=1")

    def _reload(self) -> None:
        if self.engine is not None and self.engine.incident is not None:
            if not self._reload_deferred:
                log.warning("config_reload_deferred", reason="an incident is in progress")
            self._reload_deferred = True
            self.flags.hup = True  # again at the next turn, until the incident is over
            return
        self._reload_deferred = False
        notify("RELOADING=1")
        try:
            loaded = load(self.config_path)
        except Exception as exc:  # load reports errors; this is a bug, and must not stop us
            log.exception("config_reload_crashed", error=type(exc).__name__)
            loaded = Loaded(self.config_path, None, [])
            why = f"internal error while loading it ({type(exc).__name__}): see the daemon's log"
            loaded.errors.append(ConfigError(str(self.config_path), 1, 1, "", why))
        if loaded.config is None:
            self.reload_error = "; ".join(str(e) for e in loaded.all_errors()[:5])
            log.error("config_reload_failed", error=self.reload_error, kept="old configuration")
            if self.metrics is not None:
                self.metrics.reloaded(False, time.time())
            self._record_refused(self.reload_error, "the old configuration")
            notify("READY=1\nSTATUS=reload failed: old configuration kept")
            return
        broken = [e for f in loaded.files for e in f.errors]
        kept = loaded.keep_previous(self.loaded) if self.loaded is not None else []
        self.teardown()
        self._expose(loaded.config, whole=not broken)
        self.build(loaded, loaded.config)
        if broken:
            self.reload_error = "; ".join(str(e) for e in broken[:5])
            log.error("config_reload_partial", error=self.reload_error, kept_playbooks=kept)
            self._record_refused(self.reload_error, "the old playbooks of the files with errors")
            notify("READY=1\nSTATUS=reloaded; a playbook file has errors, its old playbooks kept")
            return
        self.reload_error = None
        log.info("config_reloaded")
        notify("READY=1\nSTATUS=watching (reloaded)")

    def _expose(self, cfg: Config, *, whole: bool) -> None:
        """Metrics as ``cfg`` asks (made at the first ask: prometheus-client is imported only
        then), and whether the configuration just loaded was whole."""
        if self.metrics is None and (cfg.metrics.listen or cfg.metrics.textfile):
            from remediator.metrics import Metrics  # noqa: PLC0415

            self.metrics = Metrics()
        if self.metrics is not None:
            self.metrics.reloaded(whole, time.time())
            self.metrics.expose(cfg.metrics)

    def _record_refused(self, reason: str, kept: str) -> None:
        """A refused (part of a) reload is in the action log too: what the daemon runs on."""
        if self.engine is not None:
            with contextlib.suppress(ActionLogError):  # already logged critical by write()
                self.engine.actionlog.write(
                    {
                        "event": "config_refused",
                        "outcome": Outcome.REFUSED,
                        "reason": reason,
                        "kept": kept,
                    }
                )

    def _shutdown(self) -> None:
        if self.engine is not None and self.engine.incident is not None:
            inc = self.engine.incident
            fut = inc.future
            if fut is not None and not fut.done():
                log.warning("stopping_during_action", incident=inc.id, waiting_s=10)
                concurrent.futures.wait([fut], timeout=10)
            self.engine.tick(time.monotonic())
            if self.engine.incident is not None:
                self.engine.actionlog.write(
                    {
                        "event": Event.INCIDENT_ABANDONED,
                        "incident": inc.id,
                        "playbook": inc.playbook.name,
                        "reason": "the daemon is stopping",
                    }
                )
        if self.engine is not None and self.engine.resolutions:
            self.engine.resolutions.wait(10)  # the notifier's timeout bounds each
            self.engine.record_resolved()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.pages.close()
        self.teardown()
        try:
            if self.is_service:
                status.stopped(self.state_dir)
        except OSError as exc:
            log.warning("status_unwritable", error=str(exc))
        if self.metrics is not None:
            self.metrics.close()
        if self.inbox is not None:
            self.inbox.close()  # a command from now on applies its switch itself
        log.info("daemon_stopped")


class _WakingExecutor:
    """Runs actions on the worker thread and wakes the main loop when one is done."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor, wake: Any) -> None:
        self.pool = pool
        self.wake = wake

    def submit(self, fn: Any) -> concurrent.futures.Future[ActionResult]:
        fut: concurrent.futures.Future[ActionResult] = self.pool.submit(fn)
        fut.add_done_callback(lambda _: self.wake())
        return fut
