"""The daemon's metrics (remediator.metrics): bounded labels, the loopback endpoint, the
textfile, the ``metrics:`` section's checks; and the Alertmanager and mail notifiers' output."""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from remediator.actionlog import ActionLog, read
from remediator.actions.alertmanager import alerts_url
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.actions.declare import NotifyArgs
from remediator.actions.notify import ACTIONS as NOTIFY
from remediator.actions.notify import notify, resolve
from remediator.config import AccessLogSource, Config, Notifier, Service
from remediator.config import Metrics as MetricsConfig
from remediator.detect import Signals
from remediator.engine import Engine
from remediator.guards import Guards
from remediator.load import load
from remediator.metrics import Metrics
from remediator.playbook import walk_conditions
from remediator.system import DryRunSystem, System
from tests.e2e import DaemonProcess, dump
from tests.stack import free_port, wait_for
from tests.webhook import receiving


def _config() -> Config:
    fpm = Service(kind="php-fpm", unit="php8.2-fpm.service")
    return Config(services={"fpm": fpm}, notifiers={"am": Notifier(url="http://127.0.0.1:1")})


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return _samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_records_are_counted_by_playbook_action_service_and_outcome() -> None:
    m = Metrics()
    m.configure(_config(), ["fpm-down"])
    m.record({"event": "incident_opened", "playbook": "fpm-down", "detection_ms": 750.0})
    step = {"playbook": "fpm-down", "action": "restart", "target": "fpm", "outcome": "ok"}
    m.record({"event": "action_result", **step, "duration_ms": 42.0})
    m.record({"event": "verify_passed", "playbook": "fpm-down", "outcome": "ok"})
    m.record({"event": "incident_closed", "playbook": "fpm-down", "outcome": "resolved"})
    assert _value(m, "remediator_incidents_opened_total", playbook="fpm-down") == 1
    assert _value(m, "remediator_incidents_total", playbook="fpm-down", outcome="resolved") == 1
    labels = {"action": "restart", "service": "fpm", "outcome": "ok"}
    assert _value(m, "remediator_actions_total", **labels) == 1
    assert _value(m, "remediator_action_duration_seconds_sum", action="restart") == 0.042
    assert _value(m, "remediator_detection_seconds_sum", playbook="fpm-down") == 0.75
    assert _value(m, "remediator_verifications_total", playbook="fpm-down", result="passed") == 1
    assert _value(m, "remediator_open_incidents") == 0


def test_a_label_never_takes_a_value_from_outside_the_configuration() -> None:
    m = Metrics()
    m.configure(_config(), ["fpm-down"])
    forged = '/index.php?x="}\n'
    m.record({"event": "incident_closed", "playbook": forged, "outcome": forged})
    m.record({"event": "action_result", "playbook": "fpm-down", "action": forged, "target": forged})
    m.record({"event": "notify", "target": forged, "outcome": "ok"})
    values = {v for (_, labels), _ in _samples(m).items() for _, v in labels}
    assert forged not in values
    assert _value(m, "remediator_incidents_total", playbook="other", outcome="other") == 1
    assert _value(m, "remediator_actions_total", action="other", service="", outcome="other") == 1
    assert _value(m, "remediator_notifications_total", notifier="other", outcome="ok") == 1


def test_lines_are_counted_from_the_feeders_totals_across_a_reload() -> None:
    m = Metrics()
    m.configure(Config(sources={"access": AccessLogSource(path=Path("/nonexistent"))}), [])
    snap: dict[str, Any] = {"sources": {"access": {"state": "ok", "lines": 10, "malformed": 1}}}
    m.sample(snap, {}, 0.0)
    snap["sources"]["access"] |= {"lines": 25, "malformed": 3}
    m.sample(snap, {}, 1.0)
    m.forget_lines()  # reloaded: a new feeder counts from zero
    snap["sources"]["access"] |= {"lines": 5, "malformed": 0, "state": "blind"}
    m.sample(snap, {}, 2.0)
    assert _value(m, "remediator_log_lines_total", source="access") == 30
    assert _value(m, "remediator_log_malformed_lines_total", source="access") == 3
    assert _value(m, "remediator_source_blind", source="access") == 1


def test_breaker_and_pause_gauges_follow_the_snapshot() -> None:
    m = Metrics()
    m.configure(_config(), ["a", "b"])
    m.sample({"paused": "by root: maintenance", "incident": None}, {"a": True}, 0.0)
    assert _value(m, "remediator_breaker_open", playbook="a") == 1
    assert _value(m, "remediator_breaker_open", playbook="b") == 0
    assert _value(m, "remediator_paused") == 1
    m.sample({"paused": None}, {}, 1.0)  # reset: the playbook left the book
    assert _value(m, "remediator_breaker_open", playbook="a") == 0
    assert _value(m, "remediator_paused") == 0


