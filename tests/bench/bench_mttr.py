"""Recovery (MTTR) against monit: how long a PHP-FPM fault lasts, and how many requests fail.

Run: ``.venv/bin/python -m tests.bench.bench_mttr`` (about 6 minutes; ``make bench`` runs it with
the other benchmarks). It needs root or a user that may run nginx and PHP-FPM on high ports, and
Debian's ``monit`` (5.33). Options: ``--reps N`` (contestants' repetitions, default 5),
``--baseline-reps N`` (default 3), ``--seed S``, ``--only FAULT[,FAULT]`` (kill, hang,
phphang, saturation, master), ``--quick`` (2 and 1 reps: a smoke run), ``--no-idle``, ``--json FILE``.

Each trial starts a fresh real nginx + PHP-FPM (``tests/stack.py``), one contestant, and a paced
keep-alive load of 1,000 req/s (``LoadGenerator``: every request's send time and status). After
a warm-up (PHP-FPM at least 2.2 s old, so monit's 2 s start timeout no longer mutes its
connection test) and a random offset in [0, 1) s (monit checks once a second: the fault lands
anywhere in its cycle), one fault is injected:

- ``kill``: SIGKILL to the PHP-FPM master's process group (the socket file is left behind);
- ``hang``: SIGSTOP to every worker (the socket accepts, nobody answers);
- ``phphang``: every worker blocked in PHP: as many requests to ``/lock.php`` (it waits for
  a lock this harness holds) as workers, sent once; the site's other requests wait;
- ``saturation``: PHP-FPM with ``listen.backlog = 16`` (the others keep the default), and as
  many 30-second requests as workers plus backlog (4 + 16) and four more, sent once; the site's
  other requests get 502 at once (``EAGAIN``);
- ``master``: SIGKILL to the master only; orphan workers keep the socket and keep serving.

Measured from the fault: when the first prompt 200 came (answered within 0.5 s) after which
every answer was a prompt 200, answers taken in the order they arrived (a request stuck in a hung
pool counts when it ends, not when it was sent); and the failed requests (not 200, or no answer
within the client's 1.5 s) that ended after the fault. For ``master`` users see no error until
something restarts PHP-FPM; what counts is when a proper master runs again (a live group leader
named by the pid file, with workers) and the orphans are gone.

Contestants:

- ``remediator``: ``python -m remediator -c CFG run`` as a process, one config for all faults
  (restart on refused/missing, scale_workers on an overloaded backlog, reload then restart when
  the probe fails, restart when ``service_down`` holds for 500 ms as in the shipped
  ``15-php-fpm-master-gone.yaml``, restart on ``fpm_stuck`` as in the shipped
  ``18-php-fpm-stuck.yaml``, the pool's status read every 100 ms with its service named).
- ``monit``: ``monit -I`` with ``set daemon 1`` (its shortest cycle), ``check process`` by pid
  file, an HTTP test of ``/index.php`` through nginx with a 1 s timeout, a 2 s start timeout,
  and a stop program that SIGKILLs the whole PHP-FPM process group.
- ``none``: the fault alone, capped at 10 s (5 s for ``master``).

Fairness: this process is a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``) and reaps dead
daemons at once, as a real init does (PID 1 here reaps slowly, which makes monit see a zombie and
wait extra cycles). Trials of the three contestants are interleaved and in a shuffled order.
The daemon's idle CPU and RSS (stack idle, one probe a second, 60 s after 12 s of settling) are
measured at the end, then monit's, one after the other on the same site.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import enum
import fcntl
import http.client
import json
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from tests.stack import (
    LOCK,
    PHP_FPM,
    LoadGenerator,
    Nginx,
    PhpFpm,
    Sample,
    Stack,
    StackError,
    wait_for,
)

RATE = 1000.0
THREADS = 16
CLIENT_TIMEOUT = 1.5  # no answer by then is a failed request
SLOW = 0.5  # a 200 that took longer was queued behind the fault: the site is not back yet
CAP = 10.0
CAP_MASTER = 5.0
HOLD = 1.6  # recovered only when requests keep succeeding this long (> CLIENT_TIMEOUT)
WARM_LOAD = 1.0  # load before the fault
MIN_FPM_AGE = 2.2  # monit mutes connection tests while the process is younger than 2 s
MAX_CHILDREN = 4
BACKLOG = 16  # 4 overflows when the load's 16 connections open at once
SLOW_SECONDS = 30
BURST = MAX_CHILDREN + BACKLOG + 4
IDLE_SECONDS = 60.0  # CPU time comes in 10 ms ticks: 60 s resolves 0.017 %
# the steady state: start-up done, and a pool idle 10 s is read every second (fpmwatch)
IDLE_SETTLE = 12.0
POLL = 0.05
# (d) is judged by looking at processes, not by answers: look often enough that the look's
# own period (up to POLL late, POLL/2 on average) is not what is measured.
MASTER_POLL = 0.01
CONTESTANTS = ("remediator", "monit", "none")
BASELINE_REPS = 3
PR_SET_CHILD_SUBREAPER = 36
# Configs live where the loader trusts them (not under /tmp, which others can write: issue 9).
WORK_ROOT = Path.home() / ".cache" / "remediator-bench"


class Fault(enum.StrEnum):
    KILL = "kill"
    HANG = "hang"
    PHPHANG = "phphang"
    SATURATION = "saturation"
    MASTER = "master"


LABELS = {
    Fault.KILL: "(a) PHP-FPM master + workers killed",
    Fault.HANG: "(b) workers hung (SIGSTOP)",
    Fault.PHPHANG: "(b') every worker blocked in PHP on a lock",
    Fault.SATURATION: f"(c) saturation (slow requests, listen.backlog {BACKLOG})",
    Fault.MASTER: "(d) only the master killed",
}


# ---------------------------------------------------------------------------------------------
# a prompt reaper, as a real init would be


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, session) of ``pid`` from ``/proc``, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw.rpartition(b")")[2].split()
    if len(fields) < 4:
        return None
    return fields[0].decode(), int(fields[1]), int(fields[3])


class Reaper:
    """Makes this process a child subreaper and reaps its dead adopted daemons at once.

    Daemonized masters (and their orphaned workers) are re-parented here when their starter
    exits, because this process is the nearest subreaper above them. A zombie child is reaped
    as soon as SIGCHLD says one exists, unless it is ours to wait for: a registered process
    (monit, the daemon) or one still in our own session (a ``subprocess.run`` starter, which
    its caller reaps; reaped here only if left for more than a second).
    """

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")
        self.protected: set[int] = set()
        self.reaped = 0
        self._me = os.getpid()
        self._session = os.getsid(0)
        self._seen: dict[int, float] = {}
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_handler = signal.signal(signal.SIGCHLD, _on_sigchld)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            select.select([self._r], [], [], 0.02)
            with contextlib.suppress(BlockingIOError):
                os.read(self._r, 4096)
            self._reap()

    def _reap(self) -> None:
        try:
            waitable = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if waitable is None:
            return
        now = time.monotonic()
        with os.scandir("/proc") as entries:
            pids = [int(e.name) for e in entries if e.name.isdigit()]
        for pid in pids:
            stat = _read_stat(pid)
            if stat is None or stat[1] != self._me or stat[0] != "Z" or pid in self.protected:
                continue
            if stat[2] == self._session and now - self._seen.setdefault(pid, now) < 1.0:
                continue
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    self.reaped += 1
            self._seen.pop(pid, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        signal.set_wakeup_fd(self._old_fd)
        signal.signal(signal.SIGCHLD, self._old_handler)
        os.close(self._r)
        os.close(self._w)


def _on_sigchld(signum: int, frame: FrameType | None) -> None:
    """Nothing: the C-level handler has already written to the wake-up fd."""


# ---------------------------------------------------------------------------------------------
# the site and its processes


@dataclass
class Site:
    stack: Stack
    fpm: PhpFpm
    nginx: Nginx

    @classmethod
    def start(cls, backlog: int | None = None) -> Site:
        """nginx + PHP-FPM (static pool of MAX_CHILDREN); ``backlog``: PHP-FPM's listen.backlog
        (None: its default, 511)."""
        stack = Stack()
        try:
            fpm = stack.fpm(max_children=MAX_CHILDREN, listen_backlog=backlog)
            nginx = stack.nginx(fpm)
        except BaseException:
            stack.cleanup()
            raise
        return cls(stack, fpm, nginx)


def _live_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    out: list[int] = []
    with os.scandir("/proc") as entries:
        for e in entries:
            if not e.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.getpgid(int(e.name)) == pgid:
                    stat = _read_stat(int(e.name))
                    if stat is not None and stat[0] not in ("Z", "X"):
                        out.append(int(e.name))
    return out


def _proper_master(fpm: PhpFpm, old_master: int) -> bool:
    """A new live master named by the pid file leads a group with workers; the old group is
    gone (no orphans left)."""
    try:
        pid = int(fpm.pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    if pid == old_master or _live_group(old_master):
        return False
    stat = _read_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    try:
        if not Path(f"/proc/{pid}/comm").read_text().startswith("php-fpm"):
            return False
    except OSError:
        return False
    return len(_live_group(pid)) > 1


def _fpm_age(fpm: PhpFpm) -> float:
    master = fpm.master()
    if master is None:
        return 0.0
    try:
        return time.time() - master.create_time()
    except psutil.Error:
        return 0.0


# ---------------------------------------------------------------------------------------------
# contestants


class Contestant:
    """Nothing: the fault alone."""

    name = "none"
    proc: subprocess.Popen[bytes] | None = None

    def __init__(self, reaper: Reaper, workdir: Path) -> None:
        self.reaper = reaper
        self.workdir = workdir

    def start(self, site: Site) -> None:
        """Start watching ``site``; return once it watches."""

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.reaper.protected.discard(proc.pid)

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) of the contestant's process so far."""
        if self.proc is None:
            return None
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
        except psutil.Error:
            return None
        return float(t.user + t.system)

    def rss(self) -> int | None:
        if self.proc is None:
            return None
        try:
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        except psutil.Error:
            return None

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.reaper.protected.add(proc.pid)
        self.proc = proc
        return proc

    def _check_alive(self, what: str) -> bool:
        proc = self.proc
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited (rc {proc.returncode}) {what}")
        return True


