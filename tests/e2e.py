"""End-to-end helpers: the whole daemon (``python -m remediator -c CFG run``) as a process.

A test builds a configuration from the servers of the bed (:func:`fpm_service`,
:func:`nginx_sources`, ... give the pieces), starts :class:`DaemonProcess` on it, injects a
fault and reads what the daemon did in its action log (:meth:`DaemonProcess.records`).

The daemon runs in its own session; :meth:`DaemonProcess.kill` and the context manager end it
by its process group, nothing else. A process may be started again on the same state dir and
action log (a daemon that was killed and comes back); its stderr (JSON lines) is appended to
one ``daemon.log`` across lives.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import yaml

from remediator.actionlog import read
from tests.closing import Closing
from tests.stack import APACHE, NGINX, PHP_FPM, Apache, LoadGenerator, Nginx, PhpFpm, wait_for

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0

Record = dict[str, Any]


# --- configuration pieces ---------------------------------------------------------------------


def fpm_service(fpm: PhpFpm, **options: Any) -> dict[str, Any]:
    """A pid-file PHP-FPM service for ``fpm`` (started with ``php-fpm8.2 -y CONF``)."""
    return {
        "kind": "php-fpm",
        "pid_file": str(fpm.pid_file),
        "start": [PHP_FPM, "-y", str(fpm.conf)],
        "config_file": str(fpm.conf),
        "pool_file": str(fpm.pool_file),
        "startup_grace": "0s",
        **options,
    }


def nginx_service(nginx: Nginx, **options: Any) -> dict[str, Any]:
    """A pid-file nginx service; every command keeps ``-e ERRLOG`` (off ``/var/log/nginx``)."""
    base = [NGINX, "-c", str(nginx.conf), "-e", str(nginx.error_log)]
    return {
        "kind": "nginx",
        "pid_file": str(nginx.pid_file),
        "start": base,
        "config_file": str(nginx.conf),
        "config_test": [*base, "-t"],
        "reload": [*base, "-s", "reload"],
        "startup_grace": "0s",
        **options,
    }


def apache_service(apache: Apache, **options: Any) -> dict[str, Any]:
    """A pid-file Apache service (``apache2 -f CONF`` for start, test and graceful)."""
    base = [APACHE, "-f", str(apache.conf)]
    return {
        "kind": "apache",
        "pid_file": str(apache.pid_file),
        "start": [*base, "-k", "start"],
        "config_file": str(apache.conf),
        "config_test": [*base, "-t"],
        "reload": [*base, "-k", "graceful"],
        "startup_grace": "0s",
        **options,
    }


def nginx_sources(nginx: Nginx) -> dict[str, Any]:
    """``access`` and ``errors``: the bed's nginx logs, in the formats it writes."""
    return {
        "access": {"type": "access_log", "path": str(nginx.access_log), "format": "nginx-timed"},
        "errors": {"type": "error_log", "path": str(nginx.error_log), "format": "nginx-error"},
    }


def apache_sources(apache: Apache) -> dict[str, Any]:
    """``access`` and ``errors``: the bed's Apache logs (combined plus ``%D``)."""
    return {
        "access": {
            "type": "access_log",
            "path": str(apache.access_log),
            "format": "apache-combined-time",
        },
        "errors": {"type": "error_log", "path": str(apache.error_log), "format": "apache-error"},
    }


def probe(
    url: str, *, interval: str = "250ms", timeout: str | None = None, **options: Any
) -> dict[str, Any]:
    """An HTTP probe source that expects ``ok`` in the body (what the bed's index.php says);
    its timeout is its interval unless given."""
    return {
        "type": "probe",
        "url": url,
        "interval": interval,
        "timeout": timeout or interval,
        "expect_body": "ok",
        **options,
    }


def fpm_down_when() -> dict[str, Any]:
    """The trigger of the shipped php-fpm-down playbook, with 10 s windows: 502/503s and
    nginx's own words that nothing listens on PHP-FPM's socket."""
    return {
        "all": [
            {
                "status_rate": {
                    "source": "access",
                    "status": [502, 503],
                    "window": "10s",
                    "at_least": 3,
                }
            },
            {
                "error_cause": {
                    "source": "errors",
                    "cause": ["upstream_refused", "upstream_missing"],
                    "window": "10s",
                }
            },
        ]
    }


def config(
    workdir: Path,
    *,
    sources: Mapping[str, Any],
    services: Mapping[str, Any],
    playbooks: Sequence[Mapping[str, Any]],
    **options: Any,
) -> dict[str, Any]:
    """A whole main config with its state and action log under ``workdir``."""
    return {
        "state_dir": str(workdir / "state"),
        "action_log": str(workdir / "actions.jsonl"),
        "log_format": "json",
        "sources": dict(sources),
        "services": dict(services),
        "playbooks": list(playbooks),
        **options,
    }


