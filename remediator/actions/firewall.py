"""The local firewall rules that match an upstream: read-only evidence for ``diagnose``.

Reads nftables (``nft -j list ruleset``) and iptables (``iptables-save``, and
``ip6tables-save`` for an IPv6 upstream) through the system seam as observations, and reports
each rule that an upstream's connection would meet, in either direction: *to* it (its address
as destination, its port as destination port) or *from* it (the replies: its address and port
as source). Constraints on this host's own side (its source address, an interface) are not
judged: a rule is reported when every constraint it places on the upstream's side holds and it
places at least one. Chains whose policy drops are reported too. Nothing here writes a rule.

The rules are root's, but their text (comments) is still output from a command: bounded here,
escaped wherever it is shown.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from remediator.system import System

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
RULESET_LIMIT = 4 * 1024 * 1024  # bytes of a ruleset read (a big one holds many sets)
MAX_REPORTED = 50  # rules reported per backend
MAX_TEXT = 300  # characters of a rule's text
COMMAND_TIMEOUT = 5.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Upstream:
    """An upstream as given: an address, a port, or both."""

    text: str
    address: Address | None
    port: int | None


def parse_upstream(text: str) -> Upstream | str:
    """``192.0.2.5:9000``, ``[2001:db8::5]:9000``, ``192.0.2.5``, ``2001:db8::5`` or ``:9000``;
    the reason when it is none of them."""
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "x" if rest else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        return f"'{text}': the port must be 1 to 65535"
    address: Address | None = None
    if host:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return (
                f"'{text}' is not an address: write 192.0.2.5:9000, [2001:db8::5]:9000, an "
                "address alone or :9000 (rules match addresses, not names; a unix socket "
                "passes no firewall)"
            )
    if address is None and not port:
        return f"'{text}': give an address, a port or both"
    return Upstream(text, address, int(port) if port else None)


# --- constraints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constraint:
    """A rule's condition on one field: ``daddr``, ``saddr``, ``dport`` or ``sport``. ``values``
    None: a set by name, or anything else not judged here (the rule may match)."""

    field: str
    values: tuple[Network | tuple[int, int], ...] | None
    negated: bool = False

    def judge(self, up: Upstream, direction: str) -> bool | None:
        """True/False when this constrains the upstream's side in ``direction``; None when it
        does not (this host's side, or a value not given for the upstream) or cannot tell."""
        mine = {"to": ("daddr", "dport"), "from": ("saddr", "sport")}[direction]
        if self.field not in mine:
            return None
        if self.field.endswith("addr"):
            if up.address is None:
                return None
            value: Any = up.address
        else:
            if up.port is None:
                return None
            value = up.port
        if self.values is None:
            return None
        hit = any(_contains(v, value) for v in self.values)
        return hit != self.negated


def _contains(v: Network | tuple[int, int], value: Address | int) -> bool:
    if isinstance(v, tuple):
        return isinstance(value, int) and v[0] <= value <= v[1]
    return not isinstance(value, int) and value.version == v.version and value in v


@dataclass
class Rule:
    backend: str
    table: str
    chain: str
    text: str
    verdict: str
    constraints: list[Constraint] = field(default_factory=list)
    handle: int | None = None
    hook: str | None = None

    def matches(self, up: Upstream) -> str | None:
        """The direction (``to``/``from``) in which ``up``'s traffic meets this rule."""
        for direction in ("to", "from"):
            verdicts = [c.judge(up, direction) for c in self.constraints]
            if False in verdicts:
                continue
            if True in verdicts:
                return direction
        return None

    def record(self, up: Upstream, direction: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "upstream": up.text,
            "direction": direction,
            "table": self.table,
            "chain": self.chain,
            "verdict": self.verdict,
            "rule": self.text[:MAX_TEXT],
        }
        if self.hook:
            out["hook"] = self.hook
        if self.handle is not None:
            out["handle"] = self.handle
        if any(c.values is None for c in self.constraints):
            out["maybe"] = True  # a named set or a value not judged here
        return out


# --- nftables -----------------------------------------------------------------------------------

_NFT_FIELDS = {
    ("ip", "daddr"): "daddr",
    ("ip", "saddr"): "saddr",
    ("ip6", "daddr"): "daddr",
    ("ip6", "saddr"): "saddr",
    **{(p, f): f for p in ("tcp", "udp", "th", "sctp", "dccp") for f in ("dport", "sport")},
}
_VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return", "queue", "continue")


def nft_rules(ruleset: Any) -> tuple[list[Rule], list[dict[str, Any]]]:
    """The rules of ``nft -j list ruleset`` and the chains whose policy drops."""
    items = ruleset.get("nftables", []) if isinstance(ruleset, dict) else []
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: list[Rule] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("chain"), dict):
            c = item["chain"]
            chains[(str(c.get("family")), str(c.get("table")), str(c.get("name")))] = c
        elif isinstance(item.get("rule"), dict):
            rules.append(_nft_rule(item["rule"], chains))
    policies = [
        {
            "table": f"{fam} {table}",
            "chain": name,
            "hook": c.get("hook"),
            "policy": c.get("policy"),
        }
        for (fam, table, name), c in chains.items()
        if c.get("policy") == "drop" and c.get("hook") in ("output", "input", "forward")
    ]
    return rules, policies


