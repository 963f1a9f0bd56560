"""Real nginx, PHP-FPM and Apache on loopback, each private to a temp directory.

Every instance gets its own directory (config, pid file, logs, sockets, temp paths), listens on a
free high port on 127.0.0.1, and is ended only through the processes it started: its master's PID
and the process group(s) that master leads (PHP-FPM, nginx and Apache all call ``setsid`` when they
daemonize, so their workers' process group is the master's PID). Nothing here touches
``/etc/nginx``, ``/var/log/*`` or a system service. See ``/work/shared/TESTBED.md`` for how the
real failures look; ``tests/test_stack.py`` checks that this bed reproduces them.

PID 1 on these machines reaps orphans slowly, so a killed daemon stays a zombie for seconds: every
"is it alive" question here asks psutil for a status other than zombie, never ``kill -0``.

Also here: :func:`http_get` (one quick request) and :class:`LoadGenerator` (paced keep-alive load
that records every request's send time and status), used by end-to-end tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import http.client
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Self, TypeVar
from urllib.parse import urlsplit

import psutil

from tests.closing import Closing

PHP_FPM = "php-fpm8.2"
NGINX = "nginx"
APACHE = "apache2"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
# Exactly these: unixd and log_config are built into Debian's apache2, loading them is an error.
APACHE_LOAD = ("mpm_event", "authz_core", "mime", "dir", "status", "proxy", "proxy_fcgi")

# The access-log format the project's parsers are written against (TESTBED.md, "timed").
TIMED_LOG_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" '
    "rt=$request_time us=$upstream_status urt=$upstream_response_time"
)

_PORT_ATTEMPTS = 6
_POLL = 0.005

# The docroot every instance serves. Query parameters make each script's behaviour adjustable.
LOCK = "hang.lock"  # in the docroot: see lock.php
PHP_SCRIPTS: Mapping[str, str] = {
    "index.php": '<?php\necho "ok\\n";\n',
    # slow.php?s=2.5 sleeps that many seconds (a busy worker), then answers.
    "slow.php": (
        "<?php\n$s = (float)($_GET['s'] ?? 1);\nusleep((int)($s * 1000000));\n"
        'echo "slept $s\\n";\n'
    ),
    # crash.php: the worker SIGKILLs itself before any output (502, "exited on signal 9");
    # crash.php?flushed=1 sends headers and a body first (200 with a cut body).
    "crash.php": (
        "<?php\nif (!empty($_GET['flushed'])) {\n    echo str_repeat('x', 65536);\n"
        "    flush();\n    usleep(50000);\n}\nposix_kill(getmypid(), 9);\n"
    ),
    # big.php?kb=512 answers that many KiB.
    "big.php": (
        "<?php\n$kb = (int)($_GET['kb'] ?? 256);\n"
        "header('Content-Type: application/octet-stream');\n"
        "echo str_repeat(str_repeat('b', 1023) . \"\\n\", $kb);\n"
    ),
    # code.php?c=500 answers with that HTTP status (an application error, not a gateway one).
    "code.php": (
        "<?php\n$c = (int)($_GET['c'] ?? 500);\nhttp_response_code($c);\necho \"code $c\\n\";\n"
    ),
    # mem.php?mb=64 holds that much memory for s seconds (default 0), to grow a worker's RSS.
    "mem.php": (
        "<?php\n$mb = (int)($_GET['mb'] ?? 32);\n$s = (float)($_GET['s'] ?? 0);\n"
        "$x = str_repeat('m', $mb * 1048576);\nusleep((int)($s * 1000000));\n"
        'echo strlen($x), "\\n";\n'
    ),
    # pid.php tells which worker answered.
    "pid.php": '<?php\necho getmypid(), "\\n";\n',
    # lock.php waits for a shared lock on hang.lock beside it: while a test holds an exclusive
    # one (LOCK), every worker that takes this request is blocked in PHP (a real hang).
    "lock.php": (
        "<?php\n$f = fopen(__DIR__ . '/hang.lock', 'r');\nflock($f, LOCK_SH);\n"
        'echo "unlocked\\n";\n'
    ),
}


class StackError(RuntimeError):
    """A server of the bed did not start, stop or answer as expected."""


class CommandResult(NamedTuple):
    """Exit status and combined stdout+stderr of a server's own command (``-t``, start…)."""

    rc: int
    output: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