REMEDIATOR_CONFIG = """\
state_dir: {d}/state
action_log: {d}/actions.jsonl
playbooks_dir: {d}/playbooks.d
log_format: json
log_level: warning
sources:
  access: {{type: access_log, path: {access}, format: nginx-timed}}
  errors: {{type: error_log, path: {error}, format: nginx-error}}
  fpm_log: {{type: error_log, path: {fpm_log}, format: php-fpm}}
  site: {{type: probe, url: "{url}", interval: 1s, timeout: 500ms, expect_body: ok}}
  pool: {{type: fpm_status, socket: {sock}, path: /fpm-status, interval: 100ms, service: fpm}}
services:
  fpm:
    kind: php-fpm
    pid_file: {pid}
    start: [{php_fpm}, -y, {conf}]
    config_file: {conf}
    pool_file: {pool}
    startup_grace: 1s
playbooks:
  - name: fpm-master-gone
    priority: 5
    when:
      service_down: {{service: fpm, lasting: 500ms}}
    steps:
      - restart: fpm
        verify: {{probe: site, within: 5s}}
  - name: fpm-down
    priority: 10
    when:
      all:
        - status_rate: {{source: access, status: [502, 503], window: 10s, at_least: 3}}
        - error_cause: {{source: errors, cause: [upstream_refused, upstream_missing], window: 10s}}
    steps:
      - restart: fpm
        verify: {{probe: site, within: 5s}}
  - name: fpm-stuck
    priority: 18
    when:
      fpm_stuck: {{source: pool}}
    steps:
      - restart: fpm
        verify: {{probe: site, within: 5s}}
  - name: fpm-saturated
    priority: 20
    when:
      all:
        - status_rate: {{source: access, status: [502, 504], window: 10s, at_least: 3}}
        - any:
            - error_cause: {{source: errors, cause: upstream_overloaded, window: 10s, at_least: 3}}
            - error_cause: {{source: fpm_log, cause: fpm_max_children, window: 10s}}
    steps:
      - scale_workers: {{service: fpm, max_children: 32, memory_reserve: 256MiB}}
        verify: {{probe: site, within: 5s}}
  - name: fpm-hung
    priority: 30
    when:
      probe_failing: {{probe: site, consecutive: 1}}
    steps:
      - reload: fpm
        verify: {{probe: site, within: 2s}}
      - restart: fpm
        verify: {{probe: site, within: 5s}}
"""


