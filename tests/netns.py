"""A network namespace of a test's own (``ip netns``): its firewall rules, its loopback.

``with NetNs() as ns:`` adds a namespace with a unique name and brings its ``lo`` up;
:meth:`run` runs a command inside it, :meth:`nft` loads rules there (never in the host's
namespace), :meth:`prefix` is the argv prefix that starts a process inside it. Closing deletes
the namespace; a test ends the processes it started in it first, by their PID.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence

from tests.closing import Closing

IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"


def unavailable() -> str | None:
    """Why namespaces with nftables cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    if shutil.which("nft") is None:
        return "nft is not installed (Debian: nftables; scripts/ensure-system-deps installs it)"
    return None


class NetNs(Closing):
    def __init__(self) -> None:
        self.name = f"remediator-test-{os.getpid()}-{secrets.token_hex(3)}"
        subprocess.run([IP, "netns", "add", self.name], check=True)
        self.run([IP, "link", "set", "lo", "up"])

    def prefix(self) -> list[str]:
        return [IP, "netns", "exec", self.name]

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.prefix(), *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{argv[0]} in {self.name}: rc {done.returncode}: {done.stderr}")
        return done

    def nft(self, rules: str) -> None:
        """Load ``rules`` (nft syntax) into this namespace's ruleset."""
        self.run([NFT, "-f", "-"], stdin=rules)

    def ruleset(self) -> str:
        return self.run([NFT, "list", "ruleset"]).stdout

    def close(self) -> None:
        subprocess.run([IP, "netns", "del", self.name], check=False, capture_output=True)
