"""Issue 9, forged log lines: www-data (a compromised PHP app) writes into nginx's logs, which
Debian's logrotate and nginx's own reopen hand to it, while the whole daemon watches a real
nginx + PHP-FPM.

(a) 30 forged 502s and 30 forged "(111: Connection refused)" lines on a healthy site: PHP-FPM
    is not touched, the trigger is held back `uncorroborated` with what was missing, no run
    budget is used and no breaker opens; a real fault right after is remediated at once.
(b) 1,000 forged 200s beside real 502s: a ratio is diluted, a count is not (`count_alone`),
    and the master gone corroborates it: PHP-FPM is restarted.
"""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from remediator.cli import main
from tests.attacker import append_as_www_data, give_to_www_data, serving
from tests.e2e import DaemonProcess, config, fpm_service, nginx_sources, probe
from tests.stack import Nginx, PhpFpm, http_get, wait_for

pytestmark = pytest.mark.servers

WINDOW = "10s"

FPM_DOWN = {
    "name": "fpm-down",
    "when": {
        "all": [
            {"status_rate": {"source": "access", "status": [502], "window": WINDOW,
                             "at_least": 10, "ratio": "5%"}},
            {"error_cause": {"source": "errors", "cause": ["upstream_refused"],
                             "window": WINDOW, "at_least": 3}},
        ]
    },
    # corroborate is left to its default: `any` (a probe is configured, fpm can be observed)
    "steps": [{"restart": "fpm", "verify": {"probe": "site", "within": "10s", "settle": "1s"}}],
    # one run per hour: had the forged lines used it, the real fault would be held back
    "limits": {"cooldown": "1h", "max_runs": 1, "per": "1h"},
    "on_exhausted": {"stop": True},
}  # fmt: skip


def _config(workdir: Path, nginx: Nginx, playbook: dict[str, Any]) -> dict[str, Any]:
    fpm = nginx.fpm
    assert isinstance(fpm, PhpFpm)
    return config(
        workdir,
        sources={**nginx_sources(nginx), "site": probe(nginx.url(), interval="500ms")},
        services={"fpm": fpm_service(fpm)},
        playbooks=[playbook],
        guards={"breaker": {"failures": 1}},  # one failed run would open it
    )


def _forged_502s(n: int) -> str:
    now = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    return "".join(
        f'127.0.0.1 - - [{now}] "GET /index.php HTTP/1.1" 502 157 "-" "curl/7.88.1" '
        "rt=0.000 us=502 urt=0.000\n"
        for _ in range(n)
    )


def _forged_200s(n: int) -> str:
    now = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    return "".join(
        f'127.0.0.1 - - [{now}] "GET /index.php HTTP/1.1" 200 13 "-" "curl/7.88.1" '
        "rt=0.001 us=200 urt=0.001\n"
        for _ in range(n)
    )


def _forged_refused(n: int, fpm: PhpFpm) -> str:
    now = time.strftime("%Y/%m/%d %H:%M:%S")
    return "".join(
        f"{now} [error] 4242#4242: *{i} connect() to unix:{fpm.socket} failed "
        "(111: Connection refused) while connecting to upstream, client: 127.0.0.1, "
        f'server: localhost, request: "GET /index.php HTTP/1.1", upstream: '
        f'"fastcgi://unix:{fpm.socket}:", host: "127.0.0.1"\n'
        for i in range(n)
    )


def _status(daemon: DaemonProcess) -> dict[str, Any]:
    """``remediator status --json`` (``running`` false until the daemon first published)."""
    out, err = io.StringIO(), io.StringIO()
    main(["-c", str(daemon.config_path), "status", "--json"], out, err)
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


def _probe_ok(daemon: DaemonProcess) -> bool:
    data = _status(daemon)
    return bool(data["running"]) and data["sources"]["site"]["state"] == "ok"


def _group(fpm: PhpFpm) -> set[int]:
    """PHP-FPM's master and workers (the master leads their process group)."""
    master = fpm.master()
    assert master is not None
    return {master.pid, *fpm.worker_pids()}


def _real_502s(nginx: Nginx, n: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: http_get(nginx.url())[0], range(n)))
    assert statuses == [502] * n


