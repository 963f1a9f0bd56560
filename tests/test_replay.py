"""``remediator replay`` over logs written by real nginx + PHP-FPM during a real outage."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from remediator.cli import main
from remediator.replay import ReplayError
from remediator.replay import _open as replay_open
from tests.stack import Nginx, http_get, wait_for

pytestmark = pytest.mark.servers

CONFIG = """
sources:
  web: {{type: access_log, path: {access}, format: nginx-timed}}
  web_errors: {{type: error_log, path: {error}, format: nginx-error}}
services:
  fpm: {{kind: php-fpm, unit: php8.2-fpm.service}}
playbooks:
  - name: fpm-down
    when:
      all:
        - status_rate: {{source: web, status: 502, window: 10s, at_least: 5, ratio: 20%}}
        - error_cause: {{source: web_errors, cause: upstream_refused, window: 10s}}
    steps:
      - restart: fpm
        verify: {{within: 5s}}
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


@pytest.fixture
def outage_logs(nginx_fpm: Nginx, tmp_path: Path) -> tuple[Path, Path]:
    """Access and error logs of a real outage: 20 OK, PHP-FPM killed, 30 x 502."""
    for _ in range(20):
        assert http_get(nginx_fpm.url())[0] == 200
    nginx_fpm.fpm.kill_all()  # type: ignore[union-attr]
    for _ in range(30):
        assert http_get(nginx_fpm.url())[0] == 502
    # nginx logs a request after answering it: wait for the last line before copying
    wait_for(lambda: nginx_fpm.access_log.read_bytes().count(b"\n") == 50, 5, "50 log lines")
    logs = tmp_path / "logs"
    logs.mkdir()
    access, error = logs / "access.log", logs / "error.log"
    shutil.copyfile(nginx_fpm.access_log, access)
    shutil.copyfile(nginx_fpm.error_log, error)
    return access, error


def _config(tmp_path: Path, access: Path, error: Path) -> Path:
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(CONFIG.format(access=access, error=error))
    (tmp_path / "playbooks.d").mkdir(exist_ok=True)
    return cfg


def test_replay_json_summary_counts_every_status_and_the_incident(
    outage_logs: tuple[Path, Path], tmp_path: Path
) -> None:
    access, error = outage_logs
    cfg = _config(tmp_path, access, error)
    rc, out, err = run("-c", str(cfg), "replay", "--json", str(access), str(error))
    assert rc == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    summary = records[-1]
    assert summary["statuses"] == {"200": 20, "502": 30}
    assert summary["lines"] >= 50
    assert summary["malformed"] == 0
    assert summary["incidents"] == 1
    assert summary["causes"].get("upstream_refused", 0) >= 30
    events = [r["event"] for r in records[:-1]]
    assert events[:3] == ["incident_opened", "action_intent", "action_result"]
    assert records[1]["action"] == "restart" and records[1]["target"] == "fpm"
    assert records[2]["outcome"] == "would_run"
    details = records[2]["details"]  # what the step asked for, as declared
    assert details["replay"] is True and details["action"] == "restart"
    assert details["args"]["service"] == "fpm"


def test_playbooks_no_log_line_can_set_off_are_named_not_silently_skipped(
    outage_logs: tuple[Path, Path], tmp_path: Path
) -> None:
    """A crash seen by a pidfd, a failing probe: logs do not hold them, so a replay that opens
    no incident for such a playbook says so instead of letting 0 read as "nothing to do"."""
    access, error = outage_logs
    cfg = _config(tmp_path, access, error)
    (tmp_path / "playbooks.d" / "master.yaml").write_text(
        "name: master-gone\n"
        "when: {any: [{service_down: {service: fpm}}, {probe_failing: {probe: site}}]}\n"
        "steps: [{restart: fpm}]\n"
    )
    cfg.write_text(
        cfg.read_text().replace(
            "sources:\n", "sources:\n  site: {type: probe, url: 'http://127.0.0.1:1/'}\n"
        )
    )
    rc, out, err = run("-c", str(cfg), "replay", "--json", str(access), str(error))
    assert rc == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["not_replayed"] == {
        "master-gone": "its trigger needs probe_failing, service_down, which logs do not hold"
    }
    rc, out, _ = run("-c", str(cfg), "replay", str(access), str(error))
    assert "not replayed: master-gone (its trigger needs probe_failing, service_down" in out
    assert "fpm-down" not in summary["not_replayed"]


def test_replay_timeline_for_a_person(outage_logs: tuple[Path, Path], tmp_path: Path) -> None:
    access, error = outage_logs
    cfg = _config(tmp_path, access, error)
    rc, out, _ = run("-c", str(cfg), "replay", str(access), str(error))
    assert rc == 0
    assert "trigger held" in out and "fpm-down" in out
    assert "step 1: restart fpm" in out
    assert "statuses: 200: 20, 502: 30" in out
    # replay sees no probe or service state: it says what live would have needed to act
    assert (
        "(corroboration assumed: replay sees no probe or service state; live, this runs only "
        "on fpm down, failed or not running within 10s)"
    ) in out


def test_rotated_and_compressed_files_belong_to_their_source(
    outage_logs: tuple[Path, Path], tmp_path: Path
) -> None:
    access, error = outage_logs
    cfg = _config(tmp_path, access, error)
    rotated = access.with_name("access.log.2.gz")
    with access.open("rb") as src, gzip.open(rotated, "wb") as dst:
        shutil.copyfileobj(src, dst)
    rc, out, err = run("-c", str(cfg), "replay", "--json", str(rotated))
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["statuses"] == {"200": 20, "502": 30}


def test_format_works_without_any_config(outage_logs: tuple[Path, Path], tmp_path: Path) -> None:
    access, _ = outage_logs
    rc, out, err = run(
        "-c",
        str(tmp_path / "none.yaml"),
        "replay",
        "--json",
        "--format",
        "nginx-timed",
        str(access),
    )
    assert rc == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["statuses"] == {"200": 20, "502": 30}
    assert summary["incidents"] == 0


def test_a_file_no_source_claims_is_a_usage_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "a.log", tmp_path / "e.log")
    other = tmp_path / "other.log"
    other.write_text("")
    rc, _, err = run("-c", str(cfg), "replay", str(other))
    assert rc == 2
    assert "no source match this file" in err and "--source" in err


def test_time_range_limits_what_is_replayed(outage_logs: tuple[Path, Path], tmp_path: Path) -> None:
    access, error = outage_logs
    cfg = _config(tmp_path, access, error)
    rc, out, _ = run(
        "-c", str(cfg), "replay", "--json", "--to", "2000-01-01T00:00:00Z", str(access)
    )
    assert rc == 0
    summary = json.loads(out.splitlines()[-1])
    assert summary["statuses"] == {}
    assert summary["incidents"] == 0


def test_a_log_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO at a log's path (another user replaced the file) would block an open forever:
    the command refuses it up front, and the open itself (should it be swapped in between)
    judges the descriptor it got without blocking."""
    access = tmp_path / "access.log"
    os.mkfifo(access)
    cfg = _config(tmp_path, access, tmp_path / "error.log")
    rc, _, err = run("-c", str(cfg), "replay", str(access))
    assert rc == 2 and f"{access}: not a regular file (a FIFO)" in err
    rc, _, err = run("-c", str(cfg), "replay", str(tmp_path / "gone.log"))
    assert rc == 2 and "gone.log: no such file" in err
    with (
        pytest.raises(ReplayError, match=r"not a regular file \(a FIFO\): not read"),
        replay_open(access),
    ):
        pass
