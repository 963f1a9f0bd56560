"""Issue 9, the config rows: www-data (tests/attacker.py) against the files root takes orders from.

- the config in a directory www-data can write, swapped between checks by a racing process;
- the config in a 0777 directory;
- a playbook symlinked from a www-data directory;
- an alias bomb and 300 nested ``any:`` (``check`` answers with a located error, within a
  memory limit; the daemon under SIGHUP keeps running on its old configuration and says why).

www-data cannot reach tmp_path (root's home), so what it writes lives in a directory under /run
(root's, 0755: itself trusted), removed at the end.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediator import trust
from remediator.cli import main
from remediator.load import load
from remediator.trust import Untrusted
from tests.attacker import UID, as_www_data, as_www_data_argv, give_to_www_data
from tests.e2e import DaemonProcess
from tests.stack import wait_for
from tests.test_yaml_bounds import BOMB, nested_any

GOOD = """\
# root's configuration
sources:
  access: {type: access_log, path: access.log}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service}
"""
EVIL = """\
# www-data's configuration
sources:
  access: {type: access_log, path: access.log}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service}
playbooks:
  - name: owned
    when: {status_rate: {source: access, status: 200, at_least: 1}}
    steps: [command: {argv: [/usr/bin/touch, /run/owned-by-www-data]}]
"""
PLAYBOOK = """\
name: {name}
when: {{status_rate: {{source: access, status: 502, at_least: 5}}}}
steps: [restart: fpm]
"""
# Swaps root's config and its own in the directory, as fast as it can, until killed.
SWAPPER = """\
import os, sys
d = sys.argv[1]
cfg, keep, evil = (os.path.join(d, n) for n in ("remediator.yaml", "good.keep", "evil.yaml"))
while True:
    os.rename(cfg, keep); os.rename(evil, cfg)  # now the attacker's
    os.rename(cfg, evil); os.rename(keep, cfg)  # root's again
