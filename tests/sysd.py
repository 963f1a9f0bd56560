"""A real systemd 252 booted as PID 1 of fresh namespaces, for tests that need real units.

The recipe is TESTBED.md's: a boot script run as ``unshare --pid --fork --mount --uts --ipc --net
--kill-child`` with a private ``/dev``, ``/run``, ``/tmp`` and ``/var/log``, a read-only
``/proc/sys``, the host-touching units masked, a volatile journal, a minimal target and ``lo`` up.
**A systemd booted on the host's /tmp wipes it** (Debian's tmpfiles has ``D /tmp``): every one of
those steps matters.

cgroup2 is found wherever it is mounted (:func:`cgroup2_mount`): ``/sys/fs/cgroup`` on a pure
cgroup2 host (Debian 12's default), ``/sys/fs/cgroup/unified`` on a hybrid one. A fresh cgroup
``<root>/remediator-sysd-<pid>-<id>`` gets two children, because cgroup2 allows processes only in
leaves once controllers are enabled ("no internal processes"): ``supervisor`` holds ``unshare``
(outside the namespace, invisible to systemd) and ``payload`` is the root of the namespace's
cgroup namespace, with systemd alone in it, and every controller the host offers delegated to it.

Beyond the recipe, ``/etc`` and ``/var`` are overlays whose writes land in a tmpfs, so Debian's
units (``update-alternatives`` in php8.2-fpm's ``ExecStartPost``, state under ``/var/lib``) cannot
change the host's files; ``overlays`` may add ``usr``, for dpkg to install a package inside.
Paths given as ``binds`` (the work directory, and the repository and venv
when they live under ``/tmp``) are bind-mounted at the same path, read-write, on top of all that.

Commands run inside through ``nsenter``; the namespace's files are also reachable from the host
at ``/proc/<pid>/root``. :meth:`BootedSystemd.stop` powers off (SIGRTMIN+4), falls back to
SIGKILL, and removes the cgroup directory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import psutil

from tests.closing import Closing

SYSTEMD = Path("/lib/systemd/systemd")
TARGET = "remediator-test.target"
REPO = Path(__file__).resolve().parent.parent
ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NSENTER_FLAGS = ("--mount", "--pid", "--uts", "--ipc", "--net", "--cgroup")

# Masked inside: everything that would touch the host or cannot work in a container, and that
# is not needed for the web units. Timers and other packages' services are added at boot from
# what is installed (see _masks).
MASKED = (
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-tmpfiles-clean.service",
    "systemd-sysusers.service",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
    "systemd-modules-load.service",
    "systemd-random-seed.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "getty@tty1.service",
    "console-getty.service",
    "systemd-journal-flush.service",
    "systemd-firstboot.service",
    "systemd-machine-id-commit.service",
    "systemd-repart.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-logind.service",
    "systemd-sysctl.service",
    "kmod-static-nodes.service",
    "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-journald-audit.socket",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "systemd-remount-fs.service",
    "e2scrub_reap.service",
    "e2scrub_all.service",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "man-db.service",
    "dpkg-db-backup.service",
    "fstrim.service",
    "phpsessionclean.service",
    "postgresql.service",
    "fail2ban.service",
    "monit.service",
    "apache-htcacheclean.service",
)
# tmpfiles.d entries applied at boot (systemd-tmpfiles-setup is masked): php8.2-fpm needs /run/php.
TMPFILES = ("/usr/lib/tmpfiles.d/php8.2-fpm.conf",)
# Web units a test may start; never masked even though a package enables them.
KEPT = frozenset({"php8.2-fpm.service", "nginx.service", "apache2.service"})
_UNIT_DIRS = (Path("/lib/systemd/system"), Path("/etc/systemd/system"))

# Debian's default site (sites-enabled/default) with PHP through Debian's php8.2-fpm socket,
# and a page that answers "ok": what a booted web host serves in the tests.
DEBIAN_PHP_SITE = """\
server {
    listen 80 default_server;
    root /var/www/html;
    index index.php index.html;
    server_name _;
    location ~ \\.php$ {
        include snippets/fastcgi-php.conf;
        fastcgi_pass unix:/run/php/php8.2-fpm.sock;
    }
}
"""
PHP_OK = '<?php\necho "ok\\n";\n'

# Top-level directories whose writes land in a private tmpfs (an overlay); "usr" may be added,
# so that dpkg can install a package inside (tests/test_deb.py).
OVERLAYS = ("etc", "var")
# Bind sources must not live where the boot puts a fresh tmpfs that is not re-bound.
_UNBINDABLE = (Path("/run"), Path("/dev"), Path("/proc"), Path("/sys"))


_HTTP_GET = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
        print(r.status); print(r.read().decode(errors="replace"), end="")
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode(errors="replace"), end="")
"""