def _nft_rule(r: dict[str, Any], chains: dict[tuple[str, str, str], dict[str, Any]]) -> Rule:
    family, table, chain = str(r.get("family")), str(r.get("table")), str(r.get("chain"))
    parts: list[str] = []
    constraints: list[Constraint] = []
    verdict = "continue"
    for expr in r.get("expr") or []:
        if not isinstance(expr, dict) or not expr:
            continue
        key, val = next(iter(expr.items()))
        if key == "match" and isinstance(val, dict):
            parts.append(_nft_match_text(val))
            c = _nft_constraint(val)
            if c is not None:
                constraints.append(c)
        elif key in _VERDICTS:
            verdict = key
            parts.append(_verdict_text(key, val))
        elif key != "counter":
            parts.append(key)
    if r.get("comment"):
        parts.append(f'comment "{r["comment"]}"')
    hook = chains.get((family, table, chain), {}).get("hook")
    handle = r.get("handle")
    return Rule(
        "nftables",
        f"{family} {table}",
        chain,
        " ".join(parts),
        verdict,
        constraints,
        handle if isinstance(handle, int) else None,
        str(hook) if hook else None,
    )


def _verdict_text(key: str, val: Any) -> str:
    """``drop``, ``jump other``, ``reject with icmp host-unreachable``."""
    if not isinstance(val, dict):
        return key
    if val.get("target"):
        return f"{key} {val['target']}"
    if key == "reject" and val.get("expr"):
        return f"reject with {val.get('type', '')} {val['expr']}".replace("  ", " ")
    return key


def _nft_constraint(m: dict[str, Any]) -> Constraint | None:
    left = m.get("left")
    payload = left.get("payload") if isinstance(left, dict) else None
    if not isinstance(payload, dict):
        return None
    name = _NFT_FIELDS.get((str(payload.get("protocol")), str(payload.get("field"))))
    if name is None:
        return None
    op = m.get("op", "==")
    if op not in ("==", "!=", "in"):
        return Constraint(name, None)
    values = _nft_values(m.get("right"), name.endswith("addr"))
    return Constraint(name, values, negated=op == "!=")


def _nft_values(right: Any, address: bool) -> tuple[Network | tuple[int, int], ...] | None:
    items = right["set"] if isinstance(right, dict) and "set" in right else [right]
    out: list[Network | tuple[int, int]] = []
    for item in items if isinstance(items, list) else []:
        try:
            if isinstance(item, dict) and "prefix" in item and address:
                p = item["prefix"]
                out.append(ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False))
            elif isinstance(item, dict) and "range" in item:
                lo, hi = item["range"]
                if address:
                    return None  # an address range: not judged here
                out.append((int(lo), int(hi)))
            elif address and isinstance(item, str) and not item.startswith("@"):
                out.append(ipaddress.ip_network(item, strict=False))
            elif not address and isinstance(item, int):
                out.append((item, item))
            else:
                return None  # a named set (@name), a map, something new: not judged
        except (ValueError, KeyError, TypeError):
            return None
    return tuple(out) or None


def _nft_match_text(m: dict[str, Any]) -> str:
    def side(v: Any) -> str:
        if isinstance(v, dict):
            if "payload" in v and isinstance(v["payload"], dict):
                return f"{v['payload'].get('protocol')} {v['payload'].get('field')}"
            if "meta" in v and isinstance(v["meta"], dict):
                return f"meta {v['meta'].get('key')}"
            if "set" in v and isinstance(v["set"], list):
                return "{ " + ", ".join(side(x) for x in v["set"]) + " }"
            if "prefix" in v and isinstance(v["prefix"], dict):
                return f"{v['prefix'].get('addr')}/{v['prefix'].get('len')}"
            if "range" in v and isinstance(v["range"], list):
                return "-".join(side(x) for x in v["range"])
            return next(iter(v), "?")
        return str(v)

    op = m.get("op", "==")
    shown = "" if op in ("==", "in") else f" {op}"
    return f"{side(m.get('left'))}{shown} {side(m.get('right'))}"


# --- iptables -----------------------------------------------------------------------------------

