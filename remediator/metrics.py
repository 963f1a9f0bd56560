"""Prometheus metrics of the running daemon: served on a loopback ``/metrics`` and/or written
to a node_exporter textfile (``metrics:`` in the config; docs/monitoring.md lists them).

Nothing here is on the path of a log line. What happened (incidents, actions, verifications,
notifications, their durations) is counted from the action-log records as the engine writes
them (:meth:`Metrics.record`); what *is* (lines read per source, breakers, pause, the open
incident, blind sources) is sampled from the status snapshot the daemon takes every few
seconds anyway (:meth:`Metrics.sample`): the feeder's own per-source totals become counters
there, so a line costs nothing more with metrics on.

Labels are bounded: a playbook, service, notifier or source name from the configuration, or a
word of a fixed vocabulary (an action's name, an outcome). A record naming anything else is
counted under ``other``; no text from a log line, a probe's answer or a reason is ever a
label value.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import prometheus_client
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.process_collector import ProcessCollector

from remediator import __version__
from remediator.actions.declare import ACTIONS
from remediator.config import Config, split_listen
from remediator.config import Metrics as MetricsConfig
from remediator.events import Event, IncidentOutcome, Outcome
from remediator.state import write_atomic

log = structlog.get_logger(__name__)

OTHER = "other"
ACTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
DETECTION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
INCIDENT_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_OUTCOMES = frozenset(o.value for o in Outcome)
_INCIDENT_OUTCOMES = frozenset(o.value for o in IncidentOutcome)
_VERIFIED = {
    Event.VERIFY_PASSED: "passed",
    Event.VERIFY_FAILED: "failed",
    Event.VERIFY_UNKNOWN: "unknown",
}
_STEP = frozenset({Event.ACTION_RESULT, Event.ACTION_HELD})
_BLIND_STATES = frozenset({"blind", "waiting"})  # log sources: no evidence (missing or unreadable)
_LOG_KINDS = frozenset({"access_log", "error_log", "journal"})


class Metrics:
    """The daemon's metrics, in a registry of their own (not the library's global one)."""

    def __init__(self) -> None:
        _no_created_series()
        reg = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=reg)
        Gauge("remediator_build_info", "remediator's version.", ["version"], registry=reg).labels(
            __version__
        ).set(1)
        self.opened = Counter(
            "remediator_incidents_opened",
            "Incidents opened, by playbook.",
            ["playbook"],
            registry=reg,
        )
        self.incidents = Counter(
            "remediator_incidents",
            "Incidents closed, by playbook and how they ended (resolved, exhausted, ...).",
            ["playbook", "outcome"],
            registry=reg,
        )
        self.incident_seconds = Histogram(
            "remediator_incident_duration_seconds",
            "From an incident's opening to its close.",
            ["playbook"],
            buckets=INCIDENT_BUCKETS,
            registry=reg,
        )
        self.detection = Histogram(
            "remediator_detection_seconds",
            "From the first sign the trigger names (the condition first holding, a service "
            "first seen down, DNS first wrong) to the incident opening.",
            ["playbook"],
            buckets=DETECTION_BUCKETS,
            registry=reg,
        )
        self.actions = Counter(
            "remediator_actions",
            "Steps run or held back, by action, service (when the step acts on one) and outcome.",
            ["action", "service", "outcome"],
            registry=reg,
        )
        self.action_seconds = Histogram(
            "remediator_action_duration_seconds",
            "How long an action took (verification not included).",
            ["action"],
            buckets=ACTION_BUCKETS,
            registry=reg,
        )
        self.verifications = Counter(
            "remediator_verifications",
            "Verdicts on whether a step helped, by playbook and result (passed, failed, unknown).",
            ["playbook", "result"],
            registry=reg,
        )
        self.notifications = Counter(
            "remediator_notifications",
            "Notifications sent (or not), by notifier and outcome.",
            ["notifier", "outcome"],
            registry=reg,
        )
        self.lines = Counter(
            "remediator_log_lines",
            "Lines read from a log or journal source.",
            ["source"],
            registry=reg,
        )
        self.malformed = Counter(
            "remediator_log_malformed_lines",
            "Lines of an access-log source that its format could not read.",
            ["source"],
            registry=reg,
        )
        self.blind = Gauge(
            "remediator_source_blind",
            "1 while a log or journal source gives no evidence (missing, unreadable, no journal).",
            ["source"],
            registry=reg,
        )
        self.breaker = Gauge(
            "remediator_breaker_open",
            "1 while a playbook's circuit breaker is open (`remediator reset` closes it).",
            ["playbook"],
            registry=reg,
        )
        self.paused = Gauge(
            "remediator_paused", "1 while an operator has paused remediation.", registry=reg
        )
        self.open_incidents = Gauge(
            "remediator_open_incidents", "Incidents in progress (one at most).", registry=reg
        )
        self.dry_run = Gauge(
            "remediator_dry_run",
            "1 when the daemon runs in dry-run (changes nothing).",
            registry=reg,
        )
        self.reload_ok = Gauge(
            "remediator_config_last_reload_successful",
            "1 when the last configuration load (start or SIGHUP) was whole, 0 when it was "
            "refused or a playbook file in it was.",
            registry=reg,
        )
        self.reload_at = Gauge(
            "remediator_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded whole (Unix time).",
            registry=reg,
        )
        self._playbooks: frozenset[str] = frozenset()
        self._services: frozenset[str] = frozenset()
        self._notifiers: frozenset[str] = frozenset()
        self._sources: dict[str, str] = {}  # name -> kind
        self._read: dict[str, tuple[int, int]] = {}  # source -> (lines, malformed) last seen
        self._exposed: MetricsConfig | None = None
        self._server: _Server | None = None
        self._textfile_due = 0.0
        self._textfile_failed = False

    # --- what the configuration names ---

    def configure(self, cfg: Config, playbooks: Iterable[str]) -> None:
        """The names labels may take; every playbook's and source's series exists from now on
        (at 0), so that ``rate()`` and ``increase()`` see the first incident."""
        self._playbooks = frozenset(playbooks)
        self._services = frozenset(cfg.services)
        self._notifiers = frozenset(cfg.notifiers)
        self._sources = {n: type(s).kind for n, s in cfg.sources.items()}
        for pb in self._playbooks:
            self.opened.labels(pb)
            self.breaker.labels(pb)
        for name, kind in self._sources.items():
            if kind in _LOG_KINDS:
                self.lines.labels(name)
                self.blind.labels(name)
                if kind == "access_log":
                    self.malformed.labels(name)
        self.dry_run.set(1 if cfg.dry_run else 0)

    def reloaded(self, ok: bool, wall: float) -> None:
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_at.set(wall)

    # --- what happened: the action log's records ---

    def record(self, rec: Mapping[str, Any]) -> None:
        """Count one action-log record (called by the engine once it is written)."""
        event = rec.get("event")
        playbook = _known(rec.get("playbook"), self._playbooks)
        if event == Event.INCIDENT_OPENED:
            self.opened.labels(playbook).inc()
            self.open_incidents.set(1)
            detection = rec.get("detection_ms")
            if isinstance(detection, int | float):
                self.detection.labels(playbook).observe(detection / 1000)
        elif event == Event.INCIDENT_CLOSED:
            self.open_incidents.set(0)
            outcome = _known(rec.get("outcome"), _INCIDENT_OUTCOMES)
            self.incidents.labels(playbook, outcome).inc()
            took = rec.get("duration_ms")
            if isinstance(took, int | float):
                self.incident_seconds.labels(playbook).observe(took / 1000)
        elif event in _STEP:
            action = _known(rec.get("action"), ACTIONS)
            target = rec.get("target")
            service = target if isinstance(target, str) and target in self._services else ""
            self.actions.labels(action, service, _known(rec.get("outcome"), _OUTCOMES)).inc()
            took = rec.get("duration_ms")
            if event == Event.ACTION_RESULT and isinstance(took, int | float) and took > 0:
                self.action_seconds.labels(action).observe(took / 1000)
            if action == "notify":
                self._notified(rec)
        elif event in _VERIFIED:
            self.verifications.labels(playbook, _VERIFIED[Event(event)]).inc()
        elif event == Event.NOTIFY:
            self._notified(rec)

    def _notified(self, rec: Mapping[str, Any]) -> None:
        notifier = _known(rec.get("target"), self._notifiers)
        self.notifications.labels(notifier, _known(rec.get("outcome"), _OUTCOMES)).inc()

    # --- what is: the daemon's status snapshot ---

    def sample(self, snap: Mapping[str, Any], breakers: Mapping[str, bool], now: float) -> None:
        """Gauges and line counters from ``status.collect``'s snapshot; the textfile when due."""
        for name, src in (snap.get("sources") or {}).items():
            kind = self._sources.get(name)
            if kind not in _LOG_KINDS:
                continue
            self.blind.labels(name).set(1 if src.get("state") in _BLIND_STATES else 0)
            if "lines" in src:
                self._count_lines(name, int(src["lines"]), int(src.get("malformed", 0)))
        for pb in self._playbooks:
            self.breaker.labels(pb).set(1 if breakers.get(pb) else 0)
        self.paused.set(1 if snap.get("paused") else 0)
        self.open_incidents.set(1 if snap.get("incident") else 0)
        exposed = self._exposed
        if exposed is not None and exposed.textfile is not None and now >= self._textfile_due:
            self._textfile_due = now + exposed.textfile_every
            self.write_textfile(exposed.textfile)

    def _count_lines(self, name: str, lines: int, malformed: int) -> None:
        """The feeder's totals as counter increments; a smaller total is a new feeder (the
        configuration was reloaded), counted from zero."""
        seen_lines, seen_bad = self._read.get(name, (0, 0))
        if lines < seen_lines or malformed < seen_bad:
            seen_lines, seen_bad = 0, 0
        if lines > seen_lines:
            self.lines.labels(name).inc(lines - seen_lines)
        if malformed > seen_bad and self._sources.get(name) == "access_log":
            self.malformed.labels(name).inc(malformed - seen_bad)
        self._read[name] = (lines, malformed)

    def forget_lines(self) -> None:
        """The feeders are rebuilt (a reload): their totals start again from zero."""
        self._read.clear()

    # --- exposition ---

    def expose(self, cfg: MetricsConfig) -> None:
        """Serve and/or write as ``cfg`` says; a changed ``listen`` moves the server. A port
        that cannot be bound is logged and the daemon goes on remediating without it (the
        scraper's ``up == 0`` says so)."""
        old = self._exposed
        self._exposed = cfg
        self._textfile_due = 0.0
        if old is not None and old.listen == cfg.listen and self._server is not None:
            return
        if self._server is not None:
            self._server.stop()
            self._server = None
        if cfg.listen is None:
            return
        try:
            self._server = _Server(cfg.listen, self.registry)
        except OSError as exc:
            log.error("metrics_listen_failed", listen=cfg.listen, error=exc.strerror or str(exc))
            return
        log.info("metrics_listening", listen=cfg.listen, port=self._server.port)

    @property
    def port(self) -> int | None:
        """The port ``/metrics`` is served on, None when it is not served."""
        return self._server.port if self._server is not None else None

    def write_textfile(self, path: Path) -> None:
        """The metrics, renamed into place (node_exporter never reads half a file)."""
        try:
            write_atomic(path, generate_latest(self.registry), mode=0o644)
        except OSError as exc:
            if not self._textfile_failed:
                log.warning("metrics_textfile_unwritable", path=str(path), error=str(exc))
            self._textfile_failed = True
        else:
            self._textfile_failed = False

    def close(self) -> None:
        if self._exposed is not None and self._exposed.textfile is not None:
            self.write_textfile(self._exposed.textfile)
        if self._server is not None:
            self._server.stop()
            self._server = None


