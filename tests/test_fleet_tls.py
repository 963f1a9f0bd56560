"""The fleet over TLS with client-certificate auth, against a real etcd (Debian's
``etcd-server``, one member for the module) serving HTTPS with certificates the test makes with
``openssl``: the ``fleet:`` section's ``ca_file``/``cert_file``/``key_file`` take a slot; a
wrong CA is refused, and the hold-back, the action log and ``status`` say why (no traceback).
"""

from __future__ import annotations

import io
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from remediator import status
from remediator.actionlog import ActionLog, read
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.config import Config
from remediator.detect import Signals
from remediator.engine import Engine
from remediator.fleet.decision import Answer
from remediator.fleet.etcd import Etcd, Tls, Unreachable
from remediator.fleet.gate import Gate, build
from remediator.fleet.semaphore import Semaphore
from remediator.guards import Guards
from remediator.load import Loaded, load
from remediator.playbook import walk_conditions
from remediator.system import System
from tests.etcdcluster import EtcdCluster
from tests.stack import wait_for

CONFIG = """
action_log: {root}/actions.jsonl
sources:
  site: {{type: probe, url: "http://127.0.0.1:1/"}}
services:
  fpm: {{kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s}}
fleet:
  etcd: {endpoints}
  pool: tls
  host: web-1
  poll: 50ms
  ca_file: {ca}
  cert_file: {pki}/client.pem
  key_file: {pki}/client-key.pem
playbooks:
  - name: fpm-down
    when: {{probe_failing: {{probe: site, consecutive: 1}}}}
    steps: [{{restart: fpm}}]
"""


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    # under the tests' trusted temp root: the loader judges the TLS files like config
    with EtcdCluster(1, tmp_path_factory.mktemp("etcd-tls"), tls=True) as cluster:
        cluster.start()
        yield cluster


def _load(root: Path, etcd: EtcdCluster, ca: Path) -> Loaded:
    assert etcd.pki is not None
    (root / "playbooks.d").mkdir()
    cfg = root / "r.yaml"
    text = CONFIG.format(root=root, endpoints=etcd.endpoints, ca=ca, pki=etcd.pki.root)
    cfg.write_text(textwrap.dedent(text))
    loaded = load(cfg)
    assert loaded.config is not None and loaded.ok, loaded.all_errors()
    assert loaded.warnings == [], loaded.warnings
    return loaded


def _gate(config: Config) -> Gate:
    assert config.fleet is not None
    return build(config.fleet, "web-1", password=None, wake=lambda: None)


def _answer(gate: Gate, answer: Answer) -> None:
    wait_for(lambda: gate.want("fpm-down").answer is answer, 15, f"the answer {answer}", 0.01)


def test_the_configured_ca_cert_and_key_take_a_slot_over_https(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    assert etcd.pki is not None and etcd.endpoints[0].startswith("https://")
    gate = _gate(_load(tmp_path, etcd, etcd.pki.ca).config)  # type: ignore[arg-type]
    try:
        _answer(gate, Answer.GRANTED)
        gate.opened("fpm-down", "inc-1")
        # another host of the pool, with the same certificates, sees who holds the slot
        tls = Tls(str(etcd.pki.ca), str(etcd.pki.client), str(etcd.pki.client_key))
        other = Semaphore(Etcd(etcd.endpoints, tls=tls), pool="tls", slots=1, ttl=5, host="w2")
        wait_for(
            lambda: [h.incident for h in other.standing().holders] == ["inc-1"],
            15,
            "the holder's label, read over https",
        )
        gate.release()
        wait_for(lambda: other.standing().holders == (), 15, "the slot given back")
    finally:
        gate.close()


def test_a_host_without_a_client_certificate_is_refused_and_told_why(etcd: EtcdCluster) -> None:
    assert etcd.pki is not None
    bare = Semaphore(
        Etcd(etcd.endpoints, tls=Tls(str(etcd.pki.ca))), pool="tls", slots=1, ttl=5, host="w3"
    )
    with pytest.raises(Unreachable, match="etcd refused this host's client certificate"):
        bare.claim()


def test_a_wrong_ca_holds_and_says_why_in_the_log_and_status(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    assert etcd.pki is not None
    loaded = _load(tmp_path, etcd, etcd.pki.other_ca)  # a CA that signed nothing of etcd's
    config = loaded.config
    assert config is not None
    conds = [c for pb in loaded.playbooks for c in walk_conditions(pb.when)]
    signals = Signals.for_conditions(conds)
    calls: list[str] = []

    def restart(args: Any, ctx: ActionContext) -> ActionResult:
        calls.append("restart")
        return ActionResult(Outcome.OK, "restarted")

    engine = Engine(
        config,
        loaded.playbooks,
        signals,
        Guards(tmp_path / "state", config.guards, 0),
        ActionLog(config.action_log, journal=False),
        System(),
        {"restart": restart},
    )
    gate = engine.seat.slots = _gate(config)
    try:
        with structlog.testing.capture_logs() as logs:
            signals.probes["site"].record(False, "HTTP 502", time.monotonic())

            def held() -> bool:
                engine.tick(time.monotonic())
                return any(r["event"] == "trigger_held_back" for r in read(config.action_log))

            wait_for(held, 15, "the hold-back", 0.01)
        rec = next(r for r in read(config.action_log) if r["event"] == "trigger_held_back")
        why = "TLS: certificate verify failed: unable to get local issuer certificate"
        assert (rec["guard"], rec["reason"]) == ("fleet", f"fleet unreachable ({why})")
        assert calls == [] and engine.incident is None  # on_unreachable: hold
        assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs
        assert not [e for e in logs if "exc_info" in e], logs
        # status, as the daemon publishes it
        state = tmp_path / "state"
        data = {"pid": 1, "config": "r.yaml", "updated": time.time(), "fleet": gate.view()}
        state.mkdir(exist_ok=True)
        (state / "status.json").write_text(json.dumps(data))
        out = io.StringIO()
        status.show(state, out, as_json=False)
        shown = out.getvalue()
        assert "this host (web-1) unreachable" in shown, shown
        assert f"  etcd: {etcd.endpoints[0]}: {why}" in shown, shown
    finally:
        gate.close()
