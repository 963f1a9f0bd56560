"""`remediator status` against a real daemon process, and what a reload keeps."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediator.cli import main
from remediator.load import load
from tests.attacker import as_www_data_argv
from tests.stack import wait_for
from tests.unprivileged import NobodyPython

CONFIG = """\
state_dir: state
action_log: actions.jsonl
sources:
  access: {type: access_log, path: access.log}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service}
"""
PLAYBOOK = """\
name: {name}
when: {{status_rate: {{source: access, status: 502, at_least: 5}}}}
steps: [restart: fpm]
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    (tmp_path / "playbooks.d").mkdir()
    (tmp_path / "playbooks.d" / "a.yaml").write_text(PLAYBOOK.format(name="a"))
    (tmp_path / "playbooks.d" / "b.yaml").write_text(PLAYBOOK.format(name="b"))
    (tmp_path / "access.log").touch()
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(CONFIG)
    return cfg


@pytest.fixture
def daemon(conf: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "remediator", "-c", str(conf), "run", "--dry-run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for((conf.parent / "state" / "status.json").exists, 10, "the daemon to start")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_status_shows_the_running_daemon_and_its_sources(
    conf: Path, daemon: subprocess.Popen[bytes]
) -> None:
    rc, out, _ = run("-c", str(conf), "status")
    assert rc == 0
    assert out.startswith(f"remediator running, pid {daemon.pid} (DRY RUN)")
    assert "access           access_log ok" in out
    assert "  a                        ready" in out


def test_status_shows_a_trigger_nearing_what_trips_it(
    conf: Path, daemon: subprocess.Popen[bytes]
) -> None:
    # 3 of the 5 502s the playbooks need: no record (nothing held), but status says so
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    line = f'127.0.0.1 - - [{stamp}] "GET / HTTP/1.1" 502 157 "-" "curl/7.88.1"\n'
    with (conf.parent / "access.log").open("a") as f:
        f.write(line * 3)

    wait_for(lambda: "now: " in run("-c", str(conf), "status")[1], 10, "the 502s counted")
    out = run("-c", str(conf), "status")[1]
    assert "  a                        ready\n    now: 3 x 502 of 3 requests" in out
    assert out.count("on access: trips at 5\n") == 2  # playbooks a and b


def test_status_still_works_while_the_config_on_disk_is_broken(
    conf: Path, daemon: subprocess.Popen[bytes]
) -> None:
    conf.write_text(CONFIG + "bogus: 1\n")
    rc, out, err = run("-c", str(conf), "status")
    assert rc == 0 and out.startswith("remediator running")
    assert "has errors" in err


def test_status_says_not_running_right_after_a_clean_stop(
    conf: Path, daemon: subprocess.Popen[bytes]
) -> None:
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    rc, out, _ = run("-c", str(conf), "status")
    assert rc == 1
    assert out.startswith("remediator is not running (stopped: ")


def test_a_reload_keeps_the_old_playbooks_of_a_file_that_now_has_errors(conf: Path) -> None:
    before = load(conf)
    (conf.parent / "playbooks.d" / "b.yaml").write_text(
        PLAYBOOK.format(name="b").replace("restart", "restrat")
    )
    after = load(conf)
    assert [p.name for p in after.playbooks] == ["a"]
    assert after.keep_previous(before) == ["b"]
    assert [p.name for p in after.playbooks] == ["a", "b"]


def test_a_kept_playbook_that_names_a_removed_service_is_dropped(conf: Path) -> None:
    before = load(conf)
    (conf.parent / "playbooks.d" / "b.yaml").write_text("name: b\n")
    conf.write_text(
        CONFIG.replace(
            "  fpm: {kind: php-fpm, unit: php8.2-fpm.service}\n",
            "  php: {kind: php-fpm, unit: php8.2-fpm.service}\n",
        )
    )
    after = load(conf)
    assert after.config is not None
    assert after.keep_previous(before) == []


def test_status_that_cannot_be_read_says_so_and_not_never() -> None:
    # docs/install.md: `adm` members read the status; anyone else must not be told that the
    # daemon never ran when it is running and its status.json is only not theirs to read.
    state = Path(tempfile.mkdtemp())  # in /tmp: www-data can enter it once it is 0755
    try:
        state.chmod(0o755)
        (state / "status.json").write_text('{"updated": 1, "pid": 1}\n')
        (state / "status.json").chmod(0o640)  # root:root here, as root:adm under the unit
        code = "import sys; from pathlib import Path; from remediator.status import show; "
        code += f"sys.exit(0 if show(Path({str(state)!r}), sys.stdout, as_json=False) else 1)"
        # the modules copied where www-data can read them: a checkout under /root is 0700
        with NobodyPython(["remediator.status"]) as py:
            res = py.run(["-c", code], drop=as_www_data_argv([]))
        assert res.returncode == 1
        assert res.stdout == (
            f"cannot read {state}/status.json: Permission denied: run it as root or as a "
            "member of adm\n"
        )
    finally:
        shutil.rmtree(state)
