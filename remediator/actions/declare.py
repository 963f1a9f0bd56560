"""The registry of actions a step can name, each with its declared arguments.

Adding an action means declaring its arguments here (validation, schema and docs follow) and
giving it an implementation in its own module of this package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remediator.schema import (
    Argv,
    Bool,
    Duration,
    Int,
    ListOf,
    MapOf,
    Record,
    Ref,
    Size,
    Str,
    opt,
)

ARG = Str(what="argument", nonempty=False)
ARGV = ListOf(Str(what="argument"), min_len=1)


def _check_endpoint(text: str) -> str | None:
    if text.startswith("unix:"):
        return None if Path(text[5:]).is_absolute() else "a unix socket needs an absolute path"
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"'{text}' is not host:port or unix:/path"
    return None


HOSTNAME = Str(
    pattern=r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?",
    what="host name",
)
ENDPOINT = Str(check=_check_endpoint, what="endpoint (host:port or unix:/path)")


@dataclass(frozen=True)
class ServiceArgs:
    """The service the action applies to."""

    service: str = opt(Ref("service"), "A service from the config's `services`.")


@dataclass(frozen=True)
class ScaleArgs:
    """Change a PHP-FPM pool's `pm.max_children` within the memory the host has.

    The pool file is edited atomically and backed up, tested with the service's config test,
    reloaded, verified, and rolled back when the step does not help.
    """

    service: str = opt(Ref("service", ("php-fpm",), "scale_workers"), "A php-fpm service.")
    by: int | None = opt(
        Int(min=-1000, max=1000),
        "Change by this many (negative lowers). Unset: raise to what memory allows.",
        None,
    )
    min_children: int = opt(Int(min=1, max=10000), "Never go below this.", 2)
    max_children: int = opt(Int(min=1, max=10000), "Never go above this.", 64)
    memory_reserve: int = opt(
        Size(min=0),
        "Memory left for everything else: the budget is available memory minus this, "
        "divided by the average worker's RSS.",
        256 * 1024 * 1024,
    )

    def check(self) -> list[tuple[str, str]]:
        out = []
        if self.by == 0:
            out.append(("by", "changing by 0 does nothing; leave it unset to fit memory"))
        if self.min_children > self.max_children:
            out.append(("min_children", "must not be larger than max_children"))
        return out


def _check_upstream(text: str) -> str | None:
    from remediator.actions.firewall import parse_upstream  # noqa: PLC0415

    parsed = parse_upstream(text)
    return parsed if isinstance(parsed, str) else None


UPSTREAM = Str(check=_check_upstream, what="upstream (address:port, address or :port)")


@dataclass(frozen=True)
class DiagnoseArgs:
    """Collect evidence without changing anything: DNS, TCP connects, config tests, a snapshot,
    the local firewall rules that an upstream's traffic meets."""

    resolve: tuple[str, ...] = opt(ListOf(HOSTNAME, single=True), "Host names to resolve.", ())
    connect: tuple[str, ...] = opt(
        ListOf(ENDPOINT, single=True), "Endpoints to connect to (host:port or unix:/path).", ()
    )
    config_test: tuple[str, ...] = opt(
        ListOf(Ref("service"), single=True), "Services whose config test to run.", ()
    )
    snapshot: bool = opt(Bool(), "Take a host snapshot (memory, load, processes).", True)
    firewall: tuple[str, ...] = opt(
        ListOf(UPSTREAM, single=True),
        "Upstreams (`192.0.2.5:9000`, `[2001:db8::5]:9000`, an address alone, or `:9000`) "
        "whose local firewall rules to report: every nftables rule (`nft -j list ruleset`) and "
        "iptables rule (`iptables-save`, `ip6tables-save`) that traffic to or from them meets, "
        "and chains whose policy drops. Read only: a firewall is never changed.",
        (),
    )


def _check_env_value(text: str) -> str | None:
    return "an environment value cannot hold a NUL character" if "\0" in text else None


ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
ENV = MapOf(
    Str(what="value", nonempty=False, check=_check_env_value),
    what="environment variable name",
    pattern=ENV_NAME,
    pattern_help="letters, digits and _, not starting with a digit",
)
RESERVED_ENV_PREFIX = "REMEDIATOR_"


