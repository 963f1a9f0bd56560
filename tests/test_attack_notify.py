"""Issue 13 against the attacker of issue 9: www-data (a compromised PHP app) writes lines into
nginx's logs that carry a mail header (`Bcc:`), Prometheus exposition text and an Alertmanager
label, while the whole daemon watches a real nginx + PHP-FPM with metrics on, an
Alertmanager-format notifier and a mail notifier.

(a) Forged lines alone: held back `uncorroborated` (in the action log, with its reason); no
    incident, no alert, no mail; no series or label value of /metrics carries their text, the
    budget and breaker untouched, the daemon answers.
(b) A real fault right after, with the forged lines in the evidence: remediated; the alert and
    the mail carry the summary (names and counts) and nothing of the lines; the mail goes to the
    configured recipients only.
"""

from __future__ import annotations

import email
import email.policy
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.attacker import append_as_www_data, give_to_www_data, serving
from tests.e2e import DaemonProcess, config, fpm_service, nginx_sources, probe
from tests.stack import Nginx, PhpFpm, free_port, http_get, wait_for
from tests.webhook import receiving

pytestmark = pytest.mark.servers

EVIL = ("evil@attacker.example", "pwned", "\x1b[2J")
PLAYBOOK = {
    "name": "fpm-down",
    "when": {
        "all": [
            {"status_rate": {"source": "access", "status": [502], "window": "10s",
                             "at_least": 10, "ratio": "5%"}},
            {"error_cause": {"source": "errors", "cause": ["upstream_refused"],
                             "window": "10s", "at_least": 3}},
        ]
    },
    "steps": [
        {"notify": "am"},
        {"notify": "ops"},
        {"restart": "fpm", "verify": {"probe": "site", "within": "10s", "settle": "500ms"}},
    ],
    "limits": {"cooldown": "1h", "max_runs": 1, "per": "1h"},
    "on_exhausted": {"stop": True},
}  # fmt: skip
CATCHER = """\
#!{python}
import json, os, sys
data = sys.stdin.buffer.read()
n = len(os.listdir({out!r})) // 2
open(os.path.join({out!r}, f"{{n}}.argv"), "w").write(json.dumps(sys.argv[1:]))
open(os.path.join({out!r}, f"{{n}}.eml"), "wb").write(data)
"""


def _forged_502s(n: int) -> str:
    now = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    path = "/x?Bcc:evil@attacker.example&remediator_breaker_open{playbook=pwned}"
    agent = "Bcc: evil@attacker.example\x1b[2J"
    return "".join(
        f'127.0.0.1 - - [{now}] "GET {path} HTTP/1.1" 502 157 "-" "{agent}" '
        "rt=0.000 us=502 urt=0.000\n"
        for _ in range(n)
    )


def _forged_refused(n: int, fpm: PhpFpm) -> str:
    now = time.strftime("%Y/%m/%d %H:%M:%S")
    return "".join(
        f"{now} [error] 4242#4242: *{i} connect() to unix:{fpm.socket} failed "
        "(111: Connection refused) while connecting to upstream, client: 127.0.0.1, "
        'server: pwned, request: "GET /?to=evil@attacker.example HTTP/1.1", upstream: '
        f'"fastcgi://unix:{fpm.socket}:", host: "pwned"\n'
        for i in range(n)
    )


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _value(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _no_evil(text: str) -> bool:
    return not any(e in text for e in EVIL)


def test_forged_lines_reach_no_metric_alert_or_mail(nginx_fpm: Nginx, tmp_path: Path) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    for log in (nginx_fpm.access_log, nginx_fpm.error_log):
        give_to_www_data(log)
    mailbox = tmp_path / "mail"
    mailbox.mkdir()
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(CATCHER.format(python=sys.executable, out=str(mailbox)))
    sendmail.chmod(0o755)
    port = free_port()
    nginx_before = serving(nginx_fpm)
    with receiving() as am:
        cfg = config(
            tmp_path / "d",
            sources={**nginx_sources(nginx_fpm), "site": probe(nginx_fpm.url(), interval="500ms")},
            services={"fpm": fpm_service(fpm)},
            playbooks=[PLAYBOOK],
            notifiers={
                "am": {"url": am.url("/"), "format": "alertmanager"},
                "ops": {"format": "mail", "to": ["ops@example.com"], "sendmail": str(sendmail)},
            },
            metrics={"listen": f"127.0.0.1:{port}"},
            guards={"breaker": {"failures": 1}},
        )
        with DaemonProcess(tmp_path / "d", cfg) as daemon:
            # (a) forged lines alone
            append_as_www_data(nginx_fpm.access_log, _forged_502s(30))
            append_as_www_data(nginx_fpm.error_log, _forged_refused(30, fpm))
            [held] = daemon.wait_record("trigger_held_back", timeout=10, guard="uncorroborated")
            assert held["reason"].startswith("uncorroborated: the trigger rests on log lines only")
            assert any("evil@attacker.example" in line for line in held["lines"]["access"])
            wait_for(  # the line counters are sampled every 2 s
                lambda: (
                    (_value(_metrics(port), 'remediator_log_lines_total{source="access"}') or 0)
                    >= 30
                ),
                10,
                "the forged lines to be counted",
            )
            text = _metrics(port)
            assert _no_evil(text), [ln for ln in text.splitlines() if not _no_evil(ln)]
            assert _value(text, 'remediator_incidents_opened_total{playbook="fpm-down"}') == 0
            assert _value(text, 'remediator_breaker_open{playbook="fpm-down"}') == 0
            assert daemon.is_running()
            assert daemon.records("incident_opened") == [] and daemon.records("notify") == []
            assert am.received == [] and list(mailbox.iterdir()) == []
            assert (nginx_fpm.master(), nginx_fpm.worker_pids()) == nginx_before

            # (b) a real fault: remediated, the forged lines in its evidence but not in its alerts
            fpm.kill_all()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: http_get(nginx_fpm.url()), range(12)))
            [closed] = daemon.wait_record("incident_closed", timeout=20)
            assert closed["outcome"] == "resolved", daemon.report()
            wait_for(lambda: len(am.received) == 2, 10, "the alert and its resolution")
            assert http_get(nginx_fpm.url())[0] == 200
            text = _metrics(port)
            assert _no_evil(text)
            assert (nginx_fpm.master(), nginx_fpm.worker_pids()) == nginx_before
    alerts: list[Any] = [body for _, _, body in am.received]
    assert _no_evil(json.dumps(alerts, ensure_ascii=False))
    assert [a[0]["labels"]["playbook"] for a in alerts] == ["fpm-down", "fpm-down"]
    assert json.loads((mailbox / "0.argv").read_text()) == ["-t", "-oi"]
    raw = (mailbox / "0.eml").read_bytes()
    assert _no_evil(raw.decode("utf-8", "replace"))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_all("To") == ["ops@example.com"]
    assert msg.get_all("Cc") is None and msg.get_all("Bcc") is None
    assert len(list(mailbox.iterdir())) == 2  # one mail (and its argv)
