"""The operator's view, end to end: PHP-FPM killed behind a real nginx under load, the daemon
(``remediator run``) remediating it, while

- a real Prometheus scrapes the daemon's ``/metrics`` and its query API then shows the incident
  and the restart;
- a real Alertmanager receives the incident's alert (seen in its API while the incident is open)
  and its resolution when the incident closes (both delivered to a webhook receiver, as
  Alertmanager notifies people);
- a mail notifier hands the mail to a sendmail-compatible catcher this test runs.

One scenario, one set of servers: the test is kept to a few seconds.
"""

from __future__ import annotations

import email
import email.policy
import functools
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import DaemonProcess, config, fpm_down_when, fpm_service, nginx_sources, probe
from tests.promstack import Alertmanager, Prometheus, missing
from tests.stack import LoadGenerator, Nginx, PhpFpm, free_port, wait_for
from tests.webhook import Receiver, receiving

pytestmark = pytest.mark.servers

CATCHER = """\
#!{python}
# A sendmail stand-in: keeps its argv and the message it is handed, one file each.
import json, os, sys
out = {out!r}
data = sys.stdin.buffer.read()
n = len(os.listdir(out))
with open(os.path.join(out, f"{{n}}.argv"), "w") as f:
    json.dump(sys.argv[1:], f)
with open(os.path.join(out, f"{{n}}.eml"), "wb") as f:
    f.write(data)
"""

PLAYBOOK = {
    "name": "fpm-down",
    "when": fpm_down_when(),
    "steps": [
        {"notify": {"notifier": "am", "message": "PHP-FPM is down: restarting it"}},
        {"notify": "ops"},
        {"restart": "fpm", "verify": {"probe": "site", "within": "5s", "settle": "500ms"}},
    ],
    "limits": {"cooldown": "30s", "max_runs": 3, "per": "1h"},
}  # fmt: skip


@pytest.fixture
def mailbox(tmp_path: Path) -> Path:
    return tmp_path / "mail"


def _sendmail(tmp_path: Path, mailbox: Path) -> Path:
    mailbox.mkdir()
    script = tmp_path / "sendmail"
    script.write_text(CATCHER.format(python=sys.executable, out=str(mailbox)))
    script.chmod(0o755)
    return script


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Prometheus, Alertmanager, Receiver, int]]:
    why = missing()
    if why is not None:
        pytest.fail(why)
    port = free_port()
    with (
        receiving() as hook,
        Prometheus(tmp_path, [f"127.0.0.1:{port}"]) as prom,
        Alertmanager(tmp_path, hook.url("/alertmanager")) as am,
    ):
        yield prom, am, hook, port


