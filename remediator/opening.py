"""Which playbook may open an incident now: its trigger holds on evidence not yet acted on,
something a log writer cannot forge backs it (:mod:`remediator.corroborate`), the guards allow
it, some step could run, and the fleet gives it a slot. Whatever holds one back is recorded
once (:mod:`remediator.holdback`); the first that may run is the engine's to open."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from remediator import corroborate, evidence
from remediator.config import Config
from remediator.detect import Reading, Signals, evaluate, holds
from remediator.fleet import hook
from remediator.fleet.seat import Seat
from remediator.guards import Guards
from remediator.holdback import HoldBacks
from remediator.playbook import Playbook

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Start:
    """A playbook that may open an incident now, with what it opens on."""

    pb: Playbook
    readings: list[Reading]
    backed: corroborate.Judgement
    slot: hook.Slot | None


class Openings:
    def __init__(
        self,
        config: Config,
        playbooks: list[Playbook],
        signals: Signals,
        guards: Guards,
        corroboration: corroborate.Corroboration,
        holds: HoldBacks,
        seat: Seat,
        ask: Callable[[corroborate.Need], bool],
    ) -> None:
        self._config = config
        self._playbooks = playbooks
        self._signals = signals
        self._guards = guards
        self._corroboration = corroboration
        self._holds = holds
        self._seat = seat
        self._ask = ask  # asks probes and services that could corroborate now
        # When each playbook's trigger started holding, in this streak (detection time).
        self._holding_since: dict[str, float] = {}

    def choose(self, now: float, since: float | None) -> tuple[Start | None, bool]:
        """The first playbook that may open an incident now, judged on evidence after
        ``since`` (when the last incident was acted on), and whether one asked the fleet for
        its slot (and waits in line, or may open with it)."""
        in_line = False
        for pb in self._playbooks:
            if not holds(pb.when, self._signals, now, since=since):
                asked = self._corroboration.released(pb.name)
                if asked is not None:  # it held, uncorroborated, while answers were awaited
                    self._holds.uncorroborated(pb, asked)
                self._holds.forget(pb.name)
                self._holding_since.pop(pb.name, None)
                continue
            self._holding_since.setdefault(pb.name, now)
            readings = evaluate(pb.when, self._signals, now, since=since)[1]
            backed, uncorroborated = self._corroboration.check(pb, readings, now, self._ask)
            if uncorroborated is not None:
                self._holds.uncorroborated(pb, uncorroborated)
            if not backed.ok:
                continue
            self._returned(pb, readings, now)
            verdict = self._guards.may_run(pb, now)
            if verdict.allowed:
                verdict = self._guards.all_steps_held(pb, self._config.services, now) or verdict
            slot: hook.Slot | None = None
            if verdict.allowed:
                verdict, slot = self._seat.ask(pb)
                in_line = in_line or self._seat.in_line
                if verdict is hook.ASKING:
                    return None, True  # the answer wakes the loop
            if not verdict.allowed:
                self._holds.record(pb, verdict, readings)
                continue
            return Start(pb, readings, backed, slot), in_line
        return None, in_line

    def detected(self, pb: Playbook, now: float) -> float:
        """When the trouble ``pb`` opens for was first seen (its detection time starts)."""
        return evidence.first_sign(pb.when, self._signals, self._holding_since.pop(pb.name, now))

    def _returned(self, pb: Playbook, readings: list[Reading], now: float) -> None:
        """``pb``'s trigger holds, corroborated: if its last incident was resolved moments
        ago, the remedy only worked for a moment (counted for flap detection). A trigger on
        log lines alone counts only when corroborated by what was seen since that close: the
        failures of the outage just fixed back no forged lines written after it."""
        resolved = self._guards.awaiting_return(pb.name)
        if resolved is None:
            return
        need = self._corroboration.needs.get(pb.name)
        if need is not None and self._corroboration.observed:
            fresh = dataclasses.replace(need, window=max(0.0, now - resolved))
            if not corroborate.judge(fresh, readings, self._signals, now).ok:
                return
        back = self._guards.trigger_holds(pb.name, pb.flap or self._config.guards.flap, now)
        if back is not None:
            log.info("trigger_returned", playbook=pb.name, after=round(back.after, 2))
            self._guards.save(now)