def test_forged_502s_on_a_healthy_site_act_on_nothing_and_use_no_budget(
    nginx_fpm: Nginx, tmp_path: Path
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    for log in (nginx_fpm.access_log, nginx_fpm.error_log):
        give_to_www_data(log)  # as logrotate's `create 0640 www-data adm` and nginx's reopen do
    fpm_before = _group(fpm)
    nginx_before = serving(nginx_fpm)
    assert nginx_before[0] is not None
    with DaemonProcess(tmp_path, _config(tmp_path, nginx_fpm, FPM_DOWN)) as daemon:
        wait_for(lambda: _probe_ok(daemon), 10, "the daemon's probe to see the site up")
        append_as_www_data(nginx_fpm.access_log, _forged_502s(30))
        append_as_www_data(nginx_fpm.error_log, _forged_refused(30, fpm))

        [held] = daemon.wait_record("trigger_held_back", timeout=10, guard="uncorroborated")
        assert held["playbook"] == "fpm-down"
        assert held["outcome"] == "held"
        assert held["reason"].startswith("uncorroborated: the trigger rests on log lines only")
        missing = held["corroboration"]["missing"]
        assert missing == "a failure of probe site or fpm down, failed or not running within 10s"
        assert held["corroboration"]["seen"]["fpm"].startswith("up")
        assert held["corroboration"]["seen"]["probe site"].startswith("ok")
        assert len(held["lines"]["access"]) == 20  # the forged lines, kept for the post-mortem
        assert all('"curl/7.88.1"' in line for line in held["lines"]["access"])

        # the daemon stays alive and answers; the playbook is held, not broken
        wait_for(
            lambda: _status(daemon)["playbooks"]["fpm-down"]["held_by"] == "uncorroborated",
            10,
            "status to show the held trigger",
        )
        status = _status(daemon)
        assert status["running"]
        assert status["playbooks"]["fpm-down"]["failures_in_a_row"] == 0
        assert daemon.is_running()
        assert daemon.records("incident_opened") == []
        assert daemon.records("action_intent") == []
        assert daemon.records("breaker_opened") == []
        # PHP-FPM untouched (same master, same workers), nor nginx; no action was even tried
        assert _group(fpm) == fpm_before
        assert (nginx_fpm.master(), nginx_fpm.worker_pids()) == nginx_before

        # a real fault now: PHP-FPM's whole group killed, users get 502s. The forged lines
        # used no run (max_runs 1, cooldown 1h) and opened no breaker: remediated at once.
        fpm.kill_all()
        _real_502s(nginx_fpm, 12)
        [opened] = daemon.wait_record("incident_opened", timeout=10)
        by = opened["corroboration"]["by"]
        assert by.startswith(("fpm ", "probe site failed")), by
        daemon.wait_record("verify_passed", timeout=20)
        [closed] = daemon.wait_record("incident_closed", timeout=10)
        assert closed["outcome"] == "resolved"
        assert fpm.master() is not None and fpm.master_pid() not in fpm_before
        assert http_get(nginx_fpm.url())[0] == 200
        assert daemon.records("breaker_opened") == []
    assert [r["event"] for r in daemon.records("action_intent")] == ["action_intent"]


FPM_502 = {
    "name": "fpm-502",
    "when": {
        "status_rate": {"source": "access", "status": [502], "window": "30s", "at_least": 10,
                        "ratio": "10%", "count_alone": 25},
    },
    "steps": [{"restart": "fpm", "verify": {"probe": "site", "within": "10s", "settle": "1s"}}],
    "limits": {"cooldown": "1h", "max_runs": 1, "per": "1h"},
}  # fmt: skip


def test_forged_200s_dilute_the_ratio_but_not_the_count_of_real_502s(
    nginx_fpm: Nginx, tmp_path: Path
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    give_to_www_data(nginx_fpm.access_log)
    fpm_before = _group(fpm)
    nginx_before = serving(nginx_fpm)
    with DaemonProcess(tmp_path, _config(tmp_path, nginx_fpm, FPM_502)) as daemon:
        wait_for(lambda: _probe_ok(daemon), 10, "the daemon's probe to see the site up")
        append_as_www_data(nginx_fpm.access_log, _forged_200s(1000))
        fpm.kill_all()
        _real_502s(nginx_fpm, 30)

        [opened] = daemon.wait_record("incident_opened", timeout=10)
        [rate] = opened["evidence"]["readings"]
        assert rate["holds"] is True
        assert rate["total"] > 1000  # the forged 200s are counted...
        assert rate["ratio"] < 0.10  # ...and diluted the ratio under its 10 %...
        assert rate["count"] >= 25  # ...but not the count of real 502s
        assert opened["corroboration"]["mode"] == "any"
        [closed] = daemon.wait_record("incident_closed", timeout=20)
        assert closed["outcome"] == "resolved"
        assert fpm.master() is not None and fpm.master_pid() not in fpm_before
        assert http_get(nginx_fpm.url())[0] == 200
        assert (nginx_fpm.master(), nginx_fpm.worker_pids()) == nginx_before  # only PHP-FPM
        assert daemon.records("breaker_opened") == []
        assert daemon.is_running()
