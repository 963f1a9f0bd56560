"""Whom a signal may reach: a pid file is untrusted input, and so is the process it names.

The directory of a pid file may be another user's (Debian's ``/run/php`` is www-data's): that
user can put anything at the path, a symlink to ``/dev/zero``, a FIFO, another master's PID.
So the file is opened without following a last symlink and without blocking, judged on the
open descriptor (a regular file, owned by root or the daemon's own user, not writable by group
or others), and at most :data:`MAX_PID_BYTES` bytes are read; the number must be a PID above 1.

The process it names is the service's master only if it is owned (real and effective uid) by
root or the daemon's own user, runs the service's program (``/proc/PID/exe``, which its owner
cannot change, unlike its name), names the service's config file on its command line when the
config file is known, and, for a systemd unit, sits in the unit's cgroup.

Every function here only looks; none follows a link a user may plant, none can block.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from remediator.config import Service
from remediator.filekind import kind_of

MAX_PID_BYTES: Final = 32
"""Bytes read from a pid file at most: a PID and a newline, with room to spare."""
PID_MAX: Final = 4_194_304  # the kernel's largest pid_max (2^22)
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_DELETED: Final = " (deleted)"  # /proc/PID/exe of a program replaced since (a package upgrade)
_CONFIG_FLAGS: Final = {
    "php-fpm": ("-y", "--fpm-config"),
    "nginx": ("-c",),
    "apache": ("-f",),
}


@dataclass(frozen=True)
class PidFileRead:
    """What a pid file said: a PID, nothing (absent or empty), or why it is not to be trusted."""

    pid: int | None
    problem: str = ""  # non-empty: the file cannot be trusted, and nothing it says is used
    absent: bool = False

    @property
    def untrusted(self) -> bool:
        return bool(self.problem)


def trusted_uids() -> frozenset[int]:
    """Who may own a master and its pid file: root, and the daemon's own user (a daemon that
    is not root can only signal its own processes anyway)."""
    return frozenset({0, os.geteuid()})


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def read_pid_file(path: Path, uids: frozenset[int] | None = None) -> PidFileRead:
    """Read ``path`` as untrusted input (see the module's docstring); never blocks, never
    reads more than :data:`MAX_PID_BYTES` bytes."""
    uids = trusted_uids() if uids is None else uids
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return PidFileRead(None, absent=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return PidFileRead(None, f"pid file {path} is a symbolic link")
        return PidFileRead(None, f"pid file {path} cannot be opened: {exc.strerror}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return PidFileRead(None, f"pid file {path} is {kind_of(st.st_mode)}")
        if st.st_uid not in uids:
            who = " or ".join(_user(u) for u in sorted(uids))
            return PidFileRead(None, f"pid file {path} is owned by {_user(st.st_uid)}, not {who}")
        if st.st_mode & 0o022:
            return PidFileRead(
                None, f"pid file {path} is writable by group or others (mode {st.st_mode:o})"
            )
        data = os.read(fd, MAX_PID_BYTES + 1)
    except OSError as exc:
        return PidFileRead(None, f"pid file {path} cannot be read: {exc.strerror}")
    finally:
        os.close(fd)
    if len(data) > MAX_PID_BYTES:
        return PidFileRead(None, f"pid file {path} holds more than {MAX_PID_BYTES} bytes")
    text = data.strip()
    if not text:
        return PidFileRead(None)  # being written (truncated, not yet filled): no PID yet
    if not text.isdigit():  # bytes.isdigit: ASCII digits only
        return PidFileRead(None, f"pid file {path} does not hold a number: {text[:16]!r}")
    pid = int(text)
    if pid <= 1 or pid > PID_MAX:
        return PidFileRead(None, f"pid file {path} names PID {pid}: never a service's master")
    return PidFileRead(pid)


# --- the process --------------------------------------------------------------------------------


def proc_uids(pid: int) -> tuple[int, int] | None:
    """The real and effective uid of ``pid`` (``/proc/PID/status``), or None when it is gone."""
    try:
        with Path(f"/proc/{pid}/status").open("rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    fields = line.split()
                    return int(fields[1]), int(fields[2])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_exe(pid: int) -> str | None:
    """The program ``pid`` runs (``/proc/PID/exe``, " (deleted)" taken off), or None."""
    try:
        exe = str(Path(f"/proc/{pid}/exe").readlink())
    except OSError:
        return None
    return exe.removesuffix(_DELETED)


def proc_cmdline(pid: int) -> str:
    """``pid``'s command line (its title, for servers that set one), NULs as spaces."""
    try:
        with Path(f"/proc/{pid}/cmdline").open("rb") as f:
            raw = f.read(64 * 1024)
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def proc_cgroups(pid: int) -> list[str] | None:
    """``pid``'s cgroups as systemd tracks them: the unified (v2) hierarchy's ``0::`` line
    and, on a legacy layout, the ``name=systemd`` one; None when it is gone."""
    out: list[str] = []
    try:
        with Path(f"/proc/{pid}/cgroup").open("rb") as f:
            for line in f:
                _, ctrl, path = line.rstrip(b"\n").split(b":", 2)
                if ctrl in (b"", b"name=systemd"):
                    out.append(path.decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None
    return out


def in_cgroup(pid: int, control_group: str) -> bool | None:
    """Whether ``pid`` is in ``control_group`` (a unit's ``ControlGroup``) or below it; None
    when that cannot be told (the process is gone)."""
    cgs = proc_cgroups(pid)
    if cgs is None:
        return None
    base = control_group.rstrip("/")
    return bool(base) and any(cg == base or cg.startswith(base + "/") for cg in cgs)


def names_program(kind: str, exe: str) -> bool:
    """Whether a program's path is one of ``kind``'s servers: php-fpm (any version), nginx,
    apache2 or httpd."""
    name = Path(exe).name
    if kind == "php-fpm":
        return name.startswith("php-fpm")
    if kind == "nginx":
        return name == "nginx"
    return name in ("apache2", "httpd")


@dataclass(frozen=True)
class MasterIdentity:
    """What the service's master must be: owner, program, config, cgroup."""

    kind: str
    uids: frozenset[int]
    program: str | None  # the exact path, when the start command runs the server itself
    config: str | None  # a config file its command line must name
    control_group: str | None = None  # systemd: the unit's cgroup

    @classmethod
    def of(cls, service: Service, control_group: str | None = None) -> MasterIdentity:
        return cls(
            service.kind,
            trusted_uids(),
            _program(service),
            _config(service),
            control_group,
        )

    def runs_program(self, pid: int) -> bool:
        """Whether ``pid`` runs the service's program (checked on ``/proc/PID/exe``)."""
        exe = proc_exe(pid)
        if exe is None:
            return False
        if self.program is not None:
            return exe == self.program
        return names_program(self.kind, exe)

    def problem(self, pid: int) -> str | None:
        """Why live process ``pid`` is not the service's master, or None when it is."""
        uids = proc_uids(pid)
        if uids is None:
            return f"process {pid} is gone"
        bad = [u for u in uids if u not in self.uids]
        if bad:
            return f"process {pid} runs as {_user(bad[0])}, not as root or the daemon's user"
        exe = proc_exe(pid)
        if exe is None:
            return f"the program of process {pid} cannot be read"
        if not self.runs_program(pid):
            want = self.program or f"a {self.kind} server"
            return f"process {pid} runs {exe}, not {want}"
        if self.config is not None and not _names(proc_cmdline(pid), self.config):
            return f"process {pid} is not started with {self.config} (another instance?)"
        if self.control_group is not None and in_cgroup(pid, self.control_group) is False:
            cg = ", ".join(proc_cgroups(pid) or ["?"])
            return f"process {pid} is in cgroup {cg}, outside {self.control_group}"
        return None


def _names(cmdline: str, path: str) -> bool:
    """Whether a command line names ``path`` as a word of its own (PHP-FPM's title puts it in
    parentheses: ``php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)``)."""
    rx = r"(?:^|[\s(=])" + re.escape(path) + r"(?:$|[\s)])"
    return re.search(rx, cmdline) is not None


def _program(service: Service) -> str | None:
    """The server's program as an absolute, resolved path, when ``start`` runs it directly
    (``php-fpm8.2 -y CONF``, ``nginx -c CONF``); None when it is a wrapper (``apachectl``,
    a script), so that only the program's name can be judged."""
    if not service.start:
        return None
    argv0 = service.start[0]
    found = argv0 if Path(argv0).is_absolute() else shutil.which(argv0)
    if found is None:
        return None
    real = str(Path(found).resolve())
    return real if names_program(service.kind, real) else None


def _config(service: Service) -> str | None:
    """The config file the master's command line names: the one the start command passes
    (``-y``/``--fpm-config``, ``-c``, ``-f``), else for PHP-FPM, whose title always names
    its config, ``config_file``. None when unknown: then another instance of the same program
    run by root cannot be told apart (give ``config_file``, or pass it in ``start``)."""
    argv = list(service.start or ())
    flags = _CONFIG_FLAGS.get(service.kind, ())
    for i, arg in enumerate(argv):
        if arg in flags and i + 1 < len(argv):
            return argv[i + 1]
        for flag in flags:
            if flag.startswith("--") and arg.startswith(flag + "="):
                return arg.partition("=")[2]
    if service.kind == "php-fpm" and service.config_file is not None:
        return str(service.config_file)
    return None
