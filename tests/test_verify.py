"""Verification on a clock set by the test: judged on what users got after the action, held
for a settle time, a quiet site judged by its probe; alert-only playbooks; dry-run incidents
inside a daemon that acts for real.

The signals are fed as the live feeder feeds them; actions are small real functions (the real
ones act on real servers in their own tests and end to end)."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import pytest

from remediator.actionlog import read
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.causes import Cause
from remediator.engine import Engine
from tests.wired import wired

CONFIG = """
sources:
  acc: {type: access_log, path: /var/log/nginx/access.log}
  err: {type: error_log, path: /var/log/nginx/error.log, format: nginx-error}
  site: {type: probe, url: "http://127.0.0.1:1/"}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s}
notifiers:
  oncall: {url: "http://127.0.0.1:1/hook"}
playbooks:
  - name: fpm-down
    priority: 10
    when:
      all:
        - status_rate: {source: acc, status: 502, window: 20s, at_least: 10, ratio: 5%}
        - error_cause: {source: err, cause: upstream_refused, window: 20s}
    steps:
      - restart: fpm
        verify: {probe: site, within: 5s, settle: 2s}
    limits: {cooldown: 1m, max_runs: 5, per: 1h}
    on_exhausted: {notify: oncall, stop: true}
  - name: dns-alert
    priority: 20
    when:
      error_cause: {source: err, cause: dns_failure, window: 1m}
    steps:
      - notify: {notifier: oncall, message: "upstream name does not resolve"}
    limits: {cooldown: 5m, max_runs: 2, per: 1h}