def test_metrics_are_served_on_loopback_and_nothing_else() -> None:
    m = Metrics()
    m.configure(_config(), ["fpm-down"])
    port = free_port()
    m.expose(MetricsConfig(listen=f"127.0.0.1:{port}"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"remediator_incidents_opened", "remediator_breaker_open"} <= names
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert err.value.code == 404
    finally:
        m.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_a_busy_port_is_reported_and_the_daemon_goes_on() -> None:
    first, second = Metrics(), Metrics()
    port = free_port()
    first.expose(MetricsConfig(listen=f"127.0.0.1:{port}"))
    try:
        second.expose(MetricsConfig(listen=f"127.0.0.1:{port}"))
        assert second.port is None
    finally:
        first.close()
        second.close()


def test_the_textfile_is_replaced_whole_and_readable_by_node_exporter(tmp_path: Path) -> None:
    m = Metrics()
    m.configure(_config(), ["fpm-down"])
    path = tmp_path / "textfile" / "remediator.prom"
    m.expose(MetricsConfig(textfile=path))
    m.sample({}, {}, 0.0)
    first = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o644
    m.record({"event": "incident_opened", "playbook": "fpm-down"})
    m.sample({}, {}, 1.0)  # not yet due
    assert path.read_text() == first
    m.close()  # written at the end too
    text = path.read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["remediator_incidents_opened"].samples[0].value == 1
    assert [p.name for p in path.parent.iterdir()] == ["remediator.prom"]  # no temp left


@pytest.mark.parametrize(
    ("metrics", "error"),
    [
        ("{listen: 0.0.0.0:9465}", "is not a loopback address"),
        ("{listen: 'localhost:9465'}", "is not an address to listen on"),
        ("{listen: '127.0.0.1'}", "is not an address to listen on"),
        ("{textfile: /var/lib/node/remediator.txt}", "ending in .prom"),
    ],
)
def test_the_metrics_section_is_checked(tmp_path: Path, metrics: str, error: str) -> None:
    path = tmp_path / "remediator.yaml"
    path.write_text(f"state_dir: {tmp_path}/state\nmetrics: {metrics}\n")
    path.chmod(0o600)
    loaded = load(path)
    errors = [str(e) for e in loaded.all_errors()]
    assert loaded.config is None
    assert any(error in e and f"{path}:2:" in e for e in errors), errors


def test_a_remote_listen_address_is_accepted_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "remediator.yaml"
    path.write_text(
        f"state_dir: {tmp_path}/state\nmetrics: {{listen: '[::]:9465', allow_remote: true}}\n"
    )
    path.chmod(0o600)
    loaded = load(path)
    assert loaded.config is not None, [str(e) for e in loaded.all_errors()]
    assert loaded.config.metrics.listen == "[::]:9465"


# --- the notifiers ----------------------------------------------------------------------------


def _ctx(notifiers: dict[str, Notifier], system: System | None = None) -> ActionContext:
    return ActionContext(
        system=system or System(),
        services={},
        notifiers=notifiers,
        playbook="fpm-down",
        incident="20261205T100000Z-abcdef",
        summary="fpm-down: 3 x 502 in 10s on access | done: restart fpm, verified",
        opened_at="2026-12-05T10:00:00.000Z",
    )


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:9093", "http://127.0.0.1:9093/api/v2/alerts"),
        ("http://am.example:9093/am/", "http://am.example:9093/am/api/v2/alerts"),
        ("http://127.0.0.1:9093/api/v2/alerts", "http://127.0.0.1:9093/api/v2/alerts"),
    ],
)
def test_the_alertmanager_url_is_its_v2_alerts_api(base: str, url: str) -> None:
    assert alerts_url(base) == url


