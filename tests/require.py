"""Skip a test for what this host lacks, unless the run requires it: then the test fails.

``REMEDIATOR_REQUIRE`` names, comma-separated, what a run must have: ``systemd`` (a namespaced
systemd can boot: tests/sysd.py) and ``userns`` (a user namespace can be made). ``make test`` sets
both, so the suite cannot go green by skipping what this host could run; the failure carries the
reason, as the skip would have. A plain ``pytest`` run skips with the reason (``-ra`` lists it).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

ENV = "REMEDIATOR_REQUIRE"
KNOWN = frozenset({"systemd", "userns"})


def required() -> frozenset[str]:
    """What this run requires (from ``REMEDIATOR_REQUIRE``); an unknown name is an error."""
    names = frozenset(n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip())
    unknown = names - KNOWN
    if unknown:
        raise ValueError(f"{ENV}: unknown {sorted(unknown)}; known: {', '.join(sorted(KNOWN))}")
    return names


def lacking(what: str, reason: str) -> NoReturn:
    """This host lacks ``what`` (one of :data:`KNOWN`) for ``reason``: skip, or fail if required."""
    if what not in KNOWN:
        raise ValueError(f"unknown requirement {what!r}")
    if what in required():
        pytest.fail(
            f"{ENV} includes {what}, but this host cannot provide it: {reason}", pytrace=False
        )
    pytest.skip(f"no {what} here: {reason}")