_IPT_OPTIONS = {
    "-d": "daddr",
    "--destination": "daddr",
    "--dst": "daddr",
    "-s": "saddr",
    "--source": "saddr",
    "--src": "saddr",
    "--dport": "dport",
    "--destination-port": "dport",
    "--dports": "dport",
    "--destination-ports": "dport",
    "--sport": "sport",
    "--source-port": "sport",
    "--sports": "sport",
    "--source-ports": "sport",
}


def iptables_rules(text: str, backend: str = "iptables") -> tuple[list[Rule], list[dict[str, Any]]]:
    """The rules of ``iptables-save`` output and the built-in chains whose policy drops."""
    rules: list[Rule] = []
    policies: list[dict[str, Any]] = []
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            policy = rest.split(" ", 1)[0]
            if policy == "DROP" and name in ("INPUT", "OUTPUT", "FORWARD"):
                policies.append({"table": table, "chain": name, "policy": "drop"})
        elif line.startswith("-A "):
            rule = _ipt_rule(line, table, backend)
            if rule is not None:
                rules.append(rule)
    return rules, policies


def _ipt_rule(line: str, table: str, backend: str) -> Rule | None:
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    chain = words[1] if len(words) > 1 else "?"
    constraints: list[Constraint] = []
    verdict = "continue"
    negate = False
    i = 2
    while i < len(words):
        w = words[i]
        if w == "!":
            negate = True
            i += 1
            continue
        arg = words[i + 1] if i + 1 < len(words) else ""
        name = _IPT_OPTIONS.get(w)
        if name is not None:
            constraints.append(Constraint(name, _ipt_values(arg, name), negate))
            i += 2
        elif w in ("-j", "--jump", "-g", "--goto"):
            verdict = arg.lower() if arg in ("ACCEPT", "DROP", "REJECT", "RETURN") else arg
            i += 2
        else:
            i += 1
        negate = False
    return Rule(backend, table, chain, line[:MAX_TEXT], verdict, constraints)


def _ipt_values(arg: str, name: str) -> tuple[Network | tuple[int, int], ...] | None:
    out: list[Network | tuple[int, int]] = []
    try:
        for part in arg.split(","):
            if name.endswith("addr"):
                out.append(ipaddress.ip_network(part, strict=False))
            elif ":" in part:  # a range, either end open
                lo, _, hi = part.partition(":")
                out.append((int(lo or 0), int(hi or 65535)))
            else:
                out.append((int(part), int(part)))
    except ValueError:
        return None
    return tuple(out) or None


# --- the report ---------------------------------------------------------------------------------


def _program(name: str) -> str | None:
    return shutil.which(name, path=PATH)


def firewall(upstreams: Iterable[Upstream], system: System) -> dict[str, Any]:
    """The rules matching each upstream, per backend (read-only, through ``system``)."""
    ups = list(upstreams)
    out: dict[str, Any] = {"upstreams": [u.text for u in ups]}
    backends: list[tuple[str, list[str], str]] = [
        ("nftables", ["nft", "-j", "list", "ruleset"], "json"),
        ("iptables", ["iptables-save"], "text"),
    ]
    if any(u.address is None or u.address.version == 6 for u in ups):
        backends.append(("ip6tables", ["ip6tables-save"], "text"))
    matched = 0
    for backend, argv, kind in backends:
        found = _read(backend, argv, kind, system)
        if "rules" in found:
            reported: list[dict[str, Any]] = []
            for rule in found.pop("rules"):
                for up in ups:
                    direction = rule.matches(up)
                    if direction is not None and len(reported) < MAX_REPORTED:
                        reported.append(rule.record(up, direction))
            found["matching"] = reported
            matched += len(reported)
        out[backend] = found
    out["matching"] = matched
    return out


def _read(backend: str, argv: list[str], kind: str, system: System) -> dict[str, Any]:
    program = _program(argv[0])
    if program is None:
        return {"ok": False, "error": f"{argv[0]} is not installed"}
    result = system.observe([program, *argv[1:]], COMMAND_TIMEOUT, limit=RULESET_LIMIT)
    if not result.ok:
        why = "timed out" if result.timed_out else f"rc {result.returncode}"
        first = (result.output.strip().splitlines() or [""])[0][:MAX_TEXT]
        return {"ok": False, "error": f"{argv[0]}: {why}" + (f": {first}" if first else "")}
    if len(result.output.encode()) >= RULESET_LIMIT:
        return {"ok": False, "error": f"{argv[0]}: the ruleset is larger than can be read"}
    if kind == "json":
        try:
            rules, policies = nft_rules(json.loads(result.output or "{}"))
        except ValueError as exc:
            return {"ok": False, "error": f"nft: unreadable JSON: {exc}"}
    else:
        rules, policies = iptables_rules(result.output, backend)
    return {"ok": True, "rules": rules, "rules_read": len(rules), "drop_policies": policies}