class Remediator(Contestant):
    """``python -m remediator -c CFG run`` as its own process."""

    name = "remediator"

    def start(self, site: Site) -> None:
        d = self.workdir
        (d / "playbooks.d").mkdir()
        cfg = d / "remediator.yaml"
        cfg.write_text(
            REMEDIATOR_CONFIG.format(
                d=d,
                access=site.nginx.access_log,
                error=site.nginx.error_log,
                fpm_log=site.fpm.error_log,
                url=site.nginx.url(),
                sock=site.fpm.socket,
                pid=site.fpm.pid_file,
                php_fpm=PHP_FPM,
                conf=site.fpm.conf,
                pool=site.fpm.pool_file,
            )
        )
        cfg.chmod(0o600)
        self._spawn([sys.executable, "-m", "remediator", "-c", str(cfg), "run"], d / "daemon.log")
        status = d / "state" / "status.json"
        wait_for(lambda: self._check_alive("at start") and status.exists(), 20, "remediator")

    def records(self) -> list[dict[str, Any]]:
        path = self.workdir / "actions.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


MONIT_RC = """\
set daemon 1
set logfile {d}/monit.log
set pidfile {d}/monit.pid
set idfile {d}/monit.id
set statefile {d}/monit.state
check process php-fpm with pidfile {pid}
  start program = "{d}/fpm-start" with timeout 2 seconds
  stop program = "{d}/fpm-stop"
  if failed host 127.0.0.1 port {port} protocol http request "/index.php" with timeout 1 seconds then restart
"""

