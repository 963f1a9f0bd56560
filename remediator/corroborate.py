"""Corroboration: log lines alone never change the host.

Whoever can write a log can forge its lines (logrotate recreates nginx's logs as www-data's,
so a compromised PHP app can). A playbook with a changing step (restart, reload, scale,
command) whose trigger holds on log lines only (``status_rate``, ``status_spike``,
``error_cause``) runs only when something the log writer cannot forge agrees within the
trigger's window: a failing probe, an ``fpm_status`` source that could not get the pool to
serve its status (no answer in time, backlog full, refused: like a probe's failure; a malformed
answer or the page's numbers do not count, since whatever answers a status URL can write
them), or the playbook's service down, failed or not running (``corroborate:`` per playbook). Until then the trigger is held back as ``uncorroborated``:
no run budget is used and no breaker can open, so forged lines can neither act nor use up
the remediation a real outage will need.

Pure functions of a playbook, the config and the signals at ``now``; the engine asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from remediator.config import Config, FpmStatusSource, ProbeSource
from remediator.detect import ProbeState, Reading, ServiceWatch, Signals
from remediator.fpmdetect import FpmState
from remediator.playbook import (
    Corroborate,
    ErrorCause,
    FpmHung,
    FpmSaturated,
    FpmSlow,
    FpmStuck,
    Playbook,
    ProbeFailing,
    ServiceDown,
    StatusRate,
    StatusSpike,
    positive_conditions,
)

LOG_CONDITIONS = frozenset({"status_rate", "status_spike", "error_cause"})
DEFAULT_WINDOW = 30.0


@dataclass(frozen=True)
class Need:
    """What a playbook's log-only trigger must be backed by, and how far back to look."""

    mode: Corroborate
    probes: tuple[str, ...]
    services: tuple[str, ...]
    window: float
    fpm: tuple[str, ...] = ()  # fpm_status sources: a pool that could not serve backs it
    # fpm_status sources read through a URL that the trigger reads: whoever answers the URL
    # writes those numbers, so they back nothing, as log lines do not
    forgeable: tuple[str, ...] = ()

    def wanted(self) -> str:
        """What would corroborate, in words: ``a failure of probe site or fpm down``."""
        parts = []
        if self.probes:
            parts.append(f"a failure of probe {' or '.join(self.probes)}")
        if self.services:
            parts.append(f"{' or '.join(self.services)} down, failed or not running")
        if self.fpm:
            parts.append(f"pool status {' or '.join(self.fpm)} not served")
        what = " or ".join(parts) or "nothing can corroborate it (see `remediator check`)"
        return f"{what} within {self.window:g}s"


@dataclass(frozen=True)
class Judgement:
    """Whether a held trigger may act, what backed it (``by``) or what was missing."""

    ok: bool
    by: str = ""
    missing: str = ""
    seen: dict[str, Any] | None = None

    def record(self, need: Need | None) -> dict[str, Any]:
        """The ``corroboration`` field of an action-log record."""
        out: dict[str, Any] = {"mode": str(need.mode) if need else str(Corroborate.NONE)}
        if self.by:
            out["by"] = self.by
        if self.missing:
            out["missing"] = self.missing
        if self.seen:
            out["seen"] = self.seen
        return out


MANUAL = Judgement(True, "the operator (`remediator trigger`): a person's word, no log needed")


def changes_host(pb: Playbook) -> bool:
    """Whether ``pb`` has a step that changes the host (alert and diagnose only do not)."""
    return any(s.changes_host for s in pb.steps)


def config_probes(config: Config) -> tuple[str, ...]:
    return tuple(n for n, s in config.sources.items() if isinstance(s, ProbeSource))


def config_fpm(config: Config) -> tuple[str, ...]:
    """fpm_status sources: like a probe, their failure to get an answer from the pool is
    something a log writer cannot forge."""
    return tuple(n for n, s in config.sources.items() if isinstance(s, FpmStatusSource))


def _probes(pb: Playbook, config: Config) -> tuple[str, ...]:
    """The probes a playbook names (in its trigger or verification), else every probe: on a
    host with several sites, a failing probe of another site backs nothing here."""
    named = [c.probe for c in positive_conditions(pb.when) if isinstance(c, ProbeFailing)]
    named += [s.verify.probe for s in pb.steps if s.verify is not None and s.verify.probe]
    return tuple(dict.fromkeys(named)) or config_probes(config)


def _services(pb: Playbook) -> tuple[str, ...]:
    """The services the playbook changes, and those its trigger watches."""
    names = [getattr(s.args, "service", None) for s in pb.steps if s.changes_host]
    names += [c.service for c in positive_conditions(pb.when) if isinstance(c, ServiceDown)]
    return tuple(dict.fromkeys(n for n in names if isinstance(n, str)))


def mode_of(pb: Playbook, config: Config) -> Corroborate:
    """The playbook's ``corroborate:``, or its default: ``any`` when something can corroborate
    (a probe in the config, a service the playbook acts on), else ``none``."""
    if pb.corroborate is not None:
        return Corroborate(pb.corroborate)
    if config_probes(config) or config_fpm(config) or _services(pb):
        return Corroborate.ANY
    return Corroborate.NONE