class SystemdError(RuntimeError):
    """The namespaced systemd did not boot, answer or stop as expected."""


def _unescape_mountinfo(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1 : i + 4]
        if field[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def cgroup2_mount(mountinfo: str) -> Path | None:
    """Where the cgroup2 hierarchy is mounted, from the text of ``/proc/self/mountinfo``.

    A line is ``ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER``;
    the first cgroup2 mount of the hierarchy's root (ROOT ``/``) wins, else the first cgroup2
    mount at all (a bind of a sub-cgroup). None when there is no cgroup2 mount.
    """
    found: list[tuple[bool, Path]] = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) > sep + 1 and fields[sep + 1] == "cgroup2":
            found.append((fields[3] == "/", Path(_unescape_mountinfo(fields[4]))))
    for whole, path in found:
        if whole:
            return path
    return found[0][1] if found else None


@functools.cache
def cgroup_root() -> Path | None:
    """This host's cgroup2 mount point (see :func:`cgroup2_mount`)."""
    try:
        return cgroup2_mount(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return None


def _cgroup_root() -> Path:
    root = cgroup_root()
    if root is None:
        raise SystemdError("no cgroup2 hierarchy is mounted")
    return root


@functools.cache
def available() -> str | None:
    """Why a namespaced systemd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (unshare of pid/mount/net namespaces, cgroup2 writes)"
    for tool in ("unshare", "nsenter", "setpriv", "mount", "ip"):
        if shutil.which(tool, path=ENV_PATH) is None:
            return f"{tool} is not installed"
    if not os.access(SYSTEMD, os.X_OK):
        return f"{SYSTEMD} is not installed"
    if "\toverlay\n" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem (it keeps /etc and /var private)"
    root = cgroup_root()
    if root is None:
        return "no cgroup2 hierarchy is mounted (none in /proc/self/mountinfo)"
    if not (root / "cgroup.procs").exists():
        return f"cgroup2 is mounted at {root}, but {root}/cgroup.procs is missing"
    probe = root / f"remediator-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return f"cgroup2 at {root} is not writable: {exc.strerror}"
    check = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount", "--net", "--cgroup", "true"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if check.returncode != 0:
        return f"unshare of namespaces failed: {check.stderr.strip()}"
    return None


def _unit_names(pattern: str) -> set[str]:
    names: set[str] = set()
    for d in _UNIT_DIRS:
        names.update(p.name for p in d.glob(pattern))
    return names


def _masks() -> list[str]:
    """MASKED, every installed timer, and whatever the host's packages enabled (bar KEPT)."""
    names = set(MASKED)
    names.update(n for n in _unit_names("*.timer") if "@" not in n)
    enabled = Path("/etc/systemd/system")
    names.update(p.name for p in enabled.glob("*.wants/*.service") if p.name not in KEPT)
    names.update(p.name for p in enabled.glob("*.wants/*.timer"))
    return sorted(names)


def sweep_stale_cgroups() -> list[Path]:
    """Remove our cgroups left by a test process that was SIGKILLed (its namespace died with it).

    Only ``remediator-sysd-<pid>-*`` directories whose creator PID is gone and that hold no
    process are removed. Returns those removed.
    """
    removed: list[Path] = []
    root = cgroup_root()
    if root is None:
        return removed
    for cg in root.glob("remediator-sysd-*-*"):
        creator = cg.name.split("-")[2]
        if not creator.isdigit() or psutil.pid_exists(int(creator)):
            continue
        try:
            if "populated 0" not in (cg / "cgroup.events").read_text():
                continue
            for d in sorted((d for d in cg.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                d.rmdir()
            cg.rmdir()
        except OSError:
            continue
        removed.append(cg)
    return removed


def _target_unit() -> str:
    return (
        "[Unit]\n"
        "Description=remediator test bed\n"
        "Requires=basic.target\n"
        "Wants=systemd-journald.service\n"
        "After=basic.target systemd-journald.service\n"
        "AllowIsolate=yes\n"
    )


def _covered(path: Path, overlays: tuple[str, ...] = OVERLAYS) -> bool:
    """Whether the boot hides or overlays ``path`` (so it must be bound back)."""
    hidden = (Path("/tmp"), *(Path("/") / d for d in overlays))
    return any(path == p or p in path.parents for p in hidden)


class BootedSystemd(Closing):
    """One systemd in its own namespaces. Use as a context manager, or start() / stop().

    ``workdir`` (a fresh temp dir by default) is visible inside at the same path, as are
    ``binds`` and, when they live under /tmp, the repository and ``sys.prefix`` (the venv).
    ``tmpfiles`` (tmpfiles.d files) are applied before systemd starts, so Debian's php8.2-fpm
    unit starts as it is.

    The namespace is tied to the thread that calls :meth:`start` (``setpriv --pdeathsig``): it
    is killed when that thread ends, so call it from the main thread or one that outlives it.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        binds: Iterable[Path] = (),
        tmpfiles: Iterable[str] = TMPFILES,
        overlays: Iterable[str] = OVERLAYS,
    ) -> None:
        self._own_dir = workdir is None
        self.overlays = tuple(overlays)
        if not set(OVERLAYS) <= set(self.overlays) <= set(OVERLAYS) | {"usr"}:
            raise ValueError(f"overlays must be {OVERLAYS} plus, optionally, usr")
        self.tmpfiles = [t for t in tmpfiles if Path(t).exists()]
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="remediator-sysd-"))
            workdir.chmod(0o755)
        self.workdir = workdir
        self.state = workdir / ".boot"
        self.binds = self._bind_list([workdir, *binds, REPO, Path(sys.prefix)], self.overlays)
        self.name = f"remediator-sysd-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._cgroup: Path | None = None
        self.boot_log = self.state / "boot.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    @staticmethod
    def _bind_list(paths: Iterable[Path], overlays: tuple[str, ...] = OVERLAYS) -> list[Path]:
        out: list[Path] = []
        for raw in paths:
            path = raw.resolve()
            if any(path == p or p in path.parents for p in _UNBINDABLE):
                raise ValueError(f"cannot bind {path} into the namespace (under a private mount)")
            if _covered(path, overlays) and path not in out:
                out.append(path)
        return sorted(out, key=lambda p: len(p.parts))

    # -- boot

    @property
    def pid(self) -> int:
        """Host PID of the namespace's PID 1 (systemd)."""
        if self._pid is None:
            raise SystemdError("systemd is not running")
        return self._pid

    @property
    def cgroup(self) -> Path:
        """The host's cgroup of this boot (``supervisor`` and ``payload`` are its children)."""
        if self._cgroup is None:
            self._cgroup = _cgroup_root() / self.name
        return self._cgroup

    @property
    def running(self) -> bool:
        """Whether the namespace's systemd is up (booted and not stopped)."""
        return self._pid is not None and self._proc is not None and self._proc.poll() is None

    @property
    def root(self) -> Path:
        """The namespace's root directory as seen from the host."""
        return Path(f"/proc/{self.pid}/root")

    def start(self, units: Mapping[str, str] | None = None, timeout: float = 20.0) -> None:
        """Boot; ``units`` (name → text) are installed under /run/systemd/system first.

        Returns once ``systemctl is-system-running`` says running or degraded.
        """
        reason = available()
        if reason is not None:
            raise SystemdError(f"cannot boot systemd here: {reason}")
        if self._proc is not None:
            raise SystemdError("already started")
        sweep_stale_cgroups()
        self.state.mkdir(parents=True, exist_ok=True)
        units_dir = self.state / "units"
        units_dir.mkdir(exist_ok=True)
        all_units = {TARGET: _target_unit(), **(units or {})}
        for name, text in all_units.items():
            (units_dir / name).write_text(text)
        (self.state / "console").touch()
        boot = self.state / "boot.sh"
        boot.write_text(self._boot_script(units_dir))
        supervisor, payload = self._make_cgroups()
        # The shell moves itself into `supervisor`, then becomes unshare (setpriv makes the
        # namespace die with this process). The namespace's PID 1 moves itself into `payload`
        # ("0" is the writer) and unshares its cgroup namespace there, before it mounts its
        # own /sys: systemd's root cgroup then holds nothing it cannot see.
        q = shlex.quote
        first = (
            f"echo 0 > {q(str(payload / 'cgroup.procs'))} && "
            f"exec unshare --cgroup /bin/sh {q(str(boot))}"
        )
        wrapper = (
            f"echo $$ > {q(str(supervisor / 'cgroup.procs'))} && exec setpriv --pdeathsig KILL "
            "unshare --pid --fork --mount --uts --ipc --net --kill-child "
            f"/bin/sh -c {q(first)}"
        )
        try:
            with self.boot_log.open("wb") as log:
                self._proc = subprocess.Popen(
                    ["/bin/sh", "-c", wrapper],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={"PATH": ENV_PATH},
                )
            self._wait_booted(timeout)
        except BaseException:
            self.stop()
            raise

    def _make_cgroups(self) -> tuple[Path, Path]:
        """The boot's cgroup with every controller it has enabled for its two leaves."""
        self.cgroup.mkdir()
        offered = (self.cgroup / "cgroup.controllers").read_text().split()
        for controller in offered:
            # One at a time: a controller the kernel refuses to delegate is left out, not fatal.
            with contextlib.suppress(OSError):
                (self.cgroup / "cgroup.subtree_control").write_text(f"+{controller}")
        supervisor, payload = self.cgroup / "supervisor", self.cgroup / "payload"
        supervisor.mkdir()
        payload.mkdir()
        return supervisor, payload

    def _wait_booted(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise SystemdError(
                    f"boot failed (rc {self._proc.returncode}): {self._boot_output()}"
                )
            if self._pid is None:
                self._pid = self._find_systemd()
            if self._pid is not None:
                res = self.run(["systemctl", "is-system-running"], timeout=5)
                state = res.stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.02)
        raise SystemdError(
            f"systemd did not finish booting in {timeout}s (state {state!r}): {self._boot_output()}"
        )

    def _find_systemd(self) -> int | None:
        assert self._proc is not None
        try:
            for child in psutil.Process(self._proc.pid).children():
                if child.name() == "systemd":
                    return child.pid
        except psutil.Error:
            return None
        return None

    def _boot_output(self) -> str:
        try:
            return self.boot_log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _boot_script(self, units_dir: Path) -> str:
        q = shlex.quote
        stage = [(f"/run/.stage/{i}", str(path)) for i, path in enumerate(self.binds)]
        lines = [
            "set -eu",
            "mount --make-rprivate /",
            "mount -t proc proc /proc",
            "mount -t sysfs -o ro sysfs /sys",
            "mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup",
            "mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run",
            # private /dev: tmpfs + the few device nodes of the host, a new devpts instance
            "mkdir /run/.olddev",
            "mount --bind /dev /run/.olddev",
            "mount -t tmpfs -o mode=755,nosuid tmpfs /dev",
            "for n in null zero full random urandom tty; do",
            '  touch "/dev/$n"; mount --bind "/run/.olddev/$n" "/dev/$n"',
            "done",
            "umount /run/.olddev; rmdir /run/.olddev",
            "mkdir /dev/pts /dev/shm",
            "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts",
            "ln -s pts/ptmx /dev/ptmx",
            "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm",
            "ln -s /proc/self/fd /dev/fd",
            "ln -s /proc/self/fd/0 /dev/stdin",
            "ln -s /proc/self/fd/1 /dev/stdout",
            "ln -s /proc/self/fd/2 /dev/stderr",
            "touch /dev/console",
            f"mount --bind {q(str(self.state / 'console'))} /dev/console",
        ]
        # binds are staged before /tmp, /var and /etc are covered, and moved back on top after
        for src_stage, path in stage:
            lines += [f"mkdir -p {src_stage}", f"mount --bind {q(path)} {src_stage}"]
        lines += [
            "mkdir /run/.ovl",
            "mount -t tmpfs -o mode=700 tmpfs /run/.ovl",
            f"for d in {' '.join(self.overlays)}; do",
            '  mkdir -p "/run/.ovl/$d/upper" "/run/.ovl/$d/work"',
            '  mount -t overlay overlay -o "lowerdir=/$d,upperdir=/run/.ovl/$d/upper,'
            'workdir=/run/.ovl/$d/work" "/$d"',
            "done",
            "umount -l /run/.ovl; rmdir /run/.ovl",
            "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp",
            "mount -t tmpfs -o mode=755 tmpfs /var/log",
            "mkdir -p /var/log/journal /var/log/nginx /var/log/apache2",
        ]
        for src_stage, path in stage:
            lines += [f"mkdir -p {q(path)}", f"mount --move {src_stage} {q(path)}"]
        lines += [
            "rm -rf /run/.stage",
            "mount --bind /proc/sys /proc/sys",
            "mount -o remount,bind,ro /proc/sys",
            "mkdir -p /run/systemd/system /run/systemd/journald.conf.d",
            "printf '[Journal]\\nStorage=volatile\\n' > /run/systemd/journald.conf.d/volatile.conf",
            f"cp {q(str(units_dir))}/* /run/systemd/system/",
        ]
        lines += [f"ln -sf /dev/null /run/systemd/system/{q(name)}" for name in _masks()]
        lines += [f"systemd-tmpfiles --create {q(conf)}" for conf in self.tmpfiles]
        lines += [
            "ip link set lo up",
            "exec env -i container=other PATH=/usr/sbin:/usr/bin:/sbin:/bin "
            f"{SYSTEMD} --unit={TARGET} --log-target=journal --show-status=no",
        ]
        return "\n".join(lines) + "\n"

    # -- inside

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 30.0,
        *,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside every namespace of the booted systemd (via nsenter)."""
        cmd = ["nsenter", f"--target={self.pid}", *NSENTER_FLAGS, "--", *argv]
        result = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            env={"PATH": ENV_PATH, "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
            check=False,
        )
        if check and result.returncode != 0:
            raise SystemdError(
                f"{shlex.join(argv)} failed rc={result.returncode}: {result.stdout}{result.stderr}"
            )
        return result

    def systemctl(
        self, *args: str, timeout: float = 30.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``systemctl ARGS`` inside."""
        return self.run(["systemctl", "--no-pager", *args], timeout=timeout, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p PROP…`` as a dict."""
        res = self.systemctl("show", unit, *(f"--property={p}" for p in props), check=True)
        out: dict[str, str] = {}
        for line in res.stdout.splitlines():
            key, _, value = line.partition("=")
            out[key] = value
        return out

    def main_pid(self, unit: str) -> int:
        """The unit's MainPID as seen inside the namespace (0 when none)."""
        return int(self.show(unit, "MainPID")["MainPID"] or 0)

    def host_pid(self, ns_pid: int) -> int | None:
        """The host PID of a process known inside as ``ns_pid``."""
        for proc in psutil.Process(self.pid).children(recursive=True):
            with contextlib.suppress(OSError, psutil.Error):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("NSpid:") and int(line.split()[-1]) == ns_pid:
                        return proc.pid
        return None

    def journal(
        self, unit: str | None = None, *, lines: int | None = None, since_boot: bool = True
    ) -> str:
        """``journalctl [-u UNIT] [-n LINES]`` inside, short-precise timestamps, no pager."""
        argv = ["journalctl", "--no-pager", "-o", "short-precise"]
        if since_boot:
            argv.append("-b")
        if lines is not None:
            argv += ["-n", str(lines)]
        if unit is not None:
            argv += ["-u", unit]
        return self.run(argv).stdout

    def http_get(self, url: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET ``url`` from inside the namespace's network: (status, body); 0 when no answer."""
        res = self.run(["python3", "-c", _HTTP_GET, url, str(timeout)], timeout=timeout + 10)
        status, _, body = res.stdout.partition("\n")
        try:
            return int(status), body
        except ValueError:
            return 0, res.stdout + res.stderr

    def write(self, path: str, text: str) -> Path:
        """Write a file inside (under /etc, /run, /tmp or /var, all private to the namespace)."""
        inside = Path(path)
        if not inside.is_absolute() or not any(
            p in inside.parents for p in (Path("/etc"), Path("/run"), Path("/tmp"), Path("/var"))
        ):
            raise ValueError(f"refusing to write {path}: not under a private mount")
        target = self.root / inside.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def install_unit(self, name: str, text: str, *, reload: bool = True) -> None:
        """Write a unit into /run/systemd/system inside and ``daemon-reload``."""
        self.write(f"/run/systemd/system/{name}", text)
        if reload:
            self.systemctl("daemon-reload", check=True)

    def wait_for(self, unit: str, prop: str, values: Iterable[str], timeout: float = 10.0) -> str:
        """Poll ``systemctl show -p PROP UNIT`` until its value is one of ``values``."""
        wanted = set(values)
        deadline = time.monotonic() + timeout
        value = ""
        while time.monotonic() < deadline:
            value = self.show(unit, prop).get(prop, "")
            if value in wanted:
                return value
            time.sleep(0.02)
        raise SystemdError(f"{unit} {prop}={value!r}, not in {sorted(wanted)} after {timeout}s")

    def system_state(self) -> str:
        """``systemctl is-system-running`` inside (running, degraded, starting…)."""
        return self.run(["systemctl", "is-system-running"]).stdout.strip()

    # -- teardown

    def stop(self, timeout: float = 10.0) -> None:
        """Power off (SIGRTMIN+4), SIGKILL after ``timeout``; remove the cgroup and temp dir."""
        proc, self._proc = self._proc, None
        pid, self._pid = self._pid, None
        if proc is not None:
            if pid is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGRTMIN + 4)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.kill()  # unshare --kill-child takes its child down with it
                proc.wait(timeout)
        self._remove_cgroup(timeout)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _remove_cgroup(self, timeout: float) -> None:
        if self._cgroup is None or not self.cgroup.exists():
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                for d in sorted(self.cgroup.rglob("*"), key=lambda p: -len(p.parts)):
                    if d.is_dir():
                        d.rmdir()
                self.cgroup.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    self._kill_cgroup()
                    raise
                self._kill_cgroup()
                time.sleep(0.05)
            else:
                return

    def _kill_cgroup(self) -> None:
        """SIGKILL any process left in our cgroup tree (after the namespace's PID 1 is gone)."""
        kill = self.cgroup / "cgroup.kill"
        if kill.exists():
            with contextlib.suppress(OSError):
                kill.write_text("1")
            return
        for procs in self.cgroup.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for line in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(line), signal.SIGKILL)

    def close(self) -> None:
        self.stop()