"""


class Calls:
    def __init__(self) -> None:
        self.made: list[str] = []
        self.notify_outcome = Outcome.OK

    def actions(self) -> dict[str, Any]:
        def restart(args: Any, ctx: ActionContext) -> ActionResult:
            self.made.append(f"restart dry_run={ctx.system.dry_run}")
            outcome = Outcome.WOULD_RUN if ctx.system.dry_run else Outcome.OK
            return ActionResult(outcome, "restarted", target="fpm", restarted=True)

        def notify(args: Any, ctx: ActionContext) -> ActionResult:
            self.made.append(f"notify {ctx.summary}")
            return ActionResult(self.notify_outcome, "sent", target=args.notifier)

        return {"restart": restart, "notify": notify}


def _wire(tmp_path: Path, *, probes: bool = True) -> tuple[Engine, Calls, Path]:
    calls = Calls()
    w = wired(tmp_path, CONFIG, calls.actions(), probes=probes)
    return w.engine, calls, tmp_path / "actions.jsonl"


@pytest.fixture
def bed(tmp_path: Path) -> tuple[Engine, Calls, Path]:
    return _wire(tmp_path)


def outage(engine: Engine, now: float) -> None:
    """502s and their cause, and the probe failing just before (what corroborates them; in
    replay there is no probe, and corroboration is assumed)."""
    if engine.corroboration.observed:
        engine.signals.probes["site"].record(False, "502", now - 1)
    engine.signals.statuses["acc"].add(now, 502, 40)
    engine.signals.statuses["acc"].add(now, 200, 10)
    engine.signals.causes["err"].add(now, Cause.UPSTREAM_REFUSED, 40)


def probe(engine: Engine, now: float, ok: bool) -> None:
    engine.signals.probes["site"].record(ok, "200 in 3 ms" if ok else "502", now)


def records(path: Path, event: str) -> list[dict[str, Any]]:
    return [r for r in read(path) if r["event"] == event]


def test_a_quiet_site_is_verified_by_its_probe_alone(bed: tuple[Engine, Calls, Path]) -> None:
    engine, _, alog = bed
    outage(engine, 100)
    engine.tick(100)
    for t in (100.5, 101.5, 102.5):  # no requests at all after the action; the probe answers
        probe(engine, t, True)
        engine.tick(t)
    passed = records(alog, "verify_passed")
    assert len(passed) == 1
    assert passed[0]["judged_on"] == "probe"
    assert records(alog, "incident_closed")[0]["outcome"] == "resolved"


def test_the_openings_probe_evidence_says_how_old_its_answer_is(
    bed: tuple[Engine, Calls, Path],
) -> None:
    """A probe asked seldom may have answered before the outage: its answer in the evidence
    carries its age, and `log` says it (else "probe site: ok" beside 502s misleads)."""
    from remediator.review import render  # noqa: PLC0415

    engine, _, alog = bed
    outage(engine, 100)  # the probe failed at 99
    engine.tick(100)
    opened = records(alog, "incident_opened")[0]
    assert opened["evidence"]["probes"]["site"]["age_s"] == 1.0
    out = io.StringIO()
    render([opened], out)
    assert "probe site: failing (502), 1 failure(s) in a row, answered 1s before" in out.getvalue()


def test_one_good_answer_right_after_the_action_is_not_enough(
    bed: tuple[Engine, Calls, Path],
) -> None:
    engine, _, alog = bed
    outage(engine, 100)
    engine.tick(100)
    probe(engine, 100.05, True)  # the restart "worked" for a moment...
    engine.tick(100.05)
    probe(engine, 101, False)  # ...and the pool is saturated again
    engine.signals.statuses["acc"].add(101, 502, 20)
    engine.tick(101)
    for t in (102, 103, 104, 105.1):
        probe(engine, t, False)
        engine.tick(t)
    assert not records(alog, "verify_passed")
    failed = records(alog, "verify_failed")
    assert len(failed) == 1 and failed[0]["reason"].startswith("still failing within 5s (")


def test_a_failure_during_the_settle_starts_it_again(bed: tuple[Engine, Calls, Path]) -> None:
    engine, _, alog = bed
    outage(engine, 100)
    engine.tick(100)
    probe(engine, 100.5, True)
    engine.tick(100.5)
    probe(engine, 101.5, False)
    engine.tick(101.5)
    for t in (102, 103, 104.1):
        probe(engine, t, True)
        engine.tick(t)
    passed = records(alog, "verify_passed")
    assert len(passed) == 1
    assert passed[0]["reason"].startswith("recovered 2.00s after the action")


def test_a_failing_requests_share_outweighs_a_good_probe(bed: tuple[Engine, Calls, Path]) -> None:
    engine, _, alog = bed
    outage(engine, 100)
    engine.tick(100)
    for t in range(101, 107):
        probe(engine, t, True)  # the probe's page works, users' pages do not
        engine.signals.statuses["acc"].add(t, 502, 30)
        engine.signals.statuses["acc"].add(t, 200, 10)
        engine.tick(t)
    assert not records(alog, "verify_passed")
    reason = records(alog, "verify_failed")[0]["reason"]
    assert "30 of 40 requests on acc were 502" in reason


def test_an_alert_only_playbook_completes_and_never_opens_the_breaker(
    bed: tuple[Engine, Calls, Path],
) -> None:
    engine, calls, alog = bed
    engine.signals.causes["err"].add(100, Cause.DNS_FAILURE, 3)
    engine.tick(100)
    closed = records(alog, "incident_closed")
    assert [c["outcome"] for c in closed] == ["completed"]
    assert not records(alog, "breaker_opened")
    assert calls.made[0].startswith("notify dns-alert: 3 x dns_failure in 60s on err")
    # its repeats are governed by its cooldown, not by a breaker
    engine.signals.causes["err"].add(130, Cause.DNS_FAILURE, 3)
    engine.tick(130)
    held = records(alog, "trigger_held_back")
    assert [h["guard"] for h in held] == ["cooldown"]
    engine.signals.causes["err"].add(500, Cause.DNS_FAILURE, 3)
    engine.tick(500)
    assert [c["outcome"] for c in records(alog, "incident_closed")] == ["completed", "completed"]
    assert not records(alog, "breaker_opened")


def test_an_alert_only_playbook_repeats_by_its_cooldown_not_a_back_off(tmp_path: Path) -> None:
    """Back-off spaces fixes that may not fix; an alert changes nothing: once its cooldown is
    over it alerts again (the back-off's first wait, 10 s, would still hold it at 106)."""
    text = CONFIG.replace(
        "limits: {cooldown: 5m, max_runs: 2, per: 1h}",
        "limits: {cooldown: 5s, max_runs: 2, per: 1h}",
    )
    calls = Calls()
    engine = wired(tmp_path, text, calls.actions()).engine
    alog = tmp_path / "actions.jsonl"
    for t in (100, 106, 112):
        engine.signals.causes["err"].add(t, Cause.DNS_FAILURE, 3)
        engine.tick(t)
    assert [c["outcome"] for c in records(alog, "incident_closed")] == ["completed", "completed"]
    held = records(alog, "trigger_held_back")
    assert [h["guard"] for h in held] == ["max_runs"]  # the third: max_runs, still no back-off


def test_an_alert_that_cannot_be_sent_is_incomplete_not_a_breaker(
    bed: tuple[Engine, Calls, Path],
) -> None:
    engine, calls, alog = bed
    calls.notify_outcome = Outcome.FAILED
    engine.signals.causes["err"].add(100, Cause.DNS_FAILURE, 3)
    engine.tick(100)
    assert [c["outcome"] for c in records(alog, "incident_closed")] == ["incomplete"]
    assert not records(alog, "breaker_opened")


def test_exhausted_notifications_carry_the_incident_summary(
    bed: tuple[Engine, Calls, Path],
) -> None:
    engine, calls, alog = bed
    outage(engine, 100)
    engine.tick(100)
    for t in range(101, 107):
        probe(engine, t, False)
        engine.tick(t)
    alert = next(c for c in calls.made if c.startswith("notify"))
    assert "fpm-down: 40 x 502 of 50 requests (80.0%) in 20s on acc" in alert
    assert "done: restart fpm, did not help" in alert
    assert "outcome: exhausted" in alert
    closed = records(alog, "incident_closed")[0]
    assert closed["outcome"] == "exhausted" and "outcome: exhausted" in closed["summary"]


def test_a_dry_run_trigger_in_a_live_daemon_leaves_the_budget_alone(
    bed: tuple[Engine, Calls, Path],
) -> None:
    engine, calls, alog = bed
    pb = next(p for p in engine.playbooks if p.name == "fpm-down")
    assert engine.trigger(pb, 100, who="alice", dry_run=True).allowed
    assert calls.made == ["restart dry_run=True"]
    for t in range(101, 107):
        probe(engine, t, False)
        engine.tick(t)
    recs = list(read(alog))
    assert all(r["dry_run"] is True for r in recs)
    assert [r["outcome"] for r in records(alog, "incident_closed")] == ["exhausted"]
    assert not records(alog, "breaker_opened")  # a dry run fixes nothing: no breaker for it
    assert engine.guards.may_run(pb, 107).allowed  # nor a cooldown
    outage(engine, 108)
    engine.tick(108)
    assert calls.made[-1] == "restart dry_run=False"  # the real remediation is not held back


def test_a_dry_run_trigger_gives_way_to_a_real_outage_at_once(
    bed: tuple[Engine, Calls, Path],
) -> None:
    """An operator trying a playbook in dry run must not keep the daemon from acting."""
    engine, calls, alog = bed
    pb = next(p for p in engine.playbooks if p.name == "fpm-down")
    assert engine.trigger(pb, 100, who="alice", dry_run=True).allowed
    engine.tick(100.5)  # verifying the dry run: nothing is wrong yet
    assert engine.incident is not None and engine.incident.dry_run
    outage(engine, 101)
    engine.tick(101)
    assert calls.made == ["restart dry_run=True", "restart dry_run=False"]
    closed = records(alog, "incident_closed")
    assert [(c["outcome"], c["dry_run"]) for c in closed] == [("superseded", True)]
    assert closed[0]["reason"].endswith("this dry run gave way to a real incident")
    assert engine.incident is not None and not engine.incident.dry_run


def test_replay_judges_a_probe_verified_step_on_the_logs_and_never_fails_it_for_lack_of_probes(
    tmp_path: Path,
) -> None:
    engine, _, alog = _wire(tmp_path, probes=False)
    outage(engine, 100)
    engine.tick(100)
    for t in range(101, 110):  # the log goes quiet: no requests, no probes
        engine.tick(t)
    assert not records(alog, "verify_failed")
    unknown = records(alog, "verify_unknown")
    assert len(unknown) == 1 and unknown[0]["judged_on"] == "logs"
    assert [c["outcome"] for c in records(alog, "incident_closed")] == ["unverified"]
    assert not records(alog, "breaker_opened")


def _timed_line(status: int, took: float) -> bytes:
    return (
        f'127.0.0.1 - - [05/Dec/2026:16:00:00 +0000] "GET / HTTP/1.1" {status} 12 "-" "curl" '
        f"rt={took:.3f} us={status} urt={took:.3f}"
    ).encode()


@pytest.mark.parametrize(("took", "healthy_after"), [(0.8, "1.00s"), (0.1, "2.00s")])
def test_requests_that_started_before_the_action_are_left_out_by_their_logged_duration(
    tmp_path: Path, took: float, healthy_after: str
) -> None:
    """A 502 logged 0.3 s after the restart for a request that took 0.8 s was the old pool's
    failure, not the new one's: the site is healthy from the first look. Had it taken 0.1 s,
    the new pool failed it, and health counts only from the next second."""
    timed = textwrap.dedent(CONFIG).replace(
        "path: /var/log/nginx/access.log}", "path: /var/log/nginx/access.log, format: nginx-timed}"
    )
    w = wired(tmp_path, timed, Calls().actions(), probes=False)
    acc = Path("/var/log/nginx/access.log")
    outage(w.engine, 100)
    w.engine.tick(100)  # restarts at 100
    w.feeder.feed(acc, [_timed_line(502, took)] * 20, 100.3)
    for t in range(101, 108):
        w.feeder.feed(acc, [_timed_line(200, 0.004)] * 5, t)
        w.engine.tick(t)
    alog = tmp_path / "actions.jsonl"
    reason = records(alog, "verify_passed")[0]["reason"]
    assert reason.startswith(f"recovered {healthy_after} after the action")
    assert ("20 that started before the action left out" in reason) is (took > 0.3)
    assert not w.engine.signals.early and w.engine.signals.acted_at is None  # the count ended


def test_count_alone_keeps_forged_200s_from_faking_a_recovery(tmp_path: Path) -> None:
    """With ``count_alone`` on the trigger, as many 5xx after the action as would trip it are
    a failure whatever the ratio: 1,000 forged 200s a second cannot verify a broken restart."""
    text = CONFIG.replace(
        "at_least: 10, ratio: 5%}", "at_least: 10, ratio: 5%, count_alone: 25}"
    ).replace("verify: {probe: site, within: 5s, settle: 2s}", "verify: {within: 5s, settle: 2s}")
    w = wired(tmp_path, text, Calls().actions())
    outage(w.engine, 100)
    w.engine.tick(100)
    for t in range(101, 107):
        w.engine.signals.statuses["acc"].add(t, 502, 30)  # real failures go on
        w.engine.signals.statuses["acc"].add(t, 200, 1000)  # forged lines dilute them to 3 %
        w.engine.tick(t)
    alog = tmp_path / "actions.jsonl"
    assert not records(alog, "verify_passed")
    assert records(alog, "verify_failed")
