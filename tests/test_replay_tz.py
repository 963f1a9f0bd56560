"""``replay --tz``: a real outage logged by nginx on a +01:00 host, replayed on a UTC machine.

nginx writes its access log with the offset (``+0100``) and its error log in local time with
none; read as UTC, every error line lands an hour late and the incident (502s *and* refused
connections within 10 s) disappears. With ``--tz`` it is found; without, replay says why.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediator.cli import main
from tests.stack import Stack, http_get, wait_for

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


def _zone(name: str | None) -> None:
    if name is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = name
    time.tzset()


@pytest.fixture
def plus_one_host_logs(tmp_path: Path) -> Iterator[Path]:
    """A config for the logs of a real outage written by nginx running at +01:00 (20 OK, PHP-FPM
    killed, 30 x 502); the test itself then runs on a UTC machine."""
    before = os.environ.get("TZ")
    _zone("Etc/GMT-1")  # POSIX's sign: this is UTC+01:00; the servers inherit it
    try:
        with Stack() as stack:
            nginx = stack.nginx(stack.fpm())
            for _ in range(20):
                assert http_get(nginx.url())[0] == 200
            nginx.fpm.kill_all()  # type: ignore[union-attr]
            for _ in range(30):
                assert http_get(nginx.url())[0] == 502
            wait_for(lambda: nginx.access_log.read_bytes().count(b"\n") == 50, 5, "50 lines")
            logs = tmp_path / "logs"
            logs.mkdir()
            shutil.copyfile(nginx.access_log, logs / "access.log")
            shutil.copyfile(nginx.error_log, logs / "error.log")
        assert b" +0100]" in (logs / "access.log").read_bytes()
        _zone("UTC")
        cfg = tmp_path / "remediator.yaml"
        cfg.write_text(CONFIG.format(access=logs / "access.log", error=logs / "error.log"))
        (tmp_path / "playbooks.d").mkdir()
        yield cfg
    finally:
        _zone(before)


def _replay(cfg: Path, *extra: str) -> tuple[int, dict[str, Any], str, str]:
    logs = cfg.parent / "logs"
    rc, out, err = run(
        "-c",
        str(cfg),
        "replay",
        "--json",
        *extra,
        str(logs / "access.log"),
        str(logs / "error.log"),
    )
    return rc, json.loads(out.splitlines()[-1]), out, err


def test_without_tz_the_incident_is_lost_and_replay_says_why(plus_one_host_logs: Path) -> None:
    rc, summary, _, err = _replay(plus_one_host_logs)
    assert rc == 0
    assert summary["incidents"] == 0
    (warning,) = summary["warnings"]
    assert "web_errors (" in warning and "is 1 h after web (" in warning
    assert warning.endswith("(here perhaps --tz +01:00)")
    assert err == f"warning: {warning}\n"


@pytest.mark.parametrize("zone", ["+01:00", "+0100", "Etc/GMT-1"])
def test_with_the_hosts_zone_the_incident_is_found(plus_one_host_logs: Path, zone: str) -> None:
    rc, summary, _, err = _replay(plus_one_host_logs, "--tz", zone)
    assert rc == 0, err
    assert summary["incidents"] == 1
    assert summary["warnings"] == []
    assert err == ""


def test_the_timeline_shows_times_in_the_zone_given(plus_one_host_logs: Path) -> None:
    logs = plus_one_host_logs.parent / "logs"
    rc, out, _ = run(
        "-c", str(plus_one_host_logs), "replay", "--tz", "+01:00", str(logs / "access.log"),
        str(logs / "error.log"),
    )  # fmt: skip
    assert rc == 0
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+01:00  trigger held   fpm-down", out, re.M)
    assert re.search(r"from \S+ \S+ \+01:00 to \S+ \S+ \+01:00", out)


def test_from_without_an_offset_is_read_in_the_zone_given(plus_one_host_logs: Path) -> None:
    _, summary, _, _ = _replay(plus_one_host_logs, "--tz", "+01:00")
    start = dt.datetime.fromisoformat(str(summary["from"]))
    naive = start.astimezone(dt.timezone(dt.timedelta(hours=1))).strftime("%Y-%m-%dT%H:%M:%S")
    _, later, _, _ = _replay(plus_one_host_logs, "--tz", "+01:00", "--from", naive)
    assert later["from"] == summary["from"]  # read as UTC, it would skip the whole outage


def test_an_unknown_zone_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, _ = run("-c", str(tmp_path / "r.yaml"), "replay", "--tz", "Mars/Olympus", "x.log")
    assert rc == 2
    assert "'Mars/Olympus' is not a time zone: use an IANA name like" in capsys.readouterr().err