class _NoAliases(yaml.SafeDumper):
    """The same value twice is written out twice: remediator refuses anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(cfg: Mapping[str, Any]) -> str:
    """``cfg`` as YAML remediator accepts (no ``&id001`` anchors for shared values)."""
    return yaml.dump(dict(cfg), Dumper=_NoAliases, sort_keys=False)


# --- the process ------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The PIDs (as this namespace sees them) of ``pid``'s children."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


class DaemonProcess(Closing):
    """``remediator run`` on a config written to ``workdir/remediator.yaml``."""

    def __init__(
        self,
        workdir: Path,
        cfg: Mapping[str, Any],
        *,
        dry_run: bool = False,
        prefix: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.prefix = list(prefix)  # e.g. nsenter into a booted systemd's namespaces
        self.config_path = workdir / "remediator.yaml"
        self.action_log = Path(cfg.get("action_log", workdir / "actions.jsonl"))
        self.state_dir = Path(cfg.get("state_dir", workdir / "state"))
        self.log_path = workdir / "daemon.log"
        self.dry_run = dry_run
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "playbooks.d").mkdir(exist_ok=True)
        self.config_path.write_text(dump(cfg))

    # -- life

    def start(self) -> Self:
        """Start a daemon process and wait until it says ``daemon_ready``."""
        if self.is_running():
            raise RuntimeError("the daemon is already running")
        ready_before = self._count_event("daemon_ready")
        argv = [
            *self.prefix,
            sys.executable,
            "-m",
            "remediator",
            "-c",
            str(self.config_path),
            "run",
        ]
        if self.dry_run:
            argv.append("--dry-run")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        wait_for(
            lambda: self._count_event("daemon_ready") > ready_before or not self.is_running(),
            READY_TIMEOUT,
            "the daemon to be ready",
            interval=0.01,
        )
        if not self.is_running():
            raise RuntimeError(f"the daemon exited at start: {self.log_tail()}")
        return self

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the daemon was never started")
        return self.proc.pid

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, and its exit status (SIGKILL to its group if it does not stop in time)."""
        if self.proc is None:
            raise RuntimeError("the daemon was never started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the daemon's process group (it leads its own session), and reap it.

        Behind a prefix (nsenter into a booted systemd's PID namespace) the daemon is the
        prefix's child: it is killed first, so that nsenter reaps it. Killed together, the
        daemon's zombie would go to a reaper outside the namespace, and that systemd's
        power-off would wait for it (10 s lost per module, seen in test_attack_journal.py).
        """
        if self.proc is None:
            return
        if self.proc.poll() is None and self.prefix:
            for child in _children(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def close(self) -> None:
        self.kill()

    # -- what it wrote

    def records(self, event: str | None = None, **match: Any) -> list[Record]:
        """Action-log records, oldest first; only ``event`` ones and those whose fields equal
        ``match`` when given."""
        out = []
        for rec in read(self.action_log):
            if event is not None and rec.get("event") != event:
                continue
            if all(rec.get(k) == v for k, v in match.items()):
                out.append(rec)
        return out

    def events(self) -> list[str]:
        return [str(r.get("event")) for r in self.records()]

    def wait_record(
        self,
        event: str,
        timeout: float,
        count: int = 1,
        **match: Any,
    ) -> list[Record]:
        """Wait until the action log holds ``count`` records of ``event`` (matching)."""
        found: list[Record] = []

        def enough() -> bool:
            found[:] = self.records(event, **match)
            return len(found) >= count

        wait_for(enough, timeout, f"{count} x {event} {match or ''} in the action log", 0.01)
        return found

    def log_events(self) -> list[Record]:
        """The daemon's own JSON log lines across its lives (other lines skipped)."""
        out: list[Record] = []
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def _count_event(self, name: str) -> int:
        return sum(1 for r in self.log_events() if r.get("event") == name)

    def log_tail(self, max_bytes: int = 3000) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return "<no daemon log>"
        return data[-max_bytes:].decode(errors="replace")

    def report(self) -> str:
        """The daemon's log and action log (without evidence), for a failing test's output."""
        lines = [f"--- daemon log {self.log_path} (tail)", self.log_tail()]
        lines.append(f"--- action log {self.action_log}")
        for rec in self.records():
            lines.append(json.dumps({k: v for k, v in rec.items() if k != "evidence"}))
        return "\n".join(lines)


# --- measuring --------------------------------------------------------------------------------


def failed(load: LoadGenerator, since: float, until: float | None = None) -> int:
    """Requests sent in [since, until) that did not get a 200."""
    return sum(n for status, n in load.statuses(since, until).items() if status != 200)


def recovered_after(load: LoadGenerator, since: float, settle: float, timeout: float) -> float:
    """Wait until requests have succeeded without a failure for ``settle`` seconds; return
    the send time of the first of that run of successes (see ``first_ok_after``)."""
    result: list[float] = []

    def settled() -> bool:
        first = load.first_ok_after(since)
        if first is None or time.monotonic() - first < settle:
            return False
        result[:] = [first]
        return True

    wait_for(settled, timeout, "requests to succeed again", interval=0.02)
    return result[0]


def first_answer(load: LoadGenerator, since: float) -> float:
    """When the first answer of the last run of successes after ``since`` arrived (a request
    held by a hung upstream and answered after the repair counts when it was answered)."""
    start = load.first_ok_after(since)
    if start is None:
        raise AssertionError("no run of successes after the fault")
    return min(s.t + s.latency for s in load.samples if s.t >= start)


def wall_ts(rec: Record) -> float:
    """A record's ``ts`` (RFC 3339, UTC) as epoch seconds."""
    return dt.datetime.fromisoformat(str(rec["ts"]).replace("Z", "+00:00")).timestamp()


def only(items: Sequence[Record], what: str = "record") -> Record:
    """The one element of ``items`` (with a readable failure otherwise)."""
    if len(items) != 1:
        raise AssertionError(f"expected exactly one {what}, got {len(items)}: {items}")
    return items[0]


def eventually(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """:func:`tests.stack.wait_for` at a slower poll (the condition reads files)."""
    wait_for(cond, timeout, what, interval=0.02)