# dash's kill rejects `--`: `kill -KILL -PGID` signals the whole group (workers, orphans too).
MONIT_STOP = """\
#!/bin/sh
pid=$(cat {pid} 2>/dev/null)
[ -n "$pid" ] && kill -KILL -"$pid" 2>/dev/null
exit 0
"""

MONIT_START = """\
#!/bin/sh
exec {php_fpm} -y {conf}
"""


class Monit(Contestant):
    """monit 5.33 in the foreground with its own control, state, id and pid files."""

    name = "monit"

    def start(self, site: Site) -> None:
        d = self.workdir
        pid = site.fpm.pid_file
        for name, text in (
            ("fpm-start", MONIT_START.format(php_fpm=PHP_FPM, conf=site.fpm.conf)),
            ("fpm-stop", MONIT_STOP.format(pid=pid)),
        ):
            (d / name).write_text(text)
            (d / name).chmod(0o755)
        rc = d / "monitrc"
        rc.write_text(MONIT_RC.format(d=d, pid=pid, port=site.nginx.port))
        rc.chmod(0o600)  # monit refuses a control file others can read
        self._spawn(["monit", "-I", "-c", str(rc)], d / "monit.out")
        log = d / "monit.log"

        def started() -> bool:
            self._check_alive("at start")
            return log.exists() and "Starting Monit" in log.read_text(errors="replace")

        wait_for(started, 10, "monit")

    def starts(self) -> int:
        """How many times monit ran its start program (for a start or a restart)."""
        log = self.workdir / "monit.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return text.count("'php-fpm' start:")


def make_contestant(name: str, reaper: Reaper, workdir: Path) -> Contestant:
    if name == "remediator":
        return Remediator(reaper, workdir)
    if name == "monit":
        return Monit(reaper, workdir)
    return Contestant(reaper, workdir)


# ---------------------------------------------------------------------------------------------
# faults


@dataclass
class Injected:
    t0: float  # monotonic
    wall: float  # time.time() at the same moment
    old_master: int
    threads: list[threading.Thread] = field(default_factory=list)
    lock: Any = None  # phphang: the lock file held (closed when the trial ends)


def _slow_request(port: int, path: str = f"/slow.php?s={SLOW_SECONDS}") -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SLOW_SECONDS + 5)
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn.request("GET", path)
        conn.getresponse().read()
    conn.close()