class _Watching:
    """Polls Alertmanager's API in a thread: the alerts it holds as active, as seen."""

    def __init__(self, am: Alertmanager) -> None:
        self.am = am
        self.seen: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                alerts = self.am.get("/api/v2/alerts", active="true")
            except OSError:
                continue
            self.seen.extend(a for a in alerts if a["status"]["state"] == "active")

    def __enter__(self) -> _Watching:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_fault_is_seen_by_prometheus_alertmanager_and_mail(
    servers: tuple[Prometheus, Alertmanager, Receiver, int],  # first: Prometheus takes 5 s to
    nginx_fpm: Nginx,  # scrape for the first time (its discovery's batching), the rest overlaps
    daemons: list[DaemonProcess],
    tmp_path: Path,
    mailbox: Path,
) -> None:
    prom, am, hook, port = servers
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    site = probe(nginx_fpm.url("/index.php"), interval="1s", timeout="500ms")
    cfg = config(
        tmp_path / "d",
        sources={**nginx_sources(nginx_fpm), "site": site},
        services={"fpm": fpm_service(fpm, startup_grace="1s")},
        playbooks=[PLAYBOOK],
        metrics={"listen": f"127.0.0.1:{port}"},
        notifiers={
            "am": {"url": am.url, "format": "alertmanager", "labels": {"team": "web"}},
            "ops": {
                "format": "mail",
                "to": ["ops@example.com", "web@example.com"],
                "sendmail": str(_sendmail(tmp_path, mailbox)),
            },
        },
    )
    daemon = DaemonProcess(tmp_path / "d", cfg)
    daemons.append(daemon)
    daemon.start()
    prom.wait_ready()
    am.wait_ready()
    # scraped before the fault, and during it
    wait_for(lambda: prom.value('up{job="remediator"}') == 1, 15, "Prometheus to scrape")

    with LoadGenerator(nginx_fpm.url(), rate=50) as load, _Watching(am) as watching:
        load.wait_ok()
        fpm.kill_all()
        closed = daemon.wait_record("incident_closed", 20)
        wait_for(
            lambda: bool(_notified(hook, "resolved")), 15, "Alertmanager to send the resolution"
        )
    assert closed[0]["outcome"] == "resolved", daemon.report()
    opened = daemon.records("incident_opened")[0]
    incident = opened["incident"]

    # Alertmanager held the alert, with its labels and the summary, while the incident was open
    held = [a for a in watching.seen if a["labels"].get("incident") == incident]
    assert held, f"Alertmanager never showed the alert active: {watching.seen}"
    labels = held[0]["labels"]
    assert labels["alertname"] == "RemediatorIncident"
    assert labels["playbook"] == "fpm-down" and labels["team"] == "web"
    assert opened["reason"] in held[0]["annotations"]["summary"]
    # ... notified it firing, then resolved (endsAt set when the incident closed)
    firing, resolved = _notified(hook, "firing"), _notified(hook, "resolved")
    assert firing and firing[0]["labels"]["incident"] == incident
    assert resolved[0]["labels"]["incident"] == incident
    assert resolved[0]["endsAt"] >= resolved[0]["startsAt"]
    # ... and its API holds it active no longer
    wait_for(
        lambda: (
            not [
                a
                for a in am.get("/api/v2/alerts", active="true")
                if a["labels"].get("incident") == incident
            ]
        ),
        5,
        "the alert to be resolved in Alertmanager's API",
    )

    # the mail went through "sendmail -t", to the configured recipients, with the summary
    argv = json.loads((mailbox / "0.argv").read_text())
    assert argv == ["-t", "-oi"]
    msg = email.message_from_bytes((mailbox / "0.eml").read_bytes(), policy=email.policy.default)
    assert msg["To"] == "ops@example.com, web@example.com"
    assert "fpm-down" in msg["Subject"] and incident in msg["Subject"]
    body = msg.get_body(("plain",))
    assert body is not None
    assert opened["reason"] in body.get_content()

    # Prometheus's query API shows the incident, the restart and the lines read
    def scraped(expr: str, want: float, *, exactly: bool = False) -> bool:
        value = prom.value(expr)
        return value is not None and (value == want if exactly else value >= want)

    checks = {
        'remediator_incidents_total{playbook="fpm-down",outcome="resolved"}': 1,
        'remediator_incidents_opened_total{playbook="fpm-down"}': 1,
        'remediator_actions_total{action="restart",service="fpm",outcome="ok"}': 1,
        'remediator_action_duration_seconds_count{action="restart"}': 1,
        'remediator_detection_seconds_count{playbook="fpm-down"}': 1,
        'remediator_notifications_total{notifier="am",outcome="ok"}': 2,  # fired, resolved
        'remediator_notifications_total{notifier="ops",outcome="ok"}': 1,
        'remediator_log_lines_total{source="access"}': 1,
        "remediator_config_last_reload_successful": 1,
    }
    for expr, want in checks.items():
        wait_for(functools.partial(scraped, expr, want), 10, f"Prometheus to show {expr} >= {want}")
    for expr in (
        "remediator_open_incidents",
        'remediator_breaker_open{playbook="fpm-down"}',
        'remediator_source_blind{source="access"}',
        "remediator_paused",
    ):
        wait_for(
            functools.partial(scraped, expr, 0, exactly=True), 10, f"{expr} == 0 in Prometheus"
        )


def _notified(hook: Receiver, status: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager has sent the receiver with ``status`` (firing, resolved)."""
    return [
        alert
        for path, _, body in list(hook.received)
        if path == "/alertmanager"
        for alert in body.get("alerts", [])
        if alert.get("status") == status
    ]
