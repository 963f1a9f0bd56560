"""Issue 9, item 8: a log source that www-data replaces by a FIFO, a directory or a symlink to
``/dev/zero`` is blind, never opened (so never blocking), and the daemon goes on; so is one it
replaces by a symlink to a file only root can read (root would read it for www-data, and quote
its lines as evidence). A sparse file of a terabyte, and a line of 100 MB with no newline, are
read at the cost of what they really hold.

The log lives in a directory www-data owns (an application's log directory, say). The attacker
(tests/attacker.py, really www-data) replaces the file while the daemon follows it. Each case
asserts that the source is reported blind with what it is, that the daemon is alive and still
runs an incident to its end, and that it did not swell.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from remediator.cli import main
from remediator.sources.planted import planted_link
from tests.attacker import append_as_www_data, as_www_data, as_www_data_argv, give_to_www_data
from tests.e2e import DaemonProcess, config, eventually
from tests.stack import make_workdir

NEVER = {"status_rate": {"source": "access", "status": 418, "at_least": 5}}
PLAYBOOK = {
    "name": "harmless",
    "when": NEVER,
    "steps": [{"command": ["/bin/true"], "verify": {"within": "200ms"}}],
    "limits": {"cooldown": "0s", "backoff": False},
    "on_exhausted": {"stop": False},
}
DEADLINE = 20.0
MAX_RSS = 300 * 1024 * 1024


@dataclass
class Followed:
    log: Path  # in www-data's directory
    daemon: DaemonProcess


@pytest.fixture
def followed(tmp_path: Path) -> Iterator[Followed]:
    logs = make_workdir("remediator-app-logs-")
    give_to_www_data(logs)
    log = logs / "access.log"
    log.touch()
    give_to_www_data(log)
    cfg = config(
        tmp_path / "daemon",
        sources={"access": {"type": "access_log", "path": str(log)}},
        services={},
        playbooks=[PLAYBOOK],
    )
    try:
        with DaemonProcess(tmp_path / "daemon", cfg) as daemon:
            yield Followed(log, daemon)
            print(daemon.report())
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def _status(daemon: DaemonProcess) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    main(["-c", str(daemon.config_path), "status", "--json"], out, err)
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


def _blind_then_alive(f: Followed, kind: str) -> None:
    """The source ends blind with ``kind`` in its reason; the daemon still runs an incident."""
    seen: list[dict[str, Any]] = []

    def blind() -> bool:
        seen[:] = [_status(f.daemon).get("sources", {}).get("access", {})]
        return seen[0].get("state") == "blind"

    eventually(blind, DEADLINE, "the source to be reported blind")
    assert kind in seen[0]["reason"], seen[0]
    said = [r for r in f.daemon.log_events() if r.get("event") == "source_blind"]
    assert said and kind in said[-1]["reason"], f.daemon.log_tail()  # in the daemon's log
    assert f.daemon.is_running()
    out, err = io.StringIO(), io.StringIO()
    main(["-c", str(f.daemon.config_path), "trigger", "harmless"], out, err)
    f.daemon.wait_record("incident_closed", DEADLINE)
    assert f.daemon.is_running()
    assert psutil.Process(f.daemon.pid).memory_info().rss < MAX_RSS


def _ok(f: Followed) -> None:
    eventually(
        lambda: _status(f.daemon).get("sources", {}).get("access", {}).get("state") == "ok",
        DEADLINE,
        "the source to be followed",
    )


@pytest.fixture
def writer(followed: Followed) -> Iterator[subprocess.Popen[bytes]]:
    """www-data replaces the log by a FIFO and waits, in a blocking open, for a reader."""
    _ok(followed)
    as_www_data(["sh", "-c", f"rm -f {followed.log} && mkfifo -m 0644 {followed.log}"])
    proc = subprocess.Popen(
        as_www_data_argv(["sh", "-c", f"echo forged > {followed.log}"]),
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()  # setpriv execs sh: the PID is the writer's
        proc.wait()


def test_log_replaced_by_a_fifo_is_blind_and_never_opened(
    followed: Followed, writer: subprocess.Popen[bytes]
) -> None:
    _blind_then_alive(followed, "a FIFO")
    # Opening the FIFO to read would have let the writer's blocking open return.
    assert writer.poll() is None


def test_log_replaced_by_a_directory_is_blind(followed: Followed) -> None:
    _ok(followed)
    as_www_data(["sh", "-c", f"rm -f {followed.log} && mkdir {followed.log}"])
    _blind_then_alive(followed, "a directory")


def test_log_replaced_by_a_symlink_to_dev_zero_is_blind(followed: Followed) -> None:
    _ok(followed)
    as_www_data(["sh", "-c", f"ln -sf /dev/zero {followed.log}"])
    _blind_then_alive(followed, "a character device")


def _access_line(path: str, status: int) -> str:
    now = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    return f'10.9.9.9 - - [{now}] "GET {path} HTTP/1.1" {status} 157 "-" "x"\n'


@pytest.fixture
def secret() -> Iterator[Path]:
    """A file only root can read, whose lines would pass for 502s."""
    path = make_workdir("remediator-secret-") / "shadow"
    path.write_text("".join(_access_line(f"/{SECRET}-{i}", 502) for i in range(20)))
    path.chmod(0o600)
    try:
        yield path
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


SECRET = "root-only-token"  # noqa: S105 - a marker, not a password


def test_log_replaced_by_a_symlink_to_a_root_only_file_is_blind_and_never_read(
    followed: Followed, secret: Path
) -> None:
    _ok(followed)
    with pytest.raises(subprocess.CalledProcessError):
        as_www_data(["cat", str(secret)])  # www-data cannot read it...
    with pytest.raises(subprocess.CalledProcessError):  # nor hard-link a root file (the kernel's
        as_www_data(["ln", "-f", "/etc/shadow", str(followed.log)])  # fs.protected_hardlinks)
    as_www_data(["ln", "-sf", str(secret), str(followed.log)])  # ...but can point the log at it
    _blind_then_alive(followed, "is a symbolic link in a directory www-data (uid 33) can write")
    # Root read nothing of it: no line counted, none quoted, no incident but the drill.
    assert _status(followed.daemon)["sources"]["access"]["lines"] == 0
    assert SECRET not in followed.daemon.action_log.read_text()
    assert [r["playbook"] for r in followed.daemon.records("incident_opened")] == ["harmless"]


def test_a_directory_on_the_way_swapped_for_a_symlink_is_not_followed(secret: Path) -> None:
    """The walk judges every symlink on the path, not only the last one."""
    logs = make_workdir("remediator-app-logs-")
    try:
        give_to_www_data(logs)
        as_www_data(["ln", "-s", str(secret.parent), str(logs / "sub")])
        problem = planted_link(logs / "sub" / "shadow")
        assert problem is not None and f"{logs / 'sub'} is a symbolic link" in problem
        # a symlink in root's own directory (as distributions ship them) is followed
        (secret.parent / "link").symlink_to(secret)
        assert planted_link(secret.parent / "link") is None
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def _opens_on_what_follows(f: Followed) -> None:
    """Five 418s (the playbook's trigger) after what www-data wrote: the daemon reads on to
    them and opens its incident on exactly those."""
    append_as_www_data(f.log, "".join(_access_line("/after", 418) for _ in range(5)))
    [opened] = f.daemon.wait_record("incident_opened", DEADLINE)
    [reading] = opened["evidence"]["readings"]
    assert reading["count"] == 5, reading
    f.daemon.wait_record("incident_closed", DEADLINE)
    assert f.daemon.is_running()
    assert psutil.Process(f.daemon.pid).memory_info().rss < MAX_RSS


def test_log_replaced_by_a_sparse_terabyte_costs_what_it_holds(followed: Followed) -> None:
    """1 TiB of hole, then lines: the hole is skipped (reading its zeros would keep a core
    busy for many minutes, far past the deadline)."""
    _ok(followed)
    new = followed.log.with_name("new.log")
    as_www_data(["truncate", "-s", "1T", str(new)])
    as_www_data(["mv", "-f", str(new), str(followed.log)])
    _opens_on_what_follows(followed)


def test_a_100_mb_line_without_newline_is_cut_and_bounded(followed: Followed) -> None:
    _ok(followed)
    as_www_data(
        ["sh", "-c", f"head -c 100000000 /dev/zero | tr '\\0' a >> {followed.log}"], timeout=60
    )
    append_as_www_data(followed.log, "\n")
    _opens_on_what_follows(followed)  # the long line cut and dropped, the next ones whole


# --- `check` (the unit's ExecStartPre) and `format: auto` read the logs too --------------------


@pytest.fixture
def www_logs() -> Iterator[Path]:
    """www-data's log directory with its access log, and root's config naming it."""
    logs = make_workdir("remediator-app-logs-")
    give_to_www_data(logs)
    try:
        yield logs / "access.log"
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def _check(tmp_path: Path, log: Path, fmt: str = "nginx-combined") -> tuple[int, str]:
    """``remediator check`` as a process (a hang is its timeout), on a config naming ``log``."""
    (tmp_path / "playbooks.d").mkdir(exist_ok=True)
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(f"sources:\n  access: {{type: access_log, path: {log}, format: {fmt}}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "remediator", "-c", str(cfg), "check"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("fmt", ["nginx-combined", "auto"])
def test_check_on_a_log_replaced_by_a_fifo_answers_at_once(
    tmp_path: Path, www_logs: Path, fmt: str
) -> None:
    """On main, `check` (and a daemon with `format: auto`) blocked in open() until a writer
    came: the unit's ExecStartPre hung, the daemon never started."""
    as_www_data(["mkfifo", str(www_logs)])
    rc, out = _check(tmp_path, www_logs, fmt)
    assert rc == 0, out
    assert "cannot be read: not a regular file (a FIFO)" in out, out


def test_check_never_prints_a_root_only_file_www_data_points_its_log_at(
    tmp_path: Path, www_logs: Path, secret: Path
) -> None:
    as_www_data(["ln", "-s", str(secret), str(www_logs)])
    rc, out = _check(tmp_path, www_logs)
    assert rc == 0, out
    assert "is a symbolic link in a directory www-data (uid 33) can write" in out, out
    assert SECRET not in out


def test_junk_www_data_appends_does_not_fail_check(tmp_path: Path, www_logs: Path) -> None:
    """A thousand lines of junk in a log www-data can write: on main `check` failed (exit 2),
    and with it the unit's ExecStartPre: remediation off until someone cleaned the log."""
    as_www_data(["sh", "-c", f"yes 'junk from php' | head -n 1000 > {www_logs}"])
    rc, out = _check(tmp_path, www_logs)
    assert rc == 0, out
    assert "0 of the last 1000 lines read as nginx-combined" in out
    assert "others can write this log: not an error" in out
