"""The ``dns`` source against a real DNS server on loopback (dnsmasq), its wire parser on
hostile bytes, the ``dns_mismatch`` condition, and its config errors."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediator.config import DnsSource
from remediator.detect import Signals, evaluate, holds
from remediator.events import JudgedOn
from remediator.playbook import DnsMismatch, NotOf, Verify
from remediator.sources.dns import Resolver
from remediator.sources.dnswire import DnsError, QType, encode_name, parse, query, read_name
from remediator.verify import Health, Verifier
from tests.dnsmasq import Dnsmasq, Silent
from tests.wired import load_text

WWW = "www.example.test"


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    with Dnsmasq(tmp_path, cnames=[("alias.example.test", WWW)]) as server:
        server.set({WWW: ["127.0.0.5"]})
        yield server


def _source(server: str, *names: str, **options: object) -> DnsSource:
    base: dict[str, object] = {
        "names": names or (WWW,),
        "servers": (server,),
        "expect": ("127.0.0.5",),
        "types": ("A",),
        "timeout": 1.0,
    }
    return DnsSource(**(base | options))  # type: ignore[arg-type]


# --- the real server: right, then wrong, then gone -------------------------------------------


def test_a_name_resolving_to_the_expected_address_is_no_mismatch(dns: Dnsmasq) -> None:
    found = Resolver("site", _source(dns.server)).run()
    assert not found.mismatch
    assert found.answers() == [
        {"name": WWW, "server": dns.server, "addresses": ["127.0.0.5"], "ok": True}
    ]


def test_a_name_moved_elsewhere_is_a_mismatch_naming_the_address(dns: Dnsmasq) -> None:
    dns.set({WWW: ["127.0.0.9"]})
    found = Resolver("site", _source(dns.server)).run()
    assert found.mismatch
    assert found.answers()[0]["reason"] == "unexpected 127.0.0.9"
    assert f"{WWW} at {dns.server}: unexpected 127.0.0.9" in found.detail


def test_one_expected_address_beside_an_unexpected_one_is_a_mismatch(dns: Dnsmasq) -> None:
    dns.set({WWW: ["127.0.0.5", "127.0.0.9"]})
    found = Resolver("site", _source(dns.server)).run()
    assert found.mismatch and found.answers()[0]["addresses"] == ["127.0.0.5", "127.0.0.9"]


def test_a_name_that_no_longer_exists_is_a_mismatch_with_nxdomain(dns: Dnsmasq) -> None:
    dns.set({})
    found = Resolver("site", _source(dns.server)).run()
    assert found.mismatch
    assert found.answers()[0]["reason"] == "A NXDOMAIN"


def test_a_server_that_refuses_is_a_mismatch_with_its_rcode(dns: Dnsmasq) -> None:
    found = Resolver("site", _source(dns.server, "www.elsewhere.test")).run()
    assert found.mismatch and found.answers()[0]["reason"] == "A REFUSED"


def test_a_server_that_never_answers_times_out() -> None:
    with Silent() as silent:
        found = Resolver("site", _source(silent.server, timeout=0.2)).run()
    assert found.mismatch
    assert found.answers()[0]["reason"] == "A timed out after 0.2s"


def test_a_cname_is_followed_to_the_address(dns: Dnsmasq) -> None:
    found = Resolver("site", _source(dns.server, "alias.example.test")).run()
    assert not found.mismatch, found.detail


def test_tcp_gives_the_same_answer(dns: Dnsmasq) -> None:
    assert not Resolver("site", _source(dns.server, tcp=True)).run().mismatch
    dns.set({WWW: ["127.0.0.9"]})
    assert Resolver("site", _source(dns.server, tcp=True)).run().mismatch


def test_a_name_with_no_record_of_one_type_is_fine_if_another_has_one(dns: Dnsmasq) -> None:
    found = Resolver("site", _source(dns.server, types=("A", "AAAA"))).run()
    assert not found.mismatch, found.detail


def test_this_host_accepts_an_address_on_an_interface(dns: Dnsmasq) -> None:
    dns.set({WWW: ["127.0.0.1"]})  # lo's address: this host's
    found = Resolver("site", _source(dns.server, expect=(), this_host=True)).run()
    assert not found.mismatch, found.detail
    dns.set({WWW: ["192.0.2.77"]})  # TEST-NET-1: on no interface here
    assert Resolver("site", _source(dns.server, expect=(), this_host=True)).run().mismatch


def test_every_server_is_asked_and_one_wrong_server_is_a_mismatch(
    dns: Dnsmasq, tmp_path: Path
) -> None:
    (tmp_path / "second").mkdir()
    with Dnsmasq(tmp_path / "second") as other:
        other.set({WWW: ["127.0.0.9"]})
        found = Resolver("site", _source(dns.server, servers=(dns.server, other.server))).run()
    assert found.mismatch
    assert [a["ok"] for a in found.answers()] == [True, False]


def test_the_system_resolver_reads_etc_hosts() -> None:
    src = DnsSource(names=("localhost",), expect=("127.0.0.1", "::1"), timeout=2.0)
    assert not Resolver("sys", src).run().mismatch
    src = DnsSource(names=("localhost",), expect=("192.0.2.1",), timeout=2.0)
    found = Resolver("sys", src).run()
    assert found.mismatch and found.answers()[0]["server"] == "system"


# --- the condition ------------------------------------------------------------------------------


def test_dns_mismatch_holds_once_it_lasted_and_clears_when_right_again(dns: Dnsmasq) -> None:
    cond = DnsMismatch(source="site", lasting=5.0)
    sig = Signals.for_conditions([cond])
    resolver = Resolver("site", _source(dns.server))

    def look(now: float) -> None:
        r = resolver.run()
        sig.dns["site"].record(r.mismatch, r.detail, r.answers(), now)

    look(100.0)
    assert not holds(cond, sig, 100.0)
    dns.set({WWW: ["127.0.0.9"]})
    look(110.0)
    assert not holds(cond, sig, 114.0)
    look(115.0)
    assert holds(cond, sig, 115.0)
    ok, readings = evaluate(cond, sig, 115.0)
    assert ok and readings[0].detail["answers"][0]["addresses"] == ["127.0.0.9"]
    dns.set({})
    look(120.0)
    assert holds(cond, sig, 120.0)  # NXDOMAIN: still wrong, since 110
    assert "NXDOMAIN" in evaluate(cond, sig, 120.0)[1][0].detail["detail"]
    dns.set({WWW: ["127.0.0.5"]})
    look(125.0)
    assert not holds(cond, sig, 125.0) and not evaluate(cond, sig, 125.0)[0]


def test_not_dns_mismatch_holds_only_after_a_lookup() -> None:
    cond = NotOf(DnsMismatch(source="site", lasting=0.0))
    sig = Signals.for_conditions([DnsMismatch(source="site", lasting=0.0)])
    assert not holds(cond, sig, 1.0) and not evaluate(cond, sig, 1.0)[0]
    sig.dns["site"].record(False, "every name resolves as expected", [], 2.0)
    assert holds(cond, sig, 2.0) and evaluate(cond, sig, 2.0)[0]


# --- the wire parser on hostile bytes ----------------------------------------------------------


def _answer(qid: int, name: str, flags: int = 0x8180, body: bytes = b"", an: int = 0) -> bytes:
    head = struct.pack("!HHHHHH", qid, flags, 1, an, 0, 0)
    return head + encode_name(name) + struct.pack("!HH", QType.A, 1) + body


def test_servfail_is_read_as_its_rcode() -> None:
    assert parse(_answer(7, WWW, 0x8182), 7, WWW, QType.A).answer.rcode == "SERVFAIL"


def test_an_answer_to_another_question_is_refused() -> None:
    with pytest.raises(DnsError):
        parse(_answer(8, WWW), 7, WWW, QType.A)
    with pytest.raises(DnsError):
        parse(_answer(7, "evil.example.test"), 7, WWW, QType.A)


def test_a_compression_loop_is_refused() -> None:
    data = b"\x00" * 12 + b"\xc0\x0c"  # a pointer to itself
    with pytest.raises(DnsError):
        read_name(data, 12)


def test_a_record_longer_than_the_answer_is_refused() -> None:
    rr = b"\xc0\x0c" + struct.pack("!HHIH", QType.A, 1, 60, 400) + b"\x7f\x00\x00\x01"
    with pytest.raises(DnsError):
        parse(_answer(7, WWW, body=rr, an=1), 7, WWW, QType.A)


def test_records_of_other_names_are_not_taken_as_the_names_addresses() -> None:
    other = encode_name("evil.example.test")
    rr = other + struct.pack("!HHIH", QType.A, 1, 60, 4) + b"\x0a\x00\x00\x01"
    rr += b"\xc0\x0c" + struct.pack("!HHIH", QType.A, 1, 60, 4) + b"\x7f\x00\x00\x05"
    got = parse(_answer(7, WWW, body=rr, an=2), 7, WWW, QType.A).answer
    assert got.addresses == ("127.0.0.5",)


def test_a_name_dns_cannot_carry_is_an_error_not_an_exception() -> None:
    assert query("a" * 64 + ".test", QType.A, ("127.0.0.1", 9), 0.1).error


# --- configuration -----------------------------------------------------------------------------


def test_a_dns_source_and_condition_load(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        sources:
          names: {type: dns, names: [www.example.test], expect: [192.0.2.10, "2001:db8::10"],
                  servers: ["127.0.0.1:5353", "[::1]:53", 192.0.2.53], interval: 1m}
        playbooks:
          - name: dns
            when: {dns_mismatch: {source: names, lasting: 2m}}
            steps: [{diagnose: www.example.test}]
        """,
    )
    assert loaded.ok, loaded.all_errors()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "{type: dns, names: [www.example.test], expect: [192.0.2.300]}",
            "sources.d.expect[0]: '192.0.2.300' is not an IP address",
        ),
        (
            "{type: dns, names: [www.example.test]}",
            "sources.d.expect: give the addresses expected or this_host: true (one of them)",
        ),
        (
            "{type: dns, names: [www.example.test], expect: [192.0.2.1], this_host: true}",
            "sources.d.expect: give the addresses expected or this_host: true (one of them)",
        ),
        (
            "{type: dns, names: [www.example.test], this_host: true, servers: [ns1.example.net]}",
            "sources.d.servers[0]: 'ns1.example.net' is not a DNS server address",
        ),
        (
            "{type: dns, names: ['bad name'], this_host: true}",
            "sources.d.names[0]: 'bad name' is not a valid host name",
        ),
        (
            "{type: dns, names: [www.example.test], this_host: true, interval: 2s, timeout: 3s}",
            "sources.d.timeout: must not be longer than interval",
        ),
    ],
)
def test_bad_dns_sources_give_located_errors(tmp_path: Path, source: str, message: str) -> None:
    loaded = load_text(tmp_path, f"sources:\n  d: {source}\n")
    errors = [str(e) for e in loaded.all_errors()]
    assert any("r.yaml:2:" in e and message in e for e in errors), errors