def need_of(pb: Playbook, config: Config) -> Need | None:
    """What ``pb`` needs before acting on log lines alone; None when it needs nothing (it
    changes nothing, or its corroboration is ``none``)."""
    if not changes_host(pb):
        return None
    mode = mode_of(pb, config)
    if mode is Corroborate.NONE:
        return None
    probes = _probes(pb, config) if mode in (Corroborate.PROBE, Corroborate.ANY) else ()
    fpm = config_fpm(config) if mode in (Corroborate.PROBE, Corroborate.ANY) else ()
    services = _services(pb) if mode in (Corroborate.SERVICE, Corroborate.ANY) else ()
    windows = [
        c.window
        for c in positive_conditions(pb.when)
        if isinstance(c, StatusRate | StatusSpike | ErrorCause)
    ]
    window = max(windows, default=DEFAULT_WINDOW)
    return Need(mode, probes, services, window, fpm, _by_url(pb, config))


def _by_url(pb: Playbook, config: Config) -> tuple[str, ...]:
    """The fpm_status sources ``pb``'s trigger reads through a URL (not the pool's socket,
    whose listener is checked to be root's)."""
    return tuple(
        sorted(
            {
                c.source
                for c in positive_conditions(pb.when)
                if isinstance(c, FpmSaturated | FpmHung | FpmSlow | FpmStuck)
                and isinstance(src := config.sources.get(c.source), FpmStatusSource)
                and src.url is not None
            }
        )
    )


def prepare(signals: Signals, needs: Iterable[Need]) -> None:
    """Watch what corroboration will ask about: the live watcher probes every probe and polls
    the service of every entry in ``signals`` (those only corroboration asks about, when asked
    and slowly besides: a ``systemctl show`` every two seconds is not free)."""
    for need in needs:
        for p in need.probes:
            signals.probes.setdefault(p, ProbeState())
        for s in need.services:
            signals.services.setdefault(s, ServiceWatch(on_demand=True))
        for f in need.fpm:
            signals.fpm.setdefault(f, FpmState())


def judge(
    need: Need, readings: list[Reading], signals: Signals, now: float, *, observed: bool = True
) -> Judgement:
    """Whether a trigger that holds (``readings``) may act. ``observed`` False (replay): no
    probe or service state exists, so corroboration is assumed and the record says so."""
    # A negated leaf (a probe that answers, say) says the site works: it backs no outage.
    held = [r for r in readings if r.holds and not r.negated]
    beyond = sorted({r.condition for r in held if not _forgeable(r, need)})
    if beyond:
        return Judgement(True, f"the trigger holds on more than log lines ({', '.join(beyond)})")
    if not observed:
        return Judgement(
            True,
            "assumed: replay sees no probe or service state; live, this runs only on "
            + need.wanted(),
        )
    since = now - need.window
    seen: dict[str, Any] = {}
    for name in need.probes:
        st = signals.probes.get(name) or ProbeState()
        failed = st.last_failed_at
        if failed is not None and failed >= since:
            return Judgement(
                True, f"probe {name} failed {now - failed:.1f}s ago: {st.last_failure}"
            )
        seen[f"probe {name}"] = (
            "no answer yet"
            if st.last_at is None
            else f"{'ok' if st.last_ok else 'failing'} {now - st.last_at:.1f}s ago"
            + (f": {st.last_detail}" if st.last_detail else "")
        )
    for name in need.fpm:
        fs = signals.fpm.get(name) or FpmState()
        if fs.last_failed_at is not None and fs.last_failed_at >= since:
            return Judgement(
                True,
                f"pool status {name} not served {now - fs.last_failed_at:.1f}s ago: "
                f"{fs.last_failure}",
            )
        seen[f"pool status {name}"] = (
            "no read yet"
            if fs.last_at is None
            else f"{'served' if fs.last_ok else 'failing'} {now - fs.last_at:.1f}s ago"
        )
    for name in need.services:
        sw = signals.services.get(name) or ServiceWatch()
        down = sw.down_since is not None or (
            sw.last_down_at is not None and sw.last_down_at >= since
        )
        if down:
            return Judgement(True, f"{name} {sw.last_down or sw.detail or 'down'}")
        seen[name] = "not seen yet" if sw.last_at is None else f"up ({sw.detail})"
    return Judgement(False, missing=need.wanted(), seen=seen)


def _forgeable(r: Reading, need: Need) -> bool:
    """Whether reading ``r`` is something a log writer (or whoever answers a status URL) could
    have made up: it backs no change to the host by itself."""
    if r.condition in LOG_CONDITIONS:
        return True
    return r.condition.startswith("fpm_") and r.detail.get("source") in need.forgeable


def forged_what(need: Need) -> str:
    """What an uncorroborated trigger rests on, in words."""
    return "log lines or pool numbers read through a URL" if need.forgeable else "log lines"


