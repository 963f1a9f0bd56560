"""diagnose's firewall report against real nftables and iptables rules, in a network namespace
of the test's own (the host's firewall is never touched)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediator.actions.declare import DiagnoseArgs
from remediator.actions.firewall import Upstream, iptables_rules, nft_rules, parse_upstream
from tests.e2e import DaemonProcess, config, nginx_sources
from tests.netns import NetNs, unavailable
from tests.stack import NGINX, Nginx, free_port, wait_for

CURL = shutil.which("curl") or "/usr/bin/curl"
ROOT = Path(__file__).resolve().parent.parent

_HOOK = """
import json, sys
from tests.webhook import Receiver

class Kept(list):
    def append(self, item):
        super().append(item)
        with open(sys.argv[1], "a") as out:
            out.write(json.dumps(item[2]) + "\\n")

hook = Receiver()
hook.received = Kept()
print(hook.port, flush=True)
hook.serve_forever(poll_interval=0.05)
"""

# Not root: namespaces cannot be made; skipped with the reason. A missing nft or iptables is a
# failure: scripts/ensure-system-deps installs them.
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ip netns add)")

OUTPUT_CHAIN = """
table inet guard {
    chain out {
        type filter hook output priority 0; policy accept;
        %s
    }
}
"""

_RUNNER = """
import json, sys
from remediator.actions.declare import DiagnoseArgs
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.actions.diagnose import diagnose
from remediator.system import System

