"""One incident, three ways: the live daemon for real, the live daemon in dry run, and
``replay`` of the logs each of them read. Same playbook, same steps, same evidence lines, same
verification verdict.

The incident is real: nginx in front of PHP-FPM, PHP-FPM killed (socket left behind), a burst
of requests that get 502 with ``connect() ... (111: Connection refused)``, then PHP-FPM back
(restarted by the daemon, or, in the dry run, by the test: the site recovering by itself)
and users getting 200s again.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from remediator.cli import main
from tests.e2e import DaemonProcess, Record, config, fpm_service, nginx_sources, only, probe
from tests.stack import Nginx, PhpFpm, http_get, wait_for

pytestmark = pytest.mark.servers

BURST = 12  # the trigger needs exactly this many 502s: it holds once the whole burst is in
WARM = 20  # users served before the outage

PLAYBOOK = {
    "name": "fpm-down",
    "when": {
        "all": [
            {"status_rate": {"source": "access", "status": [502, 503], "window": "10s",
                             "at_least": BURST, "ratio": "5%"}},
            {"error_cause": {"source": "errors", "cause": ["upstream_refused"],
                             "window": "10s", "at_least": 3}},
        ]
    },
    # PHP-FPM's master gone is what corroborates the log lines here: asking the probe as well
    # (`any`) would put its own 502 among the evidence, before or after the burst's second
    "corroborate": "service",
    "steps": [{"restart": "fpm", "verify": {"probe": "site", "within": "10s", "settle": "2s"}}],
    "limits": {"cooldown": "10m", "max_runs": 3, "per": "1h"},
}  # fmt: skip


def _config(workdir: Path, nginx: Nginx) -> dict[str, Any]:
    fpm = nginx.fpm
    assert isinstance(fpm, PhpFpm)
    # a long interval: the probe asks only when verification wants it, so its own requests
    # (logged like anyone's) are not part of the outage
    site = probe(nginx.url(), interval="60s", timeout="1s")
    return config(
        workdir,
        sources={**nginx_sources(nginx), "site": site},
        services={"fpm": fpm_service(fpm)},
        playbooks=[PLAYBOOK],
    )


def _outage(nginx: Nginx) -> PhpFpm:
    """The outage: a few good requests, PHP-FPM killed, a burst of BURST users get 502."""
    fpm = nginx.fpm
    assert isinstance(fpm, PhpFpm)
    for _ in range(WARM):
        assert http_get(nginx.url())[0] == 200
    fpm.kill_all()
    with ThreadPoolExecutor(BURST) as pool:
        statuses = list(pool.map(lambda _: http_get(nginx.url())[0], range(BURST)))
    assert statuses == [502] * BURST
    return fpm


def _incident(nginx: Nginx, daemon: DaemonProcess, *, restart_ourselves: bool) -> Path:
    """Play the outage against the running daemon; the logs it read, copied."""
    fpm = _outage(nginx)
    if restart_ourselves:  # the dry run changes nothing: the site comes back by itself
        daemon.wait_record("action_result", timeout=10)
        fpm.start()
    wait_for(fpm.ping, 10, "PHP-FPM to answer again")
    for _ in range(30):  # users again, for the verification and its settle
        assert http_get(nginx.url())[0] == 200
        time.sleep(0.1)
    daemon.wait_record("incident_closed", timeout=20)
    daemon.stop()
    # nginx writes a request's line after answering it: wait until the log is quiet
    sizes: list[int] = []

    def quiet() -> bool:
        sizes.append(nginx.access_log.stat().st_size)
        return len(sizes) > 3 and sizes[-1] == sizes[-4]

    wait_for(quiet, 5, "nginx's access log to be complete", 0.1)
    logs = daemon.workdir / "captured"
    logs.mkdir()
    shutil.copyfile(nginx.access_log, logs / nginx.access_log.name)
    shutil.copyfile(nginx.error_log, logs / nginx.error_log.name)
    return logs


def _replay(daemon: DaemonProcess, logs: Path) -> list[Record]:
    out, err = io.StringIO(), io.StringIO()
    files = [str(p) for p in sorted(logs.iterdir())]
    rc = main(["-c", str(daemon.config_path), "replay", "--json", *files], out, err)
    assert rc == 0, err.getvalue()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[-1]["summary"] is True
    return records[:-1]


def _story(records: list[Record]) -> dict[str, Any]:
    """What must agree: the playbook, the steps, the evidence lines, the verdict."""
    opened = [r for r in records if r["event"] == "incident_opened"]
    assert len(opened) == 1, [r["event"] for r in records]
    return {
        "playbook": opened[0]["playbook"],
        "steps": [(r["step"], r["action"], r["target"]) for r in records
                  if r["event"] == "action_intent"],
        "evidence": opened[0]["evidence"]["lines"],
        "verdicts": [r["event"] for r in records if r["event"].startswith("verify_")],
        "outcome": [r["outcome"] for r in records if r["event"] == "incident_closed"],
    }  # fmt: skip


@pytest.mark.parametrize("dry_run", [False, True], ids=["for-real", "dry-run"])
def test_one_incident_live_and_replayed_tells_the_same_story(
    nginx_fpm: Nginx, tmp_path: Path, dry_run: bool
) -> None:
    with DaemonProcess(tmp_path, _config(tmp_path, nginx_fpm), dry_run=dry_run) as daemon:
        logs = _incident(nginx_fpm, daemon, restart_ourselves=dry_run)
    live = daemon.records()
    replayed = _replay(daemon, logs)
    assert _story(live) == _story(replayed)
    story = _story(live)
    assert story["playbook"] == "fpm-down"
    assert story["steps"] == [(1, "restart", "fpm")]
    # The burst, and on a loaded machine now and then one more 502 logged in its second (seen
    # alike live and in replay: the equality above is what matters)
    assert BURST <= len(story["evidence"]["access"]) <= BURST + 2
    assert all(" 502 " in line for line in story["evidence"]["access"])
    assert all("(111: Connection refused)" in line for line in story["evidence"]["errors"])
    assert story["verdicts"] == ["verify_passed"]
    assert story["outcome"] == ["resolved"]
    passed_live = next(r for r in live if r["event"] == "verify_passed")
    passed_replay = next(r for r in replayed if r["event"] == "verify_passed")
    assert "probe" in passed_live["judged_on"]
    assert passed_replay["judged_on"] == "logs"  # no probes in replay: the log's own future
    assert all(r["dry_run"] is dry_run for r in live if r["event"] != "daemon_ready")
    if dry_run:
        result = next(r for r in live if r["event"] == "action_result")
        assert result["outcome"] == "would_run"
        assert passed_live["reason"].startswith("dry run, nothing was done: recovered")


def test_a_site_no_user_comes_back_to_is_verified_by_its_probe(
    nginx_fpm: Nginx, tmp_path: Path
) -> None:
    """After the outage no user comes back: no access-log line tells whether the restart
    helped. The step must still pass on the probe, not stay
    "verifying" until its deadline and fail."""
    with DaemonProcess(tmp_path, _config(tmp_path, nginx_fpm)) as daemon:
        _outage(nginx_fpm)
        closed = daemon.wait_record("incident_closed", timeout=20)[0]
    assert closed["outcome"] == "resolved", closed["reason"]
    passed = only(daemon.records("verify_passed"))
    assert "probe" in passed["judged_on"], passed
    users = [
        line
        for line in nginx_fpm.access_log.read_text().splitlines()
        if "remediator-probe" not in line
    ]
    # users' requests: the warm-up and the burst, none after (the probe's own are logged too:
    # the access log is not silent, but no user's request judged the step)
    assert [" 502 " in line for line in users] == [False] * WARM + [True] * BURST


@pytest.mark.parametrize("mode", ["service", "probe", "any"])
def test_an_outage_as_the_daemon_starts_is_remediated(
    nginx_fpm: Nginx, tmp_path: Path, mode: str
) -> None:
    """PHP-FPM dies the moment the daemon is ready, and the burst is all the site gets: the
    windows hold nothing from before the start: the burst and the probe's answers, fewer than
    the ratio's `min_sample` of 20 requests. Such a sample is judged as if the requests it
    lacks had succeeded (12 of 20 is still far above 5%): the outage is corroborated and
    remediated, not left in silence because the site is quiet. Before, the trigger never
    held (12 x 502 of 13 requests: below min_sample), and nothing was recorded."""
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    cfg = _config(tmp_path, nginx_fpm)
    cfg["playbooks"][0] = {**PLAYBOOK, "corroborate": mode}
    with DaemonProcess(tmp_path, cfg) as daemon:
        fpm.kill_all()
        with ThreadPoolExecutor(BURST) as pool:
            statuses = list(pool.map(lambda _: http_get(nginx_fpm.url())[0], range(BURST)))
        assert statuses == [502] * BURST
        closed = daemon.wait_record("incident_closed", timeout=20)[0]
    assert closed["outcome"] == "resolved", daemon.report()
    opened = only(daemon.records("incident_opened"))
    by = opened["corroboration"]["by"]
    wanted = {"service": ("fpm",), "probe": ("probe site failed",)}
    assert by.startswith(wanted.get(mode, ("fpm", "probe site failed"))), by
    assert opened["evidence"]["readings"][0]["total"] < 20  # below min_sample
    assert fpm.ping()