def warnings(config: Config, playbooks: Iterable[Playbook]) -> list[str]:
    """What ``check`` says about corroboration: changing playbooks that forged lines alone
    could set off, and corroboration that can never come."""
    out = []
    for pb in playbooks:
        if not changes_host(pb):
            continue
        mode = mode_of(pb, config)
        need = need_of(pb, config)
        if mode is Corroborate.NONE:
            how = "`corroborate: none`" if pb.corroborate else "nothing can corroborate it"
            out.append(
                f"playbook '{pb.name}': {how}, so log lines alone set off its steps, and "
                "whoever can write those logs can forge them (fix: add a probe source of the "
                "site, or give its steps a service, and leave `corroborate` unset or say `any`)"
            )
        elif need is not None and not need.probes and not need.services and not need.fpm:
            lacks = "no probe source" if mode is Corroborate.PROBE else "no service in its steps"
            out.append(
                f"playbook '{pb.name}': `corroborate: {mode}` but there is {lacks}: a trigger "
                "on log lines will always be held back (fix: add one, or choose `any`)"
            )
    out += _pool_numbers_by_url(config, playbooks)
    return out


def _pool_numbers_by_url(config: Config, playbooks: Iterable[Playbook]) -> list[str]:
    """Changing playbooks set off by a pool's numbers read through the web server (``url``):
    whoever answers that URL writes the numbers (a www-data process that replaces the pool's
    socket in its ``/run/php`` does, for nginx), so they need corroboration as log lines do."""
    out = []
    for pb in playbooks:
        if not changes_host(pb):
            continue
        for name in _by_url(pb, config):
            out.append(
                f"playbook '{pb.name}': its trigger reads pool status {name} through a URL, "
                "whose answer is whoever serves that URL's word (a process that replaces the "
                "pool's socket, in www-data's /run/php, answers for nginx): it acts only when "
                "corroborated, as log lines do, so it cannot act before users see failures "
                "(fix: read the pool's `socket:` instead, whose listener is checked to be "
                "root's)"
            )
    return out


ASK_WAIT = 0.25  # beyond a probe's timeout, for its answer to come back


@dataclass
class Held:
    """A trigger on log lines alone that nothing corroborated: what its held record shows."""

    need: Need
    readings: list[Reading]
    judgement: Judgement
    until: float = 0.0  # while asking: when the answers are due


class Corroboration:
    """The engine's corroboration state: what each playbook needs, which triggers wait for an
    answer to what was asked, and which are held back (for ``status``).

    A trigger on log lines alone is not recorded as held at once: the probes and services
    that could corroborate it are asked first (``ask``), and given until their answers are
    due (the slowest probe's timeout). A real outage is thus corroborated without a held
    record before it; forged lines get one record per hold, with what was missing."""

    def __init__(
        self,
        config: Config,
        playbooks: Iterable[Playbook],
        signals: Signals,
        *,
        observed: bool = True,
    ) -> None:
        self.config = config
        self.signals = signals
        self.needs = {pb.name: need_of(pb, config) for pb in playbooks}
        self.observed = observed  # False (replay): no probe or service state exists
        if observed:
            prepare(signals, (n for n in self.needs.values() if n))
        self.waiting: dict[str, str] = {}  # playbook -> what it waits for (status)
        self._asking: dict[str, Held] = {}
        self._recorded: set[str] = set()

    @property
    def asking(self) -> bool:
        """Whether answers to what was asked are awaited (the daemon ticks again soon)."""
        return bool(self._asking)

    def check(
        self,
        pb: Playbook,
        readings: list[Reading],
        now: float,
        ask: Callable[[Need], bool],
    ) -> tuple[Judgement, Held | None]:
        """Whether ``pb``'s holding trigger may act, and a held trigger to record now (once
        per hold). ``ask`` requests answers from the need's probes and services, and says
        whether anything could be asked."""
        need = self.needs.get(pb.name)
        if need is None:
            return Judgement(True), None
        backed = judge(need, readings, self.signals, now, observed=self.observed)
        if backed.ok:
            self._end(pb.name)
            return backed, None
        self.waiting[pb.name] = backed.missing
        if pb.name in self._recorded:
            return backed, None
        asked = self._asking.get(pb.name)
        if asked is None and ask(need):
            due = max([ASK_WAIT, *(_timeout(self.config, p) for p in need.probes)]) + ASK_WAIT
            self._asking[pb.name] = Held(need, readings, backed, now + due)
            return backed, None
        if asked is not None and now < asked.until:
            asked.readings, asked.judgement = readings, backed
            return backed, None
        self._asking.pop(pb.name, None)
        self._recorded.add(pb.name)
        return backed, Held(need, readings, backed)

    def released(self, name: str) -> Held | None:
        """``name``'s trigger stopped holding: one that held while its answers were awaited
        is recorded all the same, with what it saw."""
        asked = self._asking.get(name)
        self._end(name)
        return asked

    def _end(self, name: str) -> None:
        self._asking.pop(name, None)
        self._recorded.discard(name)
        self.waiting.pop(name, None)


def _timeout(config: Config, probe: str) -> float:
    src = config.sources.get(probe)
    return src.timeout if isinstance(src, ProbeSource) else 0.0