# ---------------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a conflict)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:``port`` now (with SO_REUSEADDR, as they do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def make_workdir(prefix: str = "remediator-stack-") -> Path:
    """A fresh directory under the system temp dir, traversable by ``nobody`` (the workers)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def write_docroot(path: Path) -> Path:
    """Write :data:`PHP_SCRIPTS` into ``path`` (created), readable by ``nobody``."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    for name, text in PHP_SCRIPTS.items():
        script = path / name
        script.write_text(text)
        script.chmod(0o644)
    return path


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = _POLL) -> None:
    """Poll ``cond`` until it holds; raise :class:`StackError` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def is_alive(proc: psutil.Process | int | None) -> bool:
    """Running and not a zombie (a dead daemon here waits seconds for PID 1 to reap it)."""
    if proc is None:
        return False
    try:
        p = proc if isinstance(proc, psutil.Process) else psutil.Process(proc)
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members: list[psutil.Process] = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def kill_group(pgid: int, names: Iterable[str], sig: int = signal.SIGKILL) -> bool:
    """Signal process group ``pgid``, but only if one of its live members is named in ``names``.

    The check guards against a reused number: a group ID is free again once its last member is
    gone. Returns whether a signal was sent.
    """
    wanted = set(names)
    members = group_members(pgid)
    try:
        if not any(_name(p) in wanted for p in members):
            return False
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_gone(procs: Iterable[psutil.Process], timeout: float, what: str) -> None:
    """Wait until every process in ``procs`` is dead or a zombie."""
    pending = list(procs)
    wait_for(lambda: not any(is_alive(p) for p in pending), timeout, what)


def can_connect_unix(path: Path, timeout: float = 0.2) -> bool:
    """Whether a stream connection to unix socket ``path`` is accepted (or at least queued)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def listens_on(proc: psutil.Process, port: int) -> bool:
    """Whether ``proc`` holds a listening TCP socket on 127.0.0.1:``port``."""
    try:
        conns = proc.net_connections(kind="tcp4")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


