"""The seed's other causes, end to end with the daemon as a process: DNS records that stop
pointing here (a real DNS server on loopback), and something in front of this host (a public
probe failing while the local one answers, against a real nginx + PHP-FPM)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dnsmasq import Dnsmasq
from tests.e2e import DaemonProcess, config, fpm_service, probe
from tests.stack import Nginx, PhpFpm, free_port, wait_for
from tests.webhook import Receiver, receiving

WWW = "www.example.test"


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiving() as server:
        yield server


def test_names_resolving_elsewhere_alert_with_what_each_resolved_to(
    tmp_path: Path, hook: Receiver
) -> None:
    (tmp_path / "dns").mkdir()
    with Dnsmasq(tmp_path / "dns") as dns:
        dns.set({WWW: ["127.0.0.5"]})
        names = {
            "type": "dns",
            "names": [WWW],
            "servers": [dns.server],
            "expect": ["127.0.0.5"],
            "types": ["A"],
            "interval": "1s",
            "timeout": "500ms",
        }
        playbook = {
            "name": "dns-moved",
            "when": {"dns_mismatch": {"source": "names", "lasting": "0s"}},
            "steps": [{"notify": {"notifier": "oncall", "message": "the site's names moved"}}],
        }
        cfg = config(
            tmp_path / "d",
            sources={"names": names},
            services={},
            playbooks=[playbook],
            notifiers={"oncall": {"url": hook.url()}},
        )
        with DaemonProcess(tmp_path / "d", cfg) as daemon:
            asked = dns.queries(WWW)
            wait_for(lambda: dns.queries(WWW) >= asked + 2, 10, "two lookups by the daemon")
            assert daemon.records("incident_opened") == []  # right answers: nothing to say
            dns.set({WWW: ["127.0.0.9"]})
            [opened] = daemon.wait_record("incident_opened", 10, playbook="dns-moved")
            daemon.wait_record("incident_closed", 10)
            wait_for(lambda: bool(hook.received), 5, "the alert")
    [reading] = opened["evidence"]["readings"] if "evidence" in opened else opened["readings"]
    assert reading["condition"] == "dns_mismatch" and reading["holds"]
    assert reading["answers"] == [
        {
            "name": WWW,
            "server": dns.server,
            "addresses": ["127.0.0.9"],
            "ok": False,
            "reason": "unexpected 127.0.0.9",
        }
    ]
    _, _, body = hook.received[0]
    assert body["message"] == "the site's names moved"
    assert f"{WWW} at {dns.server}: unexpected 127.0.0.9" in body["summary"]


@pytest.mark.servers
def test_public_failing_while_local_answers_alerts_instead_of_restarting(
    nginx_fpm: Nginx, tmp_path: Path, hook: Receiver
) -> None:
    fpm = nginx_fpm.fpm
    assert isinstance(fpm, PhpFpm)
    local = probe(nginx_fpm.url(), interval="250ms")
    # The public name's probe goes through what is in front of the host; here, nothing answers.
    public = probe(f"http://127.0.0.1:{free_port()}/", interval="250ms", host=WWW)
    in_front = {
        "name": "something-in-front",
        "priority": 10,
        "when": {
            "all": [
                {"probe_failing": {"probe": "public", "consecutive": 3}},
                {"not": {"probe_failing": {"probe": "local", "consecutive": 1}}},
            ]
        },
        "steps": [{"notify": {"notifier": "oncall", "message": "something in front of this host"}}],
    }
    restart = {  # what is down here is restarted; what is down in front is not ours to restart
        "name": "site-down",
        "when": {"probe_failing": {"probe": "local", "consecutive": 3}},
        "steps": [{"restart": "fpm"}],
    }
    cfg = config(
        tmp_path / "d",
        sources={"local": local, "public": public},
        services={"fpm": fpm_service(fpm)},
        playbooks=[in_front, restart],
        notifiers={"oncall": {"url": hook.url()}},
    )
    master = fpm.master_pid()
    with DaemonProcess(tmp_path / "d", cfg) as daemon:
        [opened] = daemon.wait_record("incident_opened", 10, playbook="something-in-front")
        daemon.wait_record("incident_closed", 10, playbook="something-in-front")
        wait_for(lambda: bool(hook.received), 5, "the alert")
        assert [r for r in daemon.records("action_intent") if r.get("action") == "restart"] == []
    assert fpm.master_pid() == master  # what works was left alone
    assert "probe local answers (status 200)" in opened["reason"]
    _, _, body = hook.received[0]
    assert body["message"] == "something in front of this host"