ctx = ActionContext(System(), {}, {}, "fw", "inc-1")
args = DiagnoseArgs(firewall=tuple(sys.argv[1:]), snapshot=False)
r = diagnose(args, ctx, config_test=lambda n, c: ActionResult(Outcome.OK, ""))
print(json.dumps({"outcome": r.outcome.value, "reason": r.reason, "details": r.details}))
"""


@pytest.fixture
def ns() -> Iterator[NetNs]:
    missing = unavailable()
    if missing is not None:
        pytest.fail(missing)
    with NetNs() as space:
        yield space


def diagnose_in(ns: NetNs, *upstreams: str) -> dict[str, Any]:
    """``diagnose`` with ``firewall: upstreams`` run inside ``ns`` (its ruleset, its nft)."""
    out = ns.run([sys.executable, "-c", _RUNNER, *upstreams])
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def matching(result: dict[str, Any], backend: str = "nftables") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = result["details"]["firewall"][backend]["matching"]
    return found


def test_a_rule_dropping_the_upstreams_port_is_in_the_diagnosis(ns: NetNs) -> None:
    ns.nft(OUTPUT_CHAIN % 'tcp dport 9000 drop comment "no fastcgi"')
    result = diagnose_in(ns, "127.0.0.1:9000")
    assert result["outcome"] == "ok"
    [rule] = matching(result)
    assert rule["upstream"] == "127.0.0.1:9000" and rule["direction"] == "to"
    assert (rule["table"], rule["chain"], rule["hook"]) == ("inet guard", "out", "output")
    assert rule["verdict"] == "drop"
    assert rule["rule"] == 'tcp dport 9000 drop comment "no fastcgi"'
    assert "firewall: 1 rule(s) match" in result["reason"]
    assert "tcp dport 9000 drop" in result["reason"]


def test_rules_for_other_ports_and_addresses_are_left_out(ns: NetNs) -> None:
    ns.nft(OUTPUT_CHAIN % "tcp dport 9001 drop\n ip daddr 10.0.0.0/8 tcp dport 9000 drop")
    result = diagnose_in(ns, "127.0.0.1:9000")
    assert matching(result) == []
    assert "firewall: no rule matches 127.0.0.1:9000" in result["reason"]


def test_prefixes_sets_and_ranges_match(ns: NetNs) -> None:
    ns.nft(
        OUTPUT_CHAIN % "ip daddr 10.1.0.0/16 tcp dport { 80, 9000 } reject\n"
        " tcp dport 8000-8999 counter accept\n"
        " ip daddr != 10.1.2.3 drop"
    )
    got = {r["rule"]: r for r in matching(diagnose_in(ns, "10.1.2.3:9000", "10.9.9.9:8080"))}
    assert (
        got["ip daddr 10.1.0.0/16 tcp dport { 80, 9000 } reject with icmp port-unreachable"][
            "upstream"
        ]
        == "10.1.2.3:9000"
    )
    assert got["tcp dport 8000-8999 accept"]["upstream"] == "10.9.9.9:8080"
    assert got["ip daddr != 10.1.2.3 drop"]["upstream"] == "10.9.9.9:8080"
    assert len(got) == 3


def test_a_rule_on_the_replies_matches_from_the_upstream(ns: NetNs) -> None:
    ns.nft(
        "table ip guard { chain inbound { type filter hook input priority 0; policy accept;"
        " ip saddr 127.0.0.1 tcp sport 9000 drop; }; }"
    )
    [rule] = matching(diagnose_in(ns, "127.0.0.1:9000"))
    assert rule["direction"] == "from" and rule["hook"] == "input"


def test_a_chain_that_drops_by_policy_is_reported(ns: NetNs) -> None:
    ns.nft(OUTPUT_CHAIN.replace("policy accept", "policy drop") % "oif lo accept")
    wall = diagnose_in(ns, "127.0.0.1:9000")["details"]["firewall"]
    assert wall["nftables"]["drop_policies"] == [
        {"table": "inet guard", "chain": "out", "hook": "output", "policy": "drop"}
    ]


def test_an_iptables_rule_is_in_the_diagnosis(ns: NetNs) -> None:
    added = "-A OUTPUT -d 127.0.0.1/32 -p tcp --dport 9000 -j REJECT"
    ns.run(["iptables", *added.split()])
    result = diagnose_in(ns, "127.0.0.1:9000")
    [rule] = matching(result, "iptables")
    assert rule["chain"] == "OUTPUT" and rule["verdict"] == "reject"
    assert rule["rule"].startswith("-A OUTPUT -d 127.0.0.1/32 -p tcp")


def test_the_diagnosis_changes_no_rule(ns: NetNs) -> None:
    ns.nft(OUTPUT_CHAIN % "tcp dport 9000 drop")
    before = ns.ruleset()
    diagnose_in(ns, "127.0.0.1:9000", "[::1]:9000")
    assert ns.ruleset() == before


def test_an_empty_firewall_is_read_and_matches_nothing(ns: NetNs) -> None:
    wall = diagnose_in(ns, ":9000")["details"]["firewall"]
    assert wall["nftables"]["ok"] and wall["nftables"]["matching"] == []
    assert wall["matching"] == 0


# --- the parsers on what the tools print, and the arguments ------------------------------------


def test_a_named_set_is_reported_as_a_maybe() -> None:
    ruleset = {
        "nftables": [
            {"chain": {"family": "inet", "table": "t", "name": "o", "hook": "output"}},
            {
                "rule": {
                    "family": "inet",
                    "table": "t",
                    "chain": "o",
                    "handle": 3,
                    "expr": [
                        {
                            "match": {
                                "op": "==",
                                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                                "right": "@blocked",
                            }
                        },
                        {
                            "match": {
                                "op": "==",
                                "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                                "right": 9000,
                            }
                        },
                        {"drop": None},
                    ],
                }
            },
        ]
    }
    rules, _ = nft_rules(ruleset)
    up = parse_upstream("127.0.0.1:9000")
    assert isinstance(up, Upstream)
    assert rules[0].matches(up) == "to"
    assert rules[0].record(up, "to")["maybe"] is True


def test_iptables_multiport_ranges_and_negation() -> None:
    rules, policies = iptables_rules(
        "*filter\n:OUTPUT DROP [0:0]\n"
        "-A OUTPUT -p tcp -m multiport --dports 80,9000:9010 -j DROP\n"
        '-A OUTPUT ! -d 127.0.0.0/8 -p tcp -m comment --comment "a \\"quoted\\" one" -j ACCEPT\n'
        "COMMIT\n"
    )
    up = parse_upstream("127.0.0.1:9005")
    assert isinstance(up, Upstream)
    assert [r.matches(up) for r in rules] == ["to", None]
    assert policies == [{"table": "filter", "chain": "OUTPUT", "policy": "drop"}]


def test_garbage_from_nft_reads_as_no_rule() -> None:
    rules, _ = nft_rules({"nftables": [1, "x", {"rule": {"expr": [{"match": 5}, {}, 7]}}]})
    up = parse_upstream(":9000")
    assert isinstance(up, Upstream)
    assert len(rules) == 1 and not rules[0].constraints and rules[0].matches(up) is None
    assert nft_rules([]) == ([], [])


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("127.0.0.1:9000", True),
        ("[::1]:9000", True),
        ("10.0.0.5", True),
        ("2001:db8::5", True),
        (":9000", True),
        ("php-upstream:9000", False),
        ("127.0.0.1:70000", False),
        ("unix:/run/php/php-fpm.sock", False),
    ],
)
def test_firewall_upstreams_are_addresses_or_ports(text: str, ok: bool) -> None:
    assert isinstance(parse_upstream(text), Upstream) is ok


def test_diagnose_args_default_to_no_firewall() -> None:
    assert DiagnoseArgs().firewall == ()


# --- end to end: nginx meets a firewall rule, the daemon diagnoses it ---------------------------


@pytest.mark.servers
def test_an_upstream_behind_a_firewall_rule_is_diagnosed_by_the_daemon(
    ns: NetNs, tmp_path: Path
) -> None:
    """In the namespace: a rule answers connections to the FastCGI port with host-unreachable;
    a real nginx logs `(113: No route to host)`; the daemon (in the namespace too) classifies
    it `upstream_unreachable` and its diagnose step reports that rule, changing nothing."""
    upstream = f"127.0.0.1:{free_port()}"
    port = upstream.rsplit(":", 1)[1]
    ns.nft(OUTPUT_CHAIN % f"tcp dport {port} reject with icmp type host-unreachable")
    before = ns.ruleset()
    nginx = Nginx(upstream=upstream)  # its own readable workdir (workers run as nobody)
    alerts = tmp_path / "alerts.jsonl"
    hook = subprocess.Popen(  # the webhook, inside the namespace too
        [*ns.prefix(), sys.executable, "-c", _HOOK, str(alerts)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert hook.stdout is not None
    hook_port = int(hook.stdout.readline())
    playbook = {
        "name": "upstream-unreachable",
        "when": {"error_cause": {"source": "errors", "cause": "upstream_unreachable"}},
        "steps": [
            {"diagnose": {"firewall": upstream, "connect": upstream, "snapshot": False}},
            {"notify": {"notifier": "oncall", "message": "the upstream is unreachable"}},
        ],
    }
    cfg = config(
        tmp_path / "d",
        sources={"errors": nginx_sources(nginx)["errors"]},
        services={},
        playbooks=[playbook],
        notifiers={"oncall": {"url": f"http://127.0.0.1:{hook_port}/hook"}},
    )
    try:
        ns.run([NGINX, "-c", str(nginx.conf), "-e", str(nginx.error_log)])
        with DaemonProcess(tmp_path / "d", cfg, prefix=ns.prefix()) as daemon:
            curl = [CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", nginx.url()]
            assert ns.run(curl).stdout == "502"
            [result] = daemon.wait_record("action_result", 15, action="diagnose")
            [closed] = daemon.wait_record("incident_closed", 10)
            wait_for(lambda: alerts.exists() and alerts.read_text().endswith("\n"), 5, "alert")
    finally:
        nginx.cleanup()
        os.killpg(hook.pid, signal.SIGKILL)
        hook.wait()
    assert closed["outcome"] == "completed"
    [alert] = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert alert["message"] == "the upstream is unreachable"
    assert f"tcp dport {port} reject" in alert["summary"]  # the diagnosis travels with it
    wall = result["details"]["firewall"]
    [rule] = wall["nftables"]["matching"]
    assert rule["verdict"] == "reject" and rule["upstream"] == upstream
    assert rule["rule"] == f"tcp dport {port} reject with icmp host-unreachable"
    assert result["details"]["connect"][0]["error"] == "OSError: No route to host"
    assert f"tcp dport {port} reject" in result["reason"]
    assert ns.ruleset() == before