def tail(path: Path, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a (log) file, or a note that it is missing."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode(errors="replace")
    except OSError as exc:
        return f"<{exc.strerror}>"


def read_text(path: Path) -> str:
    """A log file's text ('' when it does not exist yet)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _process(pid: int | None) -> psutil.Process | None:
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return None
    return proc if is_alive(proc) else None


def _run(argv: list[str], timeout: float = 30.0) -> CommandResult:
    """Run a server command, its output to a file: a daemon must never hold our pipe open."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        out.seek(0)
        return CommandResult(proc.returncode, out.read().decode(errors="replace"))


def _run_as_root() -> bool:
    return os.geteuid() == 0


def _nobody() -> tuple[str, str]:
    """User and group names for workers when we run as root (Debian: nobody / nogroup)."""
    pw = pwd.getpwnam("nobody")
    return pw.pw_name, grp.getgrgid(pw.pw_gid).gr_name


def _fmt_seconds(value: float) -> str:
    """nginx time: milliseconds are fine."""
    return f"{int(value * 1000)}ms"


def _fpm_seconds(value: float) -> str:
    """PHP-FPM time: whole seconds only (``500ms`` would read as 500 s), at least 1."""
    return f"{max(1, round(value))}s"


# ---------------------------------------------------------------------------------------------
# servers


class _Server(Closing):
    """What the three servers share: a work directory, the docroot, and their processes.

    Processes are found through the process groups of *our* masters: live session leaders of
    the server's binary whose command line names our config file. A group with no live member
    left is forgotten at once, so a recycled number (pid_max is 32768 here) is never signalled.
    """

    label = "server"
    NAMES: frozenset[str] = frozenset()
    conf: Path
    pid_file: Path

    def __init__(self, workdir: Path | None, docroot: Path | None) -> None:
        self._own_dir = workdir is None
        self.dir = make_workdir(f"remediator-{self.label}-") if workdir is None else workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.docroot = docroot if docroot is not None else write_docroot(self.dir / "www")
        self._pgids: set[int] = set()

    def logs(self) -> dict[str, Path]:
        """Log files worth showing when a test fails."""
        return {}

    # -- processes

    def master_pid(self) -> int | None:
        """The PID in the pid file (it may name a dead master)."""
        return _read_pid(self.pid_file)

    def master(self) -> psutil.Process | None:
        """The live master named by the pid file, if it is really ours."""
        proc = _process(self.master_pid())
        if proc is None or not self._is_our_master(proc):
            return None
        self._pgids.add(proc.pid)
        return proc

    def is_running(self) -> bool:
        return self.master() is not None

    def _is_our_master(self, proc: psutil.Process) -> bool:
        try:
            return (
                proc.name() in self.NAMES
                and os.getpgid(proc.pid) == proc.pid
                and str(self.conf) in " ".join(proc.cmdline())
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except (OSError, psutil.Error):
            return False

    def _members(self) -> list[psutil.Process]:
        """Every live process of this instance, orphans of a killed master included."""
        self.master()
        candidates: list[tuple[psutil.Process, int]] = []
        for proc in psutil.process_iter():
            try:
                if proc.name() not in self.NAMES or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                pgid = os.getpgid(proc.pid)
            except (OSError, psutil.Error):
                continue
            if pgid == proc.pid and pgid not in self._pgids and self._is_our_master(proc):
                self._pgids.add(pgid)  # e.g. a master the pid file does not name (yet)
            candidates.append((proc, pgid))
        members = [proc for proc, pgid in candidates if pgid in self._pgids]
        self._pgids.intersection_update(pgid for _, pgid in candidates)
        return members

    def _kill_everything(self, timeout: float) -> None:
        members = self._members()
        for pgid in list(self._pgids):
            kill_group(pgid, self.NAMES)
        for proc in members:  # a member that left the group
            with contextlib.suppress(psutil.Error):
                proc.kill()
        wait_gone(members, timeout, f"{self.label} processes to die")

    def cleanup(self) -> None:
        """SIGKILL every process group this instance had (orphans too); remove its directory."""
        with contextlib.suppress(StackError):
            for _ in range(3):
                if not self._members():
                    break
                self._kill_everything(5.0)
        self._remove_dir()

    def _remove_dir(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        self.cleanup()


class PhpFpm(_Server):
    """A private PHP-FPM master with one pool ``www`` on a unix socket.

    The pool lives in its own file (``pool_file``, included from ``conf``) so a test can edit a
    real ``pm.max_children`` line with :meth:`set_pool_option` and reload.
    """

    label = "fpm"
    NAMES = frozenset({PHP_FPM})

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        docroot: Path | None = None,
        pm: str = "static",
        max_children: int = 2,
        start_servers: int | None = None,
        min_spare_servers: int | None = None,
        max_spare_servers: int | None = None,
        process_idle_timeout: float = 10.0,
        max_requests: int = 0,
        listen_backlog: int | None = None,
        request_terminate_timeout: float | None = None,
        process_control_timeout: float | None = None,
        slowlog_timeout: float | None = None,
        log_level: str = "notice",
        extra_pool: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, docroot)
        self.conf = self.dir / "php-fpm.conf"
        self.pool_file = self.dir / "pool.d" / "www.conf"
        self.pid_file = self.dir / "php-fpm.pid"
        self.error_log = self.dir / "php-fpm.log"
        self.slowlog = self.dir / "php-fpm-slow.log"
        self.php_error_log = self.dir / "php-errors.log"
        self.socket = self.dir / "php-fpm.sock"
        self.pm = pm
        self.max_children = max_children
        self.start_servers = start_servers
        self.min_spare_servers = min_spare_servers
        self.max_spare_servers = max_spare_servers
        self.process_idle_timeout = process_idle_timeout
        self.max_requests = max_requests
        self.listen_backlog = listen_backlog
        self.request_terminate_timeout = request_terminate_timeout
        self.process_control_timeout = process_control_timeout
        self.slowlog_timeout = slowlog_timeout
        self.log_level = log_level
        self.extra_pool = dict(extra_pool or {})
        self.write_config()

    # -- configuration

    def write_config(self) -> None:
        """(Re)write ``conf`` and ``pool_file`` from the attributes."""
        lines = [
            "[global]",
            f"pid = {self.pid_file}",
            f"error_log = {self.error_log}",
            f"log_level = {self.log_level}",
            "daemonize = yes",
        ]
        if self.process_control_timeout is not None:
            lines.append(f"process_control_timeout = {_fpm_seconds(self.process_control_timeout)}")
        lines.append(f"include = {self.pool_file}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.pool_file.parent.mkdir(exist_ok=True)
        self.pool_file.write_text(self._pool_text())

    def _pool_text(self) -> str:
        opts: dict[str, str] = {}
        if _run_as_root():
            opts["user"], opts["group"] = _nobody()
        opts["listen"] = str(self.socket)
        opts["listen.mode"] = "0666"
        if self.listen_backlog is not None:
            opts["listen.backlog"] = str(self.listen_backlog)
        opts["pm"] = self.pm
        opts["pm.max_children"] = str(self.max_children)
        if self.pm == "dynamic":
            start = self.start_servers or max(1, self.max_children // 2)
            opts["pm.start_servers"] = str(start)
            opts["pm.min_spare_servers"] = str(self.min_spare_servers or 1)
            opts["pm.max_spare_servers"] = str(self.max_spare_servers or max(start, 1))
        if self.pm == "ondemand":
            opts["pm.process_idle_timeout"] = _fpm_seconds(self.process_idle_timeout)
        opts["pm.max_requests"] = str(self.max_requests)
        opts["pm.status_path"] = "/fpm-status"
        opts["ping.path"] = "/fpm-ping"
        opts["catch_workers_output"] = "yes"
        opts["decorate_workers_output"] = "no"
        if self.request_terminate_timeout is not None:
            opts["request_terminate_timeout"] = _fpm_seconds(self.request_terminate_timeout)
        if self.slowlog_timeout is not None:
            opts["slowlog"] = str(self.slowlog)
            opts["request_slowlog_timeout"] = _fpm_seconds(self.slowlog_timeout)
        opts["php_admin_value[error_log]"] = str(self.php_error_log)
        opts["php_admin_flag[log_errors]"] = "on"
        opts.update(self.extra_pool)
        return "[www]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items())

    def pool_option(self, key: str) -> str | None:
        """The value of ``key`` in the real pool file, as written there now."""
        for line in self.pool_file.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() == key:
                return value.strip()
        return None

    def set_pool_option(self, key: str, value: str) -> None:
        """Replace (or append) ``key = value`` in the real pool file; the running FPM is untouched."""
        lines = self.pool_file.read_text().splitlines()
        for i, line in enumerate(lines):
            name, sep, _ = line.partition("=")
            if sep and name.strip() == key:
                lines[i] = f"{key} = {value}"
                break
        else:
            lines.append(f"{key} = {value}")
        self.pool_file.write_text("\n".join(lines) + "\n")

    def test_config(self) -> CommandResult:
        """``php-fpm8.2 -t -y CONF`` (a bad config: rc 78)."""
        return _run([PHP_FPM, "-t", "-y", str(self.conf)])

    # -- processes

    def worker_pids(self) -> list[int]:
        """Live workers, including orphans whose master was killed."""
        return sorted(p.pid for p in self._members() if not _is_group_leader(p))

    def _conf_processes(self) -> list[psutil.Process]:
        """Live processes of our binary whose command line names our config (re-exec, start)."""
        conf = str(self.conf)
        found: list[psutil.Process] = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if (
                    proc.name() in self.NAMES
                    and conf in " ".join(proc.cmdline())
                    and is_alive(proc)
                ):
                    found.append(proc)
        return found

    def ping(self) -> bool:
        """Whether the pool's socket accepts a connection."""
        return can_connect_unix(self.socket)

    def start(self, timeout: float = 10.0, *, check: bool = True) -> CommandResult:
        """``php-fpm8.2 -y CONF``: it daemonizes and returns when ready; then wait for the socket.

        With ``check=False`` a failed start is returned (e.g. rc 70, ``Another FPM instance``).
        """
        result = _run([PHP_FPM, "-y", str(self.conf)], timeout=timeout)
        if not result.ok:
            if check:
                raise StackError(f"php-fpm start failed rc={result.rc}: {result.output}")
            return result
        wait_for(lambda: self.master() is not None and self.ping(), timeout, "php-fpm socket")
        return result

    def _signal_master(self, sig: int) -> psutil.Process:
        master = self.master()
        if master is None:
            raise StackError("php-fpm master is not running")
        master.send_signal(sig)
        return master

    def reload(self, timeout: float = 10.0) -> bool:
        """SIGUSR2 (graceful reload, the master re-execs: its PID changes); wait until ready.

        Returns False when PHP-FPM is gone afterwards (as it is after a bad config).
        """
        marker = "ready to handle connections"
        before = read_text(self.error_log).count(marker)
        old = self._signal_master(signal.SIGUSR2)

        def settled() -> bool:
            if read_text(self.error_log).count(marker) > before:
                return self.master() is not None and self.ping()
            return not is_alive(old) and self.master() is None and not self._conf_processes()

        wait_for(settled, timeout, "php-fpm reload")
        return self.is_running()

    def stop(self, timeout: float = 10.0, *, graceful: bool = False) -> None:
        """Clean stop: SIGTERM (SIGQUIT when ``graceful``); FPM removes its socket."""
        master = self._signal_master(signal.SIGQUIT if graceful else signal.SIGTERM)
        wait_gone([master], timeout, "php-fpm master to exit")
        wait_for(lambda: not self._members(), timeout, "php-fpm workers to exit")

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL the master and its process group; the socket file is left behind."""
        self._kill_everything(timeout)

    def kill_master_only(self, timeout: float = 5.0) -> list[int]:
        """SIGKILL only the master: orphan workers keep the socket and keep serving.

        Returns the orphans' PIDs: the workers the master had when it was killed (a daemon
        that sees the death by its pidfd may have ended them before this returns).
        """
        workers = self.worker_pids()
        master = self._signal_master(signal.SIGKILL)
        wait_gone([master], timeout, "php-fpm master to die")
        return workers

    def stop_workers(self) -> list[int]:
        """SIGSTOP every worker (a hang: the socket still accepts, nobody answers)."""
        return self._signal_workers(signal.SIGSTOP)

    def cont_workers(self) -> list[int]:
        """SIGCONT every worker."""
        return self._signal_workers(signal.SIGCONT)

    def _signal_workers(self, sig: int) -> list[int]:
        pids: list[int] = []
        for proc in self._members():
            if not _is_group_leader(proc):
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)  # psutil checks the PID was not recycled
                    pids.append(proc.pid)
        return sorted(pids)

    def logs(self) -> dict[str, Path]:
        return {"php-fpm log": self.error_log, "php errors": self.php_error_log}


def _is_group_leader(proc: psutil.Process) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except OSError:
        return False


class _TcpServer(_Server):
    """A daemon with a master, a pid file and a port on 127.0.0.1."""

    def __init__(self, workdir: Path | None, docroot: Path | None, port: int | None) -> None:
        super().__init__(workdir, docroot)
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.pid_file = self.dir / f"{self.label}.pid"

    def url(self, path: str = "/index.php") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        master = self.master()
        if master is None:
            return []
        try:
            children = master.children()
        except psutil.Error:
            return []
        return sorted(c.pid for c in children if is_alive(c))

    def write_config(self) -> None:
        raise NotImplementedError

    def _start_once(self, timeout: float) -> CommandResult:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> CommandResult:
        """Start, wait until the master listens on ``port``; on a port conflict pick another."""
        if self.is_running():
            raise StackError(f"{self.label} is already running")
        result = CommandResult(1, "not started")
        for _ in range(_PORT_ATTEMPTS):
            self.pid_file.unlink(missing_ok=True)  # stale after a kill; the new master rewrites it
            # A quick check first: nginx itself retries a busy port for 2.5 s before failing.
            if port_is_free(self.port):
                result = self._start_once(timeout)
            else:
                result = CommandResult(1, f"127.0.0.1:{self.port}: Address already in use")
            if result.ok:
                wait_for(self._listening, timeout, f"{self.label} on port {self.port}")
                return result
            if self._fixed_port or "Address already in use" not in result.output:
                raise StackError(f"{self.label} start failed rc={result.rc}: {result.output}")
            self.port = free_port()
            self.write_config()
        raise StackError(
            f"{self.label}: no free port after {_PORT_ATTEMPTS} tries: {result.output}"
        )

    def _listening(self) -> bool:
        master = self.master()
        return master is not None and listens_on(master, self.port)

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL the master and its process group."""
        self._kill_everything(timeout)

    def _stop_with_signal(self, sig: int, timeout: float) -> None:
        master = self.master()
        if master is None:
            raise StackError(f"{self.label} is not running")
        master.send_signal(sig)
        wait_gone([master], timeout, f"{self.label} master to exit")
        wait_for(lambda: not self._members(), timeout, f"{self.label} workers to exit")


class Nginx(_TcpServer):
    """A private nginx on 127.0.0.1:``port`` passing ``*.php`` to a FastCGI upstream.

    ``upstream`` is an nginx ``fastcgi_pass`` address (``unix:/path`` or ``127.0.0.1:9000``);
    by default the ``fpm`` instance's socket. ``/fpm-status`` and ``/fpm-ping`` go to PHP-FPM,
    ``/nginx-status`` is stub_status. The access log uses :data:`TIMED_LOG_FORMAT`.
    """

    label = "nginx"
    NAMES = frozenset({NGINX})
    TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        fpm: PhpFpm | None = None,
        upstream: str | None = None,
        port: int | None = None,
        docroot: Path | None = None,
        fastcgi_read_timeout: float = 60.0,
        fastcgi_connect_timeout: float = 5.0,
        worker_processes: int = 1,
        extra_server: str = "",
        extra_http: str = "",
    ) -> None:
        if upstream is None and fpm is None:
            raise ValueError("Nginx needs an fpm instance or an upstream address")
        super().__init__(
            workdir, docroot if docroot is not None or fpm is None else fpm.docroot, port
        )
        self.fpm = fpm
        self.upstream = upstream if upstream is not None else f"unix:{fpm.socket if fpm else ''}"
        self.conf = self.dir / "nginx.conf"
        self.error_log = self.dir / "nginx-error.log"
        self.access_log = self.dir / "nginx-access.log"
        self.fastcgi_read_timeout = fastcgi_read_timeout
        self.fastcgi_connect_timeout = fastcgi_connect_timeout
        self.worker_processes = worker_processes
        self.extra_server = extra_server
        self.extra_http = extra_http
        self._good_config: str | None = None
        self.write_config()

    def write_config(self) -> None:
        """(Re)write ``conf`` from the attributes."""
        d = self.dir
        user = "user {} {};\n".format(*_nobody()) if _run_as_root() else ""
        temps = "".join(
            f"    {name}_temp_path {d / (name + '_temp')};\n" for name in self.TEMP_PATHS
        )
        fcgi = (
            f"            fastcgi_pass {self.upstream};\n"
            f"            include {d / 'fastcgi_params'};\n"
            f"            fastcgi_read_timeout {_fmt_seconds(self.fastcgi_read_timeout)};\n"
            f"            fastcgi_connect_timeout {_fmt_seconds(self.fastcgi_connect_timeout)};\n"
        )
        (d / "fastcgi_params").write_text(_FASTCGI_PARAMS)
        self.conf.write_text(
            f"{user}worker_processes {self.worker_processes};\n"
            f"pid {self.pid_file};\n"
            f"error_log {self.error_log} notice;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            f"    log_format timed '{TIMED_LOG_FORMAT}';\n"
            f"    access_log {self.access_log} timed;\n"
            f"{temps}"
            "    default_type application/octet-stream;\n"
            "    keepalive_requests 1000000;\n"
            f"{self.extra_http}"
            "    server {\n"
            f"        listen 127.0.0.1:{self.port};\n"
            "        server_name localhost;\n"
            f"        root {self.docroot};\n"
            "        index index.php;\n"
            "        location = /nginx-status { stub_status; access_log off; }\n"
            "        location ~ ^/(fpm-status|fpm-ping)$ {\n"
            f"{fcgi}"
            "        }\n"
            "        location ~ \\.php$ {\n"
            "            try_files $uri =404;\n"
            f"{fcgi}"
            "        }\n"
            f"{self.extra_server}"
            "    }\n"
            "}\n"
        )
        self._good_config = None

    def _base_argv(self) -> list[str]:
        return [NGINX, "-c", str(self.conf), "-e", str(self.error_log)]

    def test_config(self) -> CommandResult:
        """``nginx -t -c CONF -e ERRLOG``."""
        return _run([*self._base_argv(), "-t"])

    def _start_once(self, timeout: float) -> CommandResult:
        return _run(self._base_argv(), timeout=timeout)

    def reload(self, timeout: float = 10.0) -> CommandResult:
        """``nginx -s reload`` (refuses a bad config itself: rc 1, no signal sent).

        After a successful reload, wait until a new worker is up.
        """
        before = set(self.worker_pids())
        result = _run([*self._base_argv(), "-s", "reload"])
        if result.ok:
            wait_for(lambda: bool(set(self.worker_pids()) - before), timeout, "nginx new workers")
        return result

    def stop(self, timeout: float = 10.0, *, graceful: bool = False) -> None:
        """SIGTERM (fast) or SIGQUIT (graceful) to the master; wait for all to exit."""
        self._stop_with_signal(signal.SIGQUIT if graceful else signal.SIGTERM, timeout)

    def break_config(self) -> None:
        """Write a syntax error into the real config (``restore_config`` undoes it)."""
        text = self.conf.read_text()
        if self._good_config is None:
            self._good_config = text
        self.conf.write_text(text + "remediator_bogus_directive on;\n")

    def restore_config(self) -> None:
        if self._good_config is not None:
            self.conf.write_text(self._good_config)
            self._good_config = None

    def logs(self) -> dict[str, Path]:
        return {"nginx error log": self.error_log, "nginx access log": self.access_log}


_FASTCGI_PARAMS = """\
fastcgi_param QUERY_STRING $query_string;
fastcgi_param REQUEST_METHOD $request_method;
fastcgi_param CONTENT_TYPE $content_type;
fastcgi_param CONTENT_LENGTH $content_length;
fastcgi_param SCRIPT_NAME $fastcgi_script_name;
fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
fastcgi_param REQUEST_URI $request_uri;
fastcgi_param DOCUMENT_URI $document_uri;
fastcgi_param DOCUMENT_ROOT $document_root;
fastcgi_param SERVER_PROTOCOL $server_protocol;
fastcgi_param REQUEST_SCHEME $scheme;
fastcgi_param GATEWAY_INTERFACE CGI/1.1;
fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
fastcgi_param REMOTE_ADDR $remote_addr;
fastcgi_param REMOTE_PORT $remote_port;
fastcgi_param SERVER_ADDR $server_addr;
fastcgi_param SERVER_PORT $server_port;
fastcgi_param SERVER_NAME $server_name;
fastcgi_param REDIRECT_STATUS 200;
"""


class Apache(_TcpServer):
    """A private Apache (event MPM) on 127.0.0.1:``port``, ``*.php`` via proxy_fcgi to PHP-FPM.

    ``/server-status`` is mod_status. The access log ends with ``%D`` (microseconds).
    """

    label = "apache"
    NAMES = frozenset({APACHE})

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        fpm: PhpFpm | None = None,
        socket_path: Path | None = None,
        port: int | None = None,
        docroot: Path | None = None,
        server_limit: int = 16,
        threads_per_child: int = 25,
        proxy_timeout: float = 60.0,
        extra: str = "",
    ) -> None:
        if socket_path is None and fpm is None:
            raise ValueError("Apache needs an fpm instance or a FastCGI socket path")
        super().__init__(
            workdir, docroot if docroot is not None or fpm is None else fpm.docroot, port
        )
        self.fpm = fpm
        self.socket_path = socket_path if socket_path is not None else fpm.socket if fpm else Path()
        self.conf = self.dir / "apache2.conf"
        self.error_log = self.dir / "apache-error.log"
        self.access_log = self.dir / "apache-access.log"
        self.mutex_dir = self.dir / "mutex"
        self.server_limit = server_limit
        self.threads_per_child = threads_per_child
        self.proxy_timeout = proxy_timeout
        self.extra = extra
        self.write_config()

    def write_config(self) -> None:
        """(Re)write ``conf`` from the attributes."""
        self.mutex_dir.mkdir(exist_ok=True)
        mods = "".join(
            f"LoadModule {m}_module {APACHE_MODULES / f'mod_{m}.so'}\n" for m in APACHE_LOAD
        )
        user = "User {}\nGroup {}\n".format(*_nobody()) if _run_as_root() else ""
        workers = self.server_limit * self.threads_per_child
        self.conf.write_text(
            f'ServerRoot "{self.dir}"\n'
            f"{mods}"
            "ServerName localhost\n"
            f"Listen 127.0.0.1:{self.port}\n"
            f"PidFile {self.pid_file}\n"
            f"Mutex file:{self.mutex_dir} default\n"
            f"ErrorLog {self.error_log}\n"
            "LogLevel warn\n"
            'LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\" \\"%{User-Agent}i\\" %D" timed\n'
            f"CustomLog {self.access_log} timed\n"
            f"{user}"
            f"ServerLimit {self.server_limit}\n"
            "StartServers 2\n"
            f"ThreadsPerChild {self.threads_per_child}\n"
            f"MaxRequestWorkers {workers}\n"
            "TypesConfig /etc/mime.types\n"
            f'DocumentRoot "{self.docroot}"\n'
            f'<Directory "{self.docroot}">\n    Require all granted\n</Directory>\n'
            "DirectoryIndex index.php\n"
            f"ProxyTimeout {max(1, int(self.proxy_timeout))}\n"
            '<FilesMatch "\\.php$">\n'
            f'    SetHandler "proxy:unix:{self.socket_path}|fcgi://localhost"\n'
            "</FilesMatch>\n"
            "<Location /server-status>\n    SetHandler server-status\n</Location>\n"
            f"{self.extra}"
        )

    def _base_argv(self) -> list[str]:
        return [APACHE, "-f", str(self.conf)]

    def test_config(self) -> CommandResult:
        """``apache2 -f CONF -t``."""
        return _run([*self._base_argv(), "-t"])

    def _start_once(self, timeout: float) -> CommandResult:
        offset = self.error_log.stat().st_size if self.error_log.exists() else 0
        result = _run([*self._base_argv(), "-k", "start"], timeout=timeout)
        if not result.ok:
            return result

        # The starter detaches before binding: the daemon writes its pid file once it listens,
        # or logs AH00015 and exits (a port conflict shows only in the error log).
        def new_log() -> str:
            return read_text(self.error_log)[offset:]

        wait_for(
            lambda: self.master() is not None or "AH00015" in new_log(),
            timeout,
            "apache to write its pid file",
        )
        if self.master() is None:
            return CommandResult(1, result.output + new_log())
        return result

    def graceful(self, timeout: float = 10.0) -> CommandResult:
        """``apache2 -f CONF -k graceful``; wait until new children are up."""
        before = set(self.worker_pids())
        result = _run([*self._base_argv(), "-k", "graceful"])
        if result.ok:
            wait_for(lambda: bool(set(self.worker_pids()) - before), timeout, "apache children")
        return result

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the master (what ``-k stop`` sends); wait for all to exit."""
        self._stop_with_signal(signal.SIGTERM, timeout)

    def logs(self) -> dict[str, Path]:
        return {"apache error log": self.error_log, "apache access log": self.access_log}


_S = TypeVar("_S", "PhpFpm", "Nginx", "Apache")


class Stack(Closing):
    """Servers started together and all killed by :meth:`cleanup` (front ends first).

    ``with Stack() as s: site = s.nginx(s.fpm())`` — each method takes the class's options and
    starts the server unless ``start=False``.
    """

    def __init__(self) -> None:
        self.servers: list[PhpFpm | Nginx | Apache] = []

    def fpm(self, *, start: bool = True, **options: Any) -> PhpFpm:
        return self._add(PhpFpm(**options), start)

    def nginx(self, fpm: PhpFpm | None = None, *, start: bool = True, **options: Any) -> Nginx:
        return self._add(Nginx(fpm=fpm, **options), start)

    def apache(self, fpm: PhpFpm | None = None, *, start: bool = True, **options: Any) -> Apache:
        return self._add(Apache(fpm=fpm, **options), start)

    def _add(self, server: _S, start: bool) -> _S:
        self.servers.append(server)
        if start:
            server.start()
        return server

    def cleanup(self) -> None:
        """Clean up every server, last started first, each even if another one fails."""
        with contextlib.ExitStack() as stack:
            for server in self.servers:  # ExitStack unwinds last-in first-out
                stack.callback(server.cleanup)

    def close(self) -> None:
        self.cleanup()


# ---------------------------------------------------------------------------------------------
# clients


def http_get(
    url: str, timeout: float = 2.0, headers: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """One GET on a fresh connection: (status, body). Connection errors propagate (OSError)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Sample:
    """One request of a load run: when it was sent (monotonic), its status, how long it took.

    ``status`` is 0 when no HTTP answer came (refused, reset, timed out); ``error`` says why.
    """

    t: float
    status: int
    latency: float
    error: str = ""


class LoadGenerator(Closing):
    """Paced keep-alive GETs from a few threads at a target total rate.

    Each thread sends on its own schedule (rate / threads per second, threads offset evenly);
    a late request is sent at once but missed slots are skipped, never bunched. A failed or
    closed connection is reopened for the next request.
    """

    def __init__(
        self,
        url: str,
        rate: float = 200.0,
        threads: int = 4,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if rate <= 0 or threads <= 0:
            raise ValueError("rate and threads must be positive")
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.rate = rate
        self.threads = threads
        self.timeout = timeout
        self.headers = dict(headers or {"User-Agent": "remediator-load"})
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._per_thread: list[list[Sample]] = []
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    def start(self) -> Self:
        if self._workers:
            raise RuntimeError("load generator already started")
        self.started_at = time.monotonic()
        interval = self.threads / self.rate
        for i in range(self.threads):
            samples: list[Sample] = []
            self._per_thread.append(samples)
            first = self.started_at + interval * i / self.threads
            worker = threading.Thread(
                target=self._loop, args=(first, interval, samples), name=f"load-{i}", daemon=True
            )
            self._workers.append(worker)
            worker.start()
        return self

    def stop(self, timeout: float | None = None) -> list[Sample]:
        """Stop sending, wait for requests in flight, return every sample in send order."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout if timeout is not None else self.timeout + 1.0)
        self.stopped_at = time.monotonic()
        return self.samples

    @property
    def samples(self) -> list[Sample]:
        """All samples so far, in send order (safe while running)."""
        return sorted(itertools.chain.from_iterable(list(s) for s in self._per_thread), key=_t)

    def statuses(self, since: float | None = None, until: float | None = None) -> Counter[int]:
        """Status counts of requests sent in [since, until)."""
        lo = float("-inf") if since is None else since
        hi = float("inf") if until is None else until
        return Counter(s.status for s in self.samples if lo <= s.t < hi)

    def wait_ok(self, count: int = 20, since: float | None = None, timeout: float = 10.0) -> None:
        """Wait until ``count`` requests sent at or after ``since`` got a 200: the load is
        flowing (before a fault), or has gone on for a while (after one)."""
        wait_for(
            lambda: self.statuses(since)[200] >= count, timeout, f"{count} x 200 under load", 0.01
        )

    def first_ok_after(
        self, t: float, ok: Callable[[int], bool] = lambda c: c == 200
    ) -> float | None:
        """Send time of the first request at or after ``t`` from which every later one is ok."""
        last_bad: float | None = None
        later = [s for s in self.samples if s.t >= t]
        for s in later:
            if not ok(s.status):
                last_bad = s.t
        good = [s.t for s in later if last_bad is None or s.t > last_bad]
        return good[0] if good else None

    def _loop(self, first: float, interval: float, out: list[Sample]) -> None:
        conn: http.client.HTTPConnection | None = None
        due = first
        while not self._stop.is_set():
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            sample, reusable = self._one(conn)
            out.append(sample)
            if not reusable:
                conn.close()
                conn = None
            # Late: skip the missed slots rather than send them in a burst.
            due = max(due + interval, time.monotonic())
        if conn is not None:
            conn.close()

    def _one(self, conn: http.client.HTTPConnection) -> tuple[Sample, bool]:
        """One request on ``conn``: its sample, and whether the connection can be reused."""
        sent = time.monotonic()
        try:
            conn.request("GET", self.path, headers=self.headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            return Sample(sent, 0, time.monotonic() - sent, _describe(exc)), False
        return Sample(sent, resp.status, time.monotonic() - sent), not resp.will_close

    def __enter__(self) -> Self:
        return self.start()

    def close(self) -> None:
        self.stop()


def _t(sample: Sample) -> float:
    return sample.t


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: {errno.errorcode.get(exc.errno, exc.errno)}"
    return type(exc).__name__


def find_log_line(path: Path, pattern: str, timeout: float = 2.0) -> str:
    """Wait until a line of ``path`` matches regex ``pattern``; return that line."""
    rx = re.compile(pattern)
    found: list[str] = []

    def seen() -> bool:
        for line in read_text(path).splitlines():
            if rx.search(line):
                found.append(line)
                return True
        return False

    wait_for(seen, timeout, f"/{pattern}/ in {path}", interval=0.02)
    return found[0]