@dataclass(frozen=True)
class CommandArgs:
    """Run a program (an argv list, never a shell) with a timeout.

    Its environment is minimal: `PATH` (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin),
    `LANG=C.UTF-8`, `REMEDIATOR_PLAYBOOK`, `REMEDIATOR_INCIDENT` and `REMEDIATOR_SERVICE` (when
    the step names one), plus what `env` lists; nothing of the daemon's own environment.
    On timeout every process it started gets TERM, then KILL, also those that left its
    process group or session (`setsid`, a double fork). Arguments may use `{playbook}`,
    `{incident}` and `{service}` but nothing from a log line.
    """

    argv: tuple[str, ...] = opt(
        Argv(),
        "Program and arguments, e.g. [/usr/local/bin/flush-cache]. The program is looked up in "
        "a fixed PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin) when it "
        "has no `/`, and must be root's: owned by root and writable by no one else, in "
        "directories only root can write (checked at load time; the absolute path runs).",
    )
    timeout: float = opt(Duration(min=0.1, max=3600), "Kill it after this long.", 30.0)
    service: str | None = opt(
        Ref("service"), "The service it acts on (counted in that service's action budget).", None
    )
    env: dict[str, str] = opt(
        ENV,
        "Environment variables to set, as literal strings (no placeholders); they may "
        "override `PATH` and `LANG`, not `REMEDIATOR_*`.",
        {},
    )

    def check(self) -> list[tuple[str, str]]:
        out = []
        bad = [a for a in self.argv if _TEMPLATE.search(a) and not _allowed_template(a)]
        if bad:
            out.append(
                (
                    "argv",
                    f"unknown placeholder in '{bad[0]}': use {{playbook}}, {{incident}}, {{service}}",
                )
            )
        reserved = sorted(n for n in self.env if n.upper().startswith(RESERVED_ENV_PREFIX))
        if reserved:
            out.append(("env", f"'{reserved[0]}': REMEDIATOR_* variables are set by remediator"))
        return out


_TEMPLATE = re.compile(r"\{([^{}]*)\}")
TEMPLATE_KEYS = frozenset({"playbook", "incident", "service"})


def _allowed_template(arg: str) -> bool:
    return all(m.group(1) in TEMPLATE_KEYS for m in _TEMPLATE.finditer(arg))


@dataclass(frozen=True)
class NotifyArgs:
    """Send a notification (it never blocks remediation; a failure is logged)."""

    notifier: str = opt(Ref("notifier"), "A notifier from the config's `notifiers`.")
    message: str | None = opt(Str(), "Text to send; the incident's summary is always added.", None)


@dataclass(frozen=True)
class ActionDecl:
    """An action's name, help and argument spec."""

    help: str
    spec: Record[Any]
    changes_host: bool


def _decl(cls: type[Any], help: str, shorthand: str, *, changes_host: bool) -> ActionDecl:
    return ActionDecl(
        help, Record(cls, name=cls.__name__.lower(), shorthand=shorthand), changes_host
    )


ACTIONS: dict[str, ActionDecl] = {
    "reload": _decl(
        ServiceArgs,
        "Graceful reload, only after the service's config test passes.",
        "service",
        changes_host=True,
    ),
    "restart": _decl(ServiceArgs, "Restart the service.", "service", changes_host=True),
    "config_test": _decl(
        ServiceArgs,
        "Run the service's config test and record its output.",
        "service",
        changes_host=False,
    ),
    "scale_workers": _decl(ScaleArgs, ScaleArgs.__doc__ or "", "service", changes_host=True),
    "diagnose": _decl(DiagnoseArgs, DiagnoseArgs.__doc__ or "", "resolve", changes_host=False),
    "command": _decl(CommandArgs, CommandArgs.__doc__ or "", "argv", changes_host=True),
    "notify": _decl(NotifyArgs, NotifyArgs.__doc__ or "", "notifier", changes_host=False),
}

VERIFIABLE = frozenset(name for name, d in ACTIONS.items() if d.changes_host)