def inject(fault: Fault, site: Site) -> Injected:
    """Everything is looked up first; the clock starts right before the first signal."""
    master = site.fpm.master()
    if master is None:
        raise RuntimeError("php-fpm is not running before the fault")
    workers = site.fpm.worker_pids()
    if fault is Fault.PHPHANG:
        path = site.nginx.docroot / LOCK
        path.touch(mode=0o644)
        held = path.open("rb")
        fcntl.flock(held, fcntl.LOCK_EX)
        threads = [
            threading.Thread(target=_slow_request, args=(site.nginx.port, "/lock.php"), daemon=True)
            for _ in range(MAX_CHILDREN)
        ]
        inj = Injected(time.monotonic(), time.time(), master.pid, threads, held)
        for t in threads:
            t.start()
        return inj
    if fault is Fault.SATURATION:
        threads = [
            threading.Thread(target=_slow_request, args=(site.nginx.port,), daemon=True)
            for _ in range(BURST)
        ]
        inj = Injected(time.monotonic(), time.time(), master.pid, threads)
        for t in threads:
            t.start()
        return inj
    inj = Injected(time.monotonic(), time.time(), master.pid)
    if fault is Fault.KILL:
        os.killpg(master.pid, signal.SIGKILL)
    elif fault is Fault.MASTER:
        os.kill(master.pid, signal.SIGKILL)
    else:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
    return inj


# ---------------------------------------------------------------------------------------------
# trials


@dataclass
class Trial:
    fault: Fault
    contestant: str
    offset: float
    recovered: float | None  # seconds from the fault; None: not within the cap
    failed: int
    sent: int
    pre_fault_failed: int
    cpu_under_load: float | None = None  # % of a core, the contestant's process, before the fault
    detail: dict[str, Any] = field(default_factory=dict)


def ok(s: Sample) -> bool:
    """Not a failed request: answered 200 (however late)."""
    return s.status == 200


def good(s: Sample) -> bool:
    """Answered 200 promptly: the site works again."""
    return s.status == 200 and s.latency <= SLOW


def done_at(s: Sample) -> float:
    """When the answer (or the error) came."""
    return s.t + s.latency


def recovered_at(samples: Sequence[Sample], t0: float) -> float | None:
    """When the first prompt 200 came, at or after ``t0``, after which every answer was one.

    Answers are taken in the order they came, not the order requests were sent: a request
    stuck in a hung pool and answered (or timed out) late counts when it ends, and a 200 that
    waited more than SLOW seconds in a queue does not say the site is back.
    """
    first_good: float | None = None
    for s in sorted((s for s in samples if done_at(s) >= t0), key=done_at):
        if not good(s):
            first_good = None
        elif first_good is None:
            first_good = done_at(s)
    return first_good


def run_trial(fault: Fault, name: str, reaper: Reaper, rng: random.Random) -> Trial:
    """One fault under load with one contestant, on a fresh site; everything ended after."""
    with contextlib.ExitStack() as cleanup:
        WORK_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-mttr-{name}-", dir=WORK_ROOT))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        site = Site.start(BACKLOG if fault is Fault.SATURATION else None)
        cleanup.callback(site.stack.cleanup)
        contestant = make_contestant(name, reaper, workdir)
        cleanup.callback(contestant.stop)
        contestant.start(site)
        load = LoadGenerator(site.nginx.url(), rate=RATE, threads=THREADS, timeout=CLIENT_TIMEOUT)
        cleanup.callback(load.stop)
        load.start()
        load_start = time.monotonic()
        cpu_start = contestant.cpu_seconds()
        wait_for(lambda: _warm(load, load_start, site), 15, "a clean warm-up")
        offset = rng.uniform(0.0, 1.0)
        time.sleep(offset)
        cpu_end, cpu_wall = contestant.cpu_seconds(), time.monotonic()
        inj = inject(fault, site)
        if inj.lock is not None:
            cleanup.callback(inj.lock.close)
        repaired = _observe(fault, site, load, inj, CAP_MASTER if fault is Fault.MASTER else CAP)
        samples = load.stop()
        contestant.stop()
        if isinstance(contestant, Remediator):
            detail = _remediator_detail(contestant.records(), inj.wall)
        elif isinstance(contestant, Monit):
            detail = {"monit_starts": contestant.starts()}
        else:
            detail = {}
    t0 = inj.t0
    after = [s for s in samples if done_at(s) >= t0]
    last = max((done_at(s) for s in after), default=t0)
    rec = recovered_at(samples, t0)
    if rec is not None and last - rec < min(HOLD, 1.0):
        rec = None  # a success at the very end is not a recovery
    if fault is Fault.MASTER:
        rec = repaired
    trial = Trial(
        fault,
        name,
        offset,
        None if rec is None else rec - t0,
        sum(1 for s in after if not ok(s)),
        len(after),
        sum(1 for s in samples if done_at(s) < t0 and not ok(s)),
        detail=detail,
    )
    if cpu_start is not None and cpu_end is not None:
        trial.cpu_under_load = 100 * (cpu_end - cpu_start) / (cpu_wall - load_start)
    return trial