def test_dns_mismatch_must_name_a_dns_source(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        sources:
          site: {type: probe, url: "http://127.0.0.1:1/"}
        playbooks:
          - name: dns
            when: {dns_mismatch: site}
            steps: [{diagnose: www.example.test}]
        """,
    )
    errors = [str(e) for e in loaded.all_errors()]
    assert any("source 'site' is a probe; dns_mismatch needs a dns" in e for e in errors), errors


def test_verification_judges_dns_lookups_made_after_the_action() -> None:
    when = DnsMismatch(source="site", lasting=0.0)
    sig = Signals.for_conditions([when])
    verifier = Verifier(sig)
    v = Verify(trigger_clear=True)
    sig.dns["site"].record(True, "www at system: NXDOMAIN", [], 1.0)
    assert verifier.judge(v, when, 2.0, 2.5).health is Health.UNKNOWN  # nothing since 2.0
    sig.dns["site"].record(True, "www at system: NXDOMAIN", [], 3.0)
    assert verifier.judge(v, when, 2.0, 3.0).health is Health.FAILING
    sig.dns["site"].record(False, "every name resolves as expected", [], 4.0)
    j = verifier.judge(v, when, 2.0, 4.0)
    assert j.health is Health.HEALTHY and j.judged_on == (JudgedOn.DNS,)
