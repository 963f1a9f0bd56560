"""The ``fleet:`` section: which etcd, which pool, how many hosts of it may act at once.

Declarations only (imported with the configuration); nothing of etcd is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from remediator.schema import Choice, Duration, Int, ListOf, PathSpec, Str, Url, opt

NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


@dataclass(frozen=True)
class Fleet:
    """A pool of hosts behind one load balancer, of which at most `max_concurrent` run a
    changing step at once, coordinated through etcd (see docs/fleet.md). Without this section
    remediator never talks to etcd."""

    etcd: tuple[str, ...] = opt(
        ListOf(Url(), min_len=1, single=True),
        "etcd client URLs (`http://` or `https://`), every member of the cluster: a dead one "
        "is passed over.",
    )
    pool: str = opt(
        Str(pattern=NAME, pattern_help=" (letters, digits, _.-)", what="pool name"),
        "The pool's name: the hosts that share it share its slots.",
    )
    max_concurrent: int = opt(
        Int(min=1, max=1000), "How many hosts of the pool may run changing steps at once.", 1
    )
    lease_ttl: float = opt(
        Duration(min=2, max=600),
        "The lease of a slot: a host that dies (or loses etcd) holding one loses it this "
        "long after its last renewal (it renews every third of it).",
        10.0,
    )
    on_unreachable: str = opt(
        Choice(("hold", "act")),
        "When no etcd member answers: `hold` does not act (`held: fleet unreachable`); `act` "
        "acts alone, and the action log says so.",
        "hold",
    )
    host: str | None = opt(
        Str(pattern=NAME, pattern_help=" (letters, digits, _.-)", what="host name"),
        "This host's name in the pool, as `status` and hold-backs show it. Unset: the hostname.",
        None,
    )
    timeout: float = opt(
        Duration(min=0.05, max=10),
        "Each request to etcd gives up after this long (then the next member is tried); "
        "never on the daemon's loop, which does not wait for etcd.",
        1.0,
    )
    poll: float = opt(
        Duration(min=0.05, max=60),
        "While waiting for a slot a host watches the line, and takes a slot given back at "
        "once; when the watch cannot be opened it looks again this often.",
        0.5,
    )
    ca_file: Path | None = opt(
        PathSpec(),
        "The CA (PEM) that signed etcd's server certificates; unset: the system's CAs. Judged "
        "like config: root's, written by no one else (it decides whom this host trusts).",
        None,
    )
    cert_file: Path | None = opt(
        PathSpec(), "Client certificate (PEM; etcd `--client-cert-auth`), with `key_file`.", None
    )
    key_file: Path | None = opt(
        PathSpec(),
        "The client certificate's key (PEM); `check` warns when others can read it (0600 root).",
        None,
    )
    username: str | None = opt(Str(what="etcd user"), "etcd user (etcd auth enabled).", None)
    password_file: Path | None = opt(
        PathSpec(),
        "A file holding the etcd user's password on one line; root's alone (mode 0600), in "
        "directories only root can write.",
        None,
    )
    prefix: str = opt(
        Str(pattern=r"/[A-Za-z0-9_./-]*", what="key prefix"),
        "Where in etcd's key space the pools live.",
        "/remediator/fleet/",
    )

    def check(self) -> list[tuple[str, str]]:
        if (self.cert_file is None) != (self.key_file is None):
            return [("cert_file", "give both cert_file and key_file, or neither")]
        if (self.username is None) != (self.password_file is None):
            return [("username", "give both username and password_file, or neither")]
        return []