def _warm(load: LoadGenerator, since: float, site: Site) -> bool:
    """Load ran WARM_LOAD seconds, the last of them without a failure; PHP-FPM is old enough
    for monit to test it."""
    now = time.monotonic()
    if now - since < WARM_LOAD or _fpm_age(site.fpm) < MIN_FPM_AGE:
        return False
    return all(good(s) for s in load.samples if done_at(s) >= now - WARM_LOAD)


def _observe(
    fault: Fault, site: Site, load: LoadGenerator, inj: Injected, cap: float
) -> float | None:
    """Watch until the site has been healthy for HOLD seconds, or the cap; for ``master``,
    return when a proper master was first seen again."""
    t0 = inj.t0
    repaired: float | None = None
    while (now := time.monotonic()) < t0 + cap:
        time.sleep(MASTER_POLL if fault is Fault.MASTER else POLL)
        if fault is Fault.MASTER:
            if repaired is None and _proper_master(site.fpm, inj.old_master):
                repaired = time.monotonic()
            if repaired is not None and now - repaired >= HOLD:
                break
            continue
        rec = recovered_at(load.samples, t0)
        if rec is not None and now - rec >= HOLD:
            break
    return repaired


def _wall(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _remediator_detail(recs: list[dict[str, Any]], fault_wall: float) -> dict[str, Any]:
    """Where the daemon's time went: fault -> incident opened -> each action's duration."""
    out: dict[str, Any] = {}
    opened = next((r for r in recs if r.get("event") == "incident_opened"), None)
    if opened is None:
        return out
    out["playbook"] = opened.get("playbook")
    out["detect_ms"] = round((_wall(opened["ts"]) - fault_wall) * 1000, 1)
    if out["detect_ms"] < 0:
        out["warning"] = "acted before the fault: the warm-up was not clean"
    results = [r for r in recs if r.get("event") == "action_result"]
    out["actions"] = [f"{r.get('action')}:{r.get('outcome')}" for r in results]
    out["action_ms"] = [r.get("duration_ms") for r in results]
    out["incidents"] = sum(1 for r in recs if r.get("event") == "incident_opened")
    out["breakers_opened"] = sum(1 for r in recs if r.get("event") == "breaker_opened")
    return out


# ---------------------------------------------------------------------------------------------
# idle cost


def measure_idle(reaper: Reaper) -> dict[str, dict[str, float]]:
    """CPU (% of one core over IDLE_SECONDS) and RSS of the daemon and of monit, stack idle,
    one after the other on the same site: side by side, each would follow the other's checks
    (monit's HTTP test is an access-log line a second for the daemon)."""
    site = Site.start()
    WORK_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    out: dict[str, dict[str, float]] = {}
    try:
        for make in (Remediator, Monit):
            workdir = Path(tempfile.mkdtemp(prefix="bench-mttr-idle-", dir=WORK_ROOT))
            c = make(reaper, workdir)
            try:
                c.start(site)
                time.sleep(IDLE_SETTLE)  # past start-up, and the pool's status read as quiet
                before = c.cpu_seconds() or 0.0
                t = time.monotonic()
                time.sleep(IDLE_SECONDS)
                wall = time.monotonic() - t
                out[c.name] = {
                    "cpu_pct": 100 * ((c.cpu_seconds() or 0.0) - before) / wall,
                    "rss_mib": (c.rss() or 0) / 2**20,
                }
            finally:
                c.stop()
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        site.stack.cleanup()
    return out


# ---------------------------------------------------------------------------------------------
# report


def _fmt_time(values: list[float | None], cap: float) -> str:
    """Median (min–max) in seconds; a trial that never recovered counts as infinitely long."""
    med = _median_time(values)
    if med is None:
        return "–"
    done = [v for v in values if v is not None]
    if med == float("inf"):
        return f">{cap:g} s" + (f" ({len(done)} of {len(values)} within)" if done else "")
    hi = "never" if len(done) < len(values) else f"{max(done):.2f}"
    return f"{med:.2f} s ({min(done):.2f}–{hi})"


def _fmt_count(values: list[int]) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):g} ({min(values)}–{max(values)})"


