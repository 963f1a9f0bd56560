"""What an incident opens with: the readings that tripped, the lines behind them, the probes'
last answers and a host snapshot; and when the trouble was first seen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remediator.detect import Reading, Signals
from remediator.incident import causes_of, reading, sources_of
from remediator.playbook import Condition, Playbook, walk_conditions


def lines(signals: Signals, when: Condition) -> dict[str, list[str]]:
    """The last matching lines of each source ``when`` reads (those that have any)."""
    return {
        src: list(signals.samples.get(src, ()))
        for src in sources_of(when)
        if signals.samples.get(src)
    }


def gather(
    pb: Playbook,
    readings: list[Reading],
    signals: Signals,
    snapshot: Callable[[], dict[str, Any]] | None,
    now: float,
) -> dict[str, Any]:
    """The evidence an opening record carries."""
    evidence: dict[str, Any] = {
        "readings": [reading(r) for r in readings],
        "causes": causes_of(pb.when),
        "lines": lines(signals, pb.when),
        "probes": {
            name: {
                "ok": st.last_ok,
                "detail": st.last_detail,
                "consecutive_failures": st.consecutive_failures,
                "age_s": round(now - st.last_at, 1),  # a probe asked seldom may be old news
            }
            for name, st in signals.probes.items()
            if st.last_at is not None
        },
    }
    if snapshot is not None:
        try:
            evidence["host"] = snapshot()
        except Exception as exc:  # evidence is best effort; acting does not depend on it
            evidence["host"] = {"error": str(exc)}
    return evidence


def first_sign(when: Condition, signals: Signals, holding_since: float) -> float:
    """When the trouble was first seen: the trigger first holding in this streak
    (``holding_since``), or earlier, a service it names first seen down, a dns source first
    wrong."""
    first = holding_since
    for cond in walk_conditions(when):
        watch = getattr(cond, "service", None)
        down = signals.services.get(watch) if isinstance(watch, str) else None
        if down is not None and down.down_since is not None:
            first = min(first, down.down_since)
        source = getattr(cond, "source", None)
        dns = signals.dns.get(source) if isinstance(source, str) else None
        if dns is not None and dns.mismatch_since is not None:
            first = min(first, dns.mismatch_since)
    return first