"""
RACE_FOR = 20.0  # seconds at most to see both outcomes of the race


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory www-data can reach: root's, 0755, in trusted /run."""
    path = Path(tempfile.mkdtemp(prefix="remediator-attack-", dir="/run"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def swapping(shared: Path) -> Iterator[Path]:
    """``shared/www`` (www-data's) holding root's config, and www-data swapping its own in."""
    www = shared / "www"
    www.mkdir()
    give_to_www_data(www)
    (www / "remediator.yaml").write_text(GOOD)  # root's, 0644
    (www / "playbooks.d").mkdir()
    as_www_data(["touch", str(www / "evil.yaml")])
    (www / "evil.yaml").write_text(EVIL)  # root writes the content; the file stays www-data's
    assert (www / "evil.yaml").stat().st_uid == UID
    proc = subprocess.Popen(as_www_data_argv(["/usr/bin/python3", "-c", SWAPPER, str(www)]))
    try:
        yield www
    finally:
        proc.kill()
        proc.wait()
        assert not Path("/run/owned-by-www-data").exists()


def test_a_config_in_a_www_data_directory_is_refused_while_it_is_swapped(swapping: Path) -> None:
    cfg = swapping / "remediator.yaml"
    for _ in range(200):
        rc, out, err = run("-c", str(cfg), "check")
        assert rc == 2, out
        assert f"its directory {swapping} is owned by uid {UID} (www-data), not root" in err
        assert f"fix with: chown root: {swapping} && chmod go-w {swapping}" in err
        loaded = load(cfg)
        assert loaded.config is None


def test_the_open_once_read_never_accepts_what_it_did_not_judge(swapping: Path) -> None:
    """Below the parent rule: the descriptor judged is the one read, however fast the swap."""
    cfg = swapping / "remediator.yaml"
    accepted = refused = 0
    deadline = time.monotonic() + RACE_FOR
    while (not accepted or not refused or accepted + refused < 1000) and (
        time.monotonic() < deadline
    ):
        try:
            data, _ = trust.read_judged(cfg, frozenset({0}), max_bytes=1 << 20)
        except Untrusted as exc:
            assert f"owned by uid {UID} (www-data)" in str(exc)
            refused += 1
        except FileNotFoundError:  # between two renames
            continue
        else:
            assert data.decode() == GOOD  # never the attacker's bytes
            accepted += 1
    assert accepted, "the race never let root's file be read: the swap did not run"
    assert refused, "the race never showed the attacker's file: the swap did not run"


def test_a_config_in_a_0777_directory_is_refused(shared: Path) -> None:
    open_dir = shared / "conf"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    (open_dir / "playbooks.d").mkdir()
    cfg = open_dir / "remediator.yaml"
    cfg.write_text(GOOD)
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert err.startswith(
        f"{cfg}:1:1: refusing to use it: its directory {open_dir} is writable by group and "
        "others (mode 0777)"
    )
    # and indeed www-data could have put its own there
    as_www_data(["mv", "-f", str(cfg), str(open_dir / "was-roots.yaml")])
    assert not cfg.exists()


def test_a_playbook_symlinked_from_a_www_data_directory_is_refused(
    tmp_path: Path, shared: Path
) -> None:
    www = shared / "app"
    www.mkdir()
    give_to_www_data(www)
    as_www_data(
        ["sh", "-c", f"printf '%s' \"$0\" > {www / 'remediator.yaml'}", PLAYBOOK.format(name="app")]
    )
    (tmp_path / "playbooks.d").mkdir()
    (tmp_path / "playbooks.d" / "ok.yaml").write_text(PLAYBOOK.format(name="ok"))
    link = tmp_path / "playbooks.d" / "app.yaml"
    link.symlink_to(www / "remediator.yaml")
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(GOOD)
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert (
        f"{link}:1:1: refusing to use it: its directory {www} is owned by uid {UID} (www-data), "
        f"not root: whoever can write it can replace the file (through the symlink {link} -> "
        f"{www / 'remediator.yaml'}); fix with: chown root: {www} && chmod go-w {www}"
    ) in err
    loaded = load(cfg)
    assert [pb.name for pb in loaded.playbooks] == ["ok"]  # a daemon would run without it


def _check_limited(cfg: Path) -> subprocess.CompletedProcess[str]:
    """``remediator check`` in a process that may not map more than 1 GiB."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run(
        [sys.executable, "-m", "remediator", "-c", str(cfg), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (BOMB, "1:4", "YAML anchor '&a' is not allowed"),
        (nested_any(300), "2:", "nested more than 64 levels deep"),
    ],
    ids=["alias-bomb", "300-nested-any"],
)
def test_check_on_an_exploding_playbook_is_a_located_error_within_a_memory_limit(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    (tmp_path / "playbooks.d").mkdir()
    bomb = tmp_path / "playbooks.d" / "bomb.yaml"
    bomb.write_text(text)
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(GOOD)
    result = _check_limited(cfg)
    assert result.returncode == 2, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{bomb}:{where}")
    assert first.endswith(message) or message in first
    assert "Error" not in result.stderr  # no RecursionError, MemoryError, traceback


def _daemon(tmp_path: Path) -> DaemonProcess:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "action_log": str(tmp_path / "actions.jsonl"),
        "log_format": "json",
        "sources": {"access": {"type": "access_log", "path": str(tmp_path / "access.log")}},
        "services": {"fpm": {"kind": "php-fpm", "unit": "php8.2-fpm.service"}},
    }
    (tmp_path / "access.log").touch()
    daemon = DaemonProcess(tmp_path, cfg, dry_run=True)
    (tmp_path / "playbooks.d" / "a.yaml").write_text(PLAYBOOK.format(name="a"))
    return daemon


def test_the_daemon_under_sighup_keeps_its_old_config_through_bombs(
    tmp_path: Path, shared: Path
) -> None:
    with _daemon(tmp_path) as daemon:
        good = daemon.config_path.read_text()
        # the main file becomes an alias bomb
        daemon.config_path.write_text(BOMB)
        os.kill(daemon.pid, signal.SIGHUP)
        [failed] = daemon.wait_record("config_refused", 15)
        assert failed["outcome"] == "refused"
        assert failed["kept"] == "the old configuration"
        assert f"{daemon.config_path}:1:4: YAML anchor '&a' is not allowed" in failed["reason"]
        # a playbook file becomes 300 nested any: the rest reloads, its old playbook is kept
        daemon.config_path.write_text(good)
        (tmp_path / "playbooks.d" / "a.yaml").write_text(nested_any(300))
        os.kill(daemon.pid, signal.SIGHUP)
        [_, partial] = daemon.wait_record("config_refused", 15, count=2)
        assert "nested more than 64 levels deep" in partial["reason"]
        assert partial["kept"] == "the old playbooks of the files with errors"
        assert daemon.is_running()

        def shows_kept() -> bool:
            rc, out, _ = run("-c", str(daemon.config_path), "status")
            return rc == 0 and "last reload FAILED" in out and "  a " in out

        wait_for(shows_kept, 15, "status to show the kept playbook and the failed reload")
        # a playbook symlinked from www-data's directory appears: refused on SIGHUP, with why
        (tmp_path / "playbooks.d" / "a.yaml").write_text(PLAYBOOK.format(name="a"))
        www = shared / "app"
        www.mkdir()
        give_to_www_data(www)
        as_www_data(["sh", "-c", f"echo 'name: b' > {www / 'b.yaml'}"])
        (tmp_path / "playbooks.d" / "b.yaml").symlink_to(www / "b.yaml")
        os.kill(daemon.pid, signal.SIGHUP)
        [*_, linked] = daemon.wait_record("config_refused", 15, count=3)
        assert (
            f"its directory {www} is owned by uid {UID} (www-data), not root" in (linked["reason"])
        )
        assert daemon.is_running()
        rc, out, _ = run("-c", str(daemon.config_path), "status")
        assert rc == 0, out
        # nothing acted, nothing consumed: the only records are the three refusals
        assert daemon.events() == ["config_refused"] * 3
        assert daemon.stop() == 0
    crashed = [r for r in daemon.log_events() if r.get("event") == "config_reload_crashed"]
    assert crashed == []


def test_a_command_running_a_script_www_data_can_change_is_warned_about(
    tmp_path: Path, shared: Path
) -> None:
    """The program (python3) is root's, but the script it runs is www-data's word."""
    www = shared / "app"
    www.mkdir()
    give_to_www_data(www)
    script = www / "fix.py"
    as_www_data(["touch", str(script)])
    (tmp_path / "playbooks.d").mkdir()
    (tmp_path / "playbooks.d" / "fix.yaml").write_text(
        "name: fix\n"
        "when: {status_rate: {source: access, status: 502, at_least: 5}}\n"
        f"steps: [command: [/usr/bin/python3, {script}], command: [/bin/echo, {tmp_path}]]\n"
    )
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(GOOD)
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 0, err
    [warning] = [line for line in err.splitlines() if "argument" in line]
    assert warning.startswith(
        f"warning: playbook 'fix' step 1: its command's argument {script} can be changed by "
        f"others (its directory {www} is owned by uid {UID} (www-data), not root"
    ), warning
    assert warning.endswith(
        "if /usr/bin/python3 runs or reads it, whoever can write it steers root"
    )