def _median_time(values: list[float | None]) -> float | None:
    if not values:
        return None
    return float(statistics.median(v if v is not None else float("inf") for v in values))


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or a == float("inf") or b == float("inf"):
        return "–"
    return f"{a / b:.2f}×"


def report(trials: list[Trial], faults: Sequence[Fault]) -> str:
    by: dict[tuple[Fault, str], list[Trial]] = {}
    for t in trials:
        by.setdefault((t.fault, t.contestant), []).append(t)
    lines = [
        "| fault | measure | remediator | monit | no remediation | remediator / monit |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for fault in faults:
        cap = CAP_MASTER if fault is Fault.MASTER else CAP
        what = "proper master again" if fault is Fault.MASTER else "fault → 200 for good"
        times = {c: [t.recovered for t in by.get((fault, c), [])] for c in CONTESTANTS}
        fails = {c: [t.failed for t in by.get((fault, c), [])] for c in CONTESTANTS}
        r_t, m_t = _median_time(times["remediator"]), _median_time(times["monit"])
        r_f = statistics.median(fails["remediator"]) if fails["remediator"] else None
        m_f = statistics.median(fails["monit"]) if fails["monit"] else None
        lines.append(
            f"| {LABELS[fault]} | {what} | "
            + " | ".join(_fmt_time(times[c], cap) for c in CONTESTANTS)
            + f" | {_ratio(r_t, m_t)} |"
        )
        lines.append(
            "|  | failed requests | "
            + " | ".join(_fmt_count(fails[c]) for c in CONTESTANTS)
            + f" | {_ratio(r_f, m_f)} |"
        )
    return "\n".join(lines)


def breakdown(trials: list[Trial], faults: Sequence[Fault]) -> str:
    """Per fault, the remediator's medians: detection, its first action, recovery."""
    lines = [
        "| fault | playbook(s) | fault → incident opened | actions (trials) | first action |"
        " fault → recovered | trials with more incidents / a breaker opened |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for fault in faults:
        ts = [t for t in trials if t.fault is fault and t.contestant == "remediator"]
        opened = [t for t in ts if "detect_ms" in t.detail]
        if not opened:
            lines.append(f"| {LABELS[fault]} | none triggered | – | – | – | – | – |")
            continue
        detect = statistics.median(t.detail["detect_ms"] for t in opened)
        first = [t.detail["action_ms"][0] for t in opened if t.detail.get("action_ms")]
        kinds: dict[str, int] = {}
        for t in opened:
            key = " → ".join(t.detail.get("actions", [])) or "none"
            kinds[key] = kinds.get(key, 0) + 1
        playbooks = sorted({str(t.detail.get("playbook")) for t in opened})
        rec = _median_time([t.recovered for t in ts])
        more = sum(1 for t in opened if t.detail.get("incidents", 0) > 1)
        breakers = sum(1 for t in opened if t.detail.get("breakers_opened", 0) > 0)
        lines.append(
            f"| {LABELS[fault]} | {', '.join(playbooks)} | {detect:.0f} ms | "
            + "; ".join(f"{k} ({n})" for k, n in kinds.items())
            + " | "
            + (f"{statistics.median(first):.0f} ms" if first else "–")
            + " | "
            + ("never" if rec is None or rec == float("inf") else f"{rec * 1000:.0f} ms")
            + f" | {more} / {breakers} of {len(opened)} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def _schedule(
    faults: Sequence[Fault], reps: int, baseline_reps: int, rng: random.Random
) -> Iterator[tuple[Fault, str]]:
    for rep in range(max(reps, baseline_reps)):
        for fault in faults:
            names = [c for c in CONTESTANTS if rep < (baseline_reps if c == "none" else reps)]
            rng.shuffle(names)
            for name in names:
                yield fault, name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_mttr")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--baseline-reps", type=int, default=BASELINE_REPS)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--only", default=",".join(f.value for f in Fault))
    parser.add_argument("--quick", action="store_true", help="2 reps, 1 baseline rep")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle CPU/RSS figures")
    parser.add_argument("--json", type=Path, help="also write every trial to this file")
    args = parser.parse_args(argv)
    faults = [Fault(f.strip()) for f in args.only.split(",") if f.strip()]
    reps, baseline_reps = (2, 1) if args.quick else (args.reps, args.baseline_reps)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)  # noqa: S311 - offsets and order, not secrets
    for tool in ("monit", PHP_FPM, "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: cannot run this benchmark", file=sys.stderr)
            return 1
    reaper = Reaper()
    started = time.monotonic()
    trials: list[Trial] = []
    errors = 0
    try:
        for fault, name in _schedule(faults, reps, baseline_reps, rng):
            try:
                trial = run_trial(fault, name, reaper, rng)
            except (StackError, RuntimeError, OSError) as exc:  # one bad trial, not the run
                errors += 1
                print(f"  {fault.value:<10} {name:<10} FAILED: {exc}", file=sys.stderr, flush=True)
                continue
            trials.append(trial)
            rec = "never" if trial.recovered is None else f"{trial.recovered:.3f}s"
            print(
                f"  {fault.value:<10} {name:<10} offset {trial.offset:.2f}s -> {rec:>8}, "
                f"failed {trial.failed}/{trial.sent}"
                + (
                    f" (before the fault: {trial.pre_fault_failed})"
                    if trial.pre_fault_failed
                    else ""
                )
                + (f" {trial.detail}" if trial.detail else ""),
                file=sys.stderr,
                flush=True,
            )
        idle = {} if args.no_idle else measure_idle(reaper)
    finally:
        reaper.close()
    elapsed = time.monotonic() - started
    print(report(trials, faults))
    print(
        f"\nMedian (min–max) over {reps} trials per contestant and fault ({baseline_reps} "
        f"without remediation), ~{RATE:g} req/s keep-alive from {THREADS} paced threads, "
        f"client timeout {CLIENT_TIMEOUT:g} s; cap {CAP:g} s ({CAP_MASTER:g} s for (d)). "
        f"Seed {seed}; {elapsed:.0f} s in all; {reaper.reaped} dead daemons reaped by the harness."
    )
    print("\nWhere remediator's time goes (medians):\n")
    print(breakdown(trials, faults))
    cpu = {
        c: [t.cpu_under_load for t in trials if t.contestant == c and t.cpu_under_load is not None]
        for c in ("remediator", "monit")
    }
    print("\nCost:\n")
    print("| | remediator | monit |\n|---|---:|---:|")
    if idle:
        print(
            f"| CPU, stack idle, one probe/check a second ({IDLE_SECONDS:g} s) | "
            f"{idle['remediator']['cpu_pct']:.2f} % | {idle['monit']['cpu_pct']:.2f} % |"
        )
        print(
            f"| RSS | {idle['remediator']['rss_mib']:.1f} MiB | {idle['monit']['rss_mib']:.1f} MiB |"
        )
    if cpu["remediator"] and cpu["monit"]:
        print(
            f"| CPU under {RATE:g} req/s (warm-up, median) | "
            f"{statistics.median(cpu['remediator']):.1f} % | {statistics.median(cpu['monit']):.1f} % |"
        )
    print("\nCPU: % of one core (user + system of the process).")
    if errors:
        print(f"\n{errors} trial(s) could not run (see stderr); they are left out above.")
    if args.json:
        args.json.write_text(
            json.dumps(
                [t.__dict__ | {"fault": t.fault.value} for t in trials], indent=1, default=str
            )
        )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