def test_an_alert_fires_then_resolves_with_its_labels() -> None:
    with receiving() as hook:
        am = Notifier(url=hook.url("/"), format="alertmanager", labels={"team": "web"})
        ctx = _ctx({"am": am})
        fired = notify(NotifyArgs(notifier="am", message="restarting"), ctx)
        done = resolve(["am"], ctx)
    assert fired.outcome is Outcome.OK and done[0][1].outcome is Outcome.OK
    (p1, _, first), (p2, _, second) = hook.received
    assert p1 == p2 == "/api/v2/alerts"
    assert first[0]["labels"] == second[0]["labels"]
    assert first[0]["labels"] | {"host": "-"} == {
        "alertname": "RemediatorIncident",
        "host": "-",
        "playbook": "fpm-down",
        "incident": "20261205T100000Z-abcdef",
        "team": "web",
    }
    assert first[0]["annotations"] == {
        "summary": ctx.summary,
        "description": "restarting",
        "runbook": f"remediator log --incident {ctx.incident}; remediator report {ctx.incident}",
    }
    assert first[0]["startsAt"] == second[0]["startsAt"] == "2026-12-05T10:00:00.000Z"
    assert "endsAt" not in first[0] and second[0]["endsAt"] > second[0]["startsAt"]


def test_an_alert_label_of_the_config_cannot_replace_the_alerts_own() -> None:
    with receiving() as hook:
        am = Notifier(url=hook.url("/"), format="alertmanager", labels={"playbook": "x"})
        notify(NotifyArgs(notifier="am"), _ctx({"am": am}))
    assert hook.received[0][2][0]["labels"]["playbook"] == "fpm-down"


def _catcher(tmp_path: Path, rc: int = 0) -> Path:
    script = tmp_path / "sendmail"
    out = tmp_path / "mail"
    out.mkdir()
    script.write_text(
        f"#!{sys.executable}\nimport sys, json\n"
        f"open({str(out / 'argv')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"open({str(out / 'msg')!r}, 'wb').write(sys.stdin.buffer.read())\n"
        f"print('refused') if {rc} else None\nsys.exit({rc})\n"
    )
    script.chmod(0o755)
    return script


def test_mail_goes_to_sendmail_t_with_the_summary(tmp_path: Path) -> None:
    mail = Notifier(format="mail", to=("ops@example.com",), sendmail=_catcher(tmp_path))
    ctx = _ctx({"ops": mail})
    result = notify(NotifyArgs(notifier="ops", message="PHP-FPM down"), ctx)
    assert result.outcome is Outcome.OK, result.reason
    assert json.loads((tmp_path / "mail" / "argv").read_text()) == ["-t", "-oi"]
    msg = email.message_from_bytes(
        (tmp_path / "mail" / "msg").read_bytes(), policy=email.policy.default
    )
    assert msg["To"] == "ops@example.com"
    assert msg["X-Remediator-Incident"] == ctx.incident
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "PHP-FPM down" in text and ctx.summary in text
    assert f"remediator report {ctx.incident}" in text  # where the on-call finds the page


def test_mail_refused_by_sendmail_is_a_failed_notification(tmp_path: Path) -> None:
    mail = Notifier(format="mail", to=("ops@example.com",), sendmail=_catcher(tmp_path, rc=75))
    result = notify(NotifyArgs(notifier="ops"), _ctx({"ops": mail}))
    assert result.outcome is Outcome.FAILED
    assert "sendmail exited 75: refused" in result.reason


def test_a_dry_run_mails_nothing(tmp_path: Path) -> None:
    mail = Notifier(format="mail", to=("ops@example.com",), sendmail=_catcher(tmp_path))
    result = notify(NotifyArgs(notifier="ops"), _ctx({"ops": mail}, DryRunSystem()))
    assert result.outcome is Outcome.WOULD_RUN
    assert not (tmp_path / "mail" / "msg").exists()
    assert result.details["would"][0]["to"] == ["ops@example.com"]


@pytest.mark.parametrize(
    ("notifier", "error"),
    [
        ("{format: mail}", "needs its recipients in 'to'"),
        ("{format: mail, to: ops@example.com, url: 'http://x'}", "give 'to', not a URL"),
        ("{format: mail, to: 'a@b.c\\nBcc: x@y.z'}", "is not a valid mail address"),
        ("{url: 'http://x', to: ops@example.com}", "only for format: mail"),
        ("{url: 'http://x', labels: {team: web}}", "only for format: alertmanager"),
        ("{url: 'http://x', format: alertmanager, labels: {'0bad': x}}", "not a valid label"),
    ],
)
def test_the_notifiers_are_checked(tmp_path: Path, notifier: str, error: str) -> None:
    path = tmp_path / "remediator.yaml"
    path.write_text(f"state_dir: {tmp_path}/state\nnotifiers:\n  n: {notifier}\n")
    path.chmod(0o600)
    loaded = load(path)
    errors = [str(e) for e in loaded.all_errors()]
    assert any(error in e for e in errors), errors


# --- through the engine -----------------------------------------------------------------------