def _no_created_series() -> None:
    """Leave out the ``*_created`` series of each counter and histogram (a timestamp per label
    set that no rule or dashboard here reads), where the library can (0.17 and later)."""
    disable = getattr(prometheus_client, "disable_created_metrics", None)
    if disable is not None:
        disable()


def _known(value: Any, names: Iterable[str]) -> str:
    """``value`` when it is one of ``names``, else ``other``: a label never takes a value
    from outside the configuration and the fixed vocabularies."""
    return value if isinstance(value, str) and value in names else OTHER


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "remediator"
    sys_version = ""
    timeout = 10  # a client that connects and says nothing holds a thread this long at most

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "only /metrics is here")
            return
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        body = encoder(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry


class _Server:
    """``GET /metrics`` on one address, in a thread of its own that sleeps in ``accept`` (no
    polling: an idle daemon is not woken for it); :meth:`stop` wakes it with a connection."""

    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        host, port = split_listen(listen)
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET

        class Server(_HTTPServer):
            address_family = family

        self.httpd = Server((host, port), _Handler)
        self.httpd.registry = registry
        self.httpd.timeout = None  # handle_request() waits for a connection, however long
        self.port = int(self.httpd.server_address[1])
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="metrics", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self.httpd.handle_request()

    def stop(self) -> None:
        self._stopping.set()
        host = str(self.httpd.server_address[0])
        with contextlib.suppress(OSError):  # wake the accept; the answer is not wanted
            socket.create_connection((host, self.port), timeout=1).close()
        self.thread.join(timeout=5)
        self.httpd.server_close()


__all__ = ["Metrics"]