ENGINE_CONFIG = """
sources:
  acc: {{type: access_log, path: /var/log/nginx/access.log}}
  site: {{type: probe, url: "http://127.0.0.1:1/"}}
services:
  fpm: {{kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s}}
notifiers:
  am: {{url: "{url}", format: alertmanager}}
playbooks:
  - name: fpm-down
    when: {{status_rate: {{source: acc, status: 502, window: 20s, at_least: 10}}}}
    steps:
      - restart: fpm
        verify: {{within: 2s}}
    on_exhausted: {{notify: am, stop: true}}
"""


def test_an_incident_is_counted_and_its_alert_resolved_when_it_closes(tmp_path: Path) -> None:
    def restart(args: Any, ctx: ActionContext) -> ActionResult:
        return ActionResult(Outcome.OK, "restarted", target="fpm")

    with receiving() as hook:
        path = tmp_path / "r.yaml"
        path.write_text(ENGINE_CONFIG.format(url=hook.url("/")))
        (tmp_path / "playbooks.d").mkdir()
        loaded = load(path)
        assert loaded.config is not None, loaded.all_errors()
        signals = Signals.for_conditions(
            c for pb in loaded.playbooks for c in walk_conditions(pb.when)
        )
        alog = ActionLog(tmp_path / "actions.jsonl", journal=False)
        guards = Guards(tmp_path / "state", loaded.config.guards, 0)
        actions = {**NOTIFY, "restart": restart}
        engine = Engine(loaded.config, loaded.playbooks, signals, guards, alog, System(), actions)
        m = Metrics()
        m.configure(loaded.config, [pb.name for pb in loaded.playbooks])
        engine.records.on_record = m.record
        signals.statuses["acc"].add(100, 502, 40)
        engine.tick(100)  # the trigger holds, but log lines alone are not enough
        assert not _open(engine)
        signals.probes["site"].record(False, "HTTP 502", 102)
        engine.tick(102)  # corroborated: opened, restarted, verifying
        assert _open(engine)
        for t in range(103, 106):  # still 502s: no step helped
            signals.statuses["acc"].add(t, 502, 40)
            engine.tick(t)
        assert engine.incident is None
    records = list(read(tmp_path / "actions.jsonl"))
    opened = next(r for r in records if r["event"] == "incident_opened")
    assert opened["detection_ms"] == 2000.0  # from the trigger first holding
    notified = [r for r in records if r["event"] == "notify"]
    assert [r["outcome"] for r in notified] == ["ok", "ok"]
    assert notified[1]["reason"].startswith("incident closed")
    fired, resolved = (body[0] for _, _, body in hook.received)
    assert "endsAt" not in fired and resolved["endsAt"] >= resolved["startsAt"]
    assert resolved["annotations"]["summary"].endswith("outcome: exhausted")
    assert _value(m, "remediator_incidents_total", playbook="fpm-down", outcome="exhausted") == 1
    assert _value(m, "remediator_notifications_total", notifier="am", outcome="ok") == 2
    assert _value(m, "remediator_detection_seconds_sum", playbook="fpm-down") == 2.0
    labels = {"action": "restart", "service": "fpm", "outcome": "ok"}
    assert _value(m, "remediator_actions_total", **labels) == 1


def _open(engine: Engine) -> bool:
    return engine.incident is not None


# --- the daemon: reloads ----------------------------------------------------------------------


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


def _reload_ok(port: int) -> float | None:
    text = _scrape(port) or ""
    for family in text_string_to_metric_families(text):
        if family.name == "remediator_config_last_reload_successful":
            return float(family.samples[0].value)
    return None


def test_a_reload_is_told_in_the_metrics_and_moves_the_endpoint(tmp_path: Path) -> None:
    (tmp_path / "access.log").touch()
    first, second = free_port(), free_port()
    cfg: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "action_log": str(tmp_path / "actions.jsonl"),
        "log_format": "json",
        "sources": {"access": {"type": "access_log", "path": str(tmp_path / "access.log")}},
        "metrics": {"listen": f"127.0.0.1:{first}"},
    }
    with DaemonProcess(tmp_path, cfg) as daemon:
        wait_for(lambda: _reload_ok(first) == 1, 10, "metrics on the first port")
        daemon.config_path.write_text(dump(cfg) + "bogus: 1\n")
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(lambda: _reload_ok(first) == 0, 10, "the refused reload in the metrics")
        daemon.config_path.write_text(dump(cfg | {"metrics": {"listen": f"127.0.0.1:{second}"}}))
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(lambda: _reload_ok(second) == 1, 10, "metrics on the second port")
        assert _scrape(first) is None
        assert daemon.is_running()
