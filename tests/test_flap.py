"""Flapping is a failure: a remedy whose incidents resolve while the trigger comes straight
back is not repeated; the playbook escalates to its next step, then alerts.

The engine is wired as the daemon wires it (tests/wired.py), on a clock set by the test; the
probe's answers are fed as the live watcher feeds them; the actions are small real functions
(the real ones act on real servers in their own tests and end to end)."""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path
from typing import Any

from remediator.actionlog import read
from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.cli import main
from remediator.engine import Engine
from remediator.flap import Flap
from remediator.guards import Guards
from tests.wired import load_text, wired

CONFIG = """
sources:
  site: {type: probe, url: "http://127.0.0.1:1/"}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s, max_actions: 100}
notifiers:
  oncall: {url: "http://127.0.0.1:1/hook"}
playbooks:
  - name: fpm-stuck
    when: {probe_failing: {probe: site, consecutive: 2}}
    steps:
      - restart: fpm
        verify: {probe: site, within: 5s, settle: 1s}
      - scale_workers: fpm
        name: scale_workers
        verify: {probe: site, within: 5s, settle: 1s}
    limits: {cooldown: 0s, max_runs: 100, per: 1h, backoff: false}
    flap: {after: 3, returns_within: 30s, window: 10m}
    on_exhausted: {notify: oncall, stop: true}
"""


class Calls:
    def __init__(self) -> None:
        self.made: list[str] = []

    def actions(self) -> dict[str, Any]:
        def restart(args: Any, ctx: ActionContext) -> ActionResult:
            self.made.append("restart")
            return ActionResult(Outcome.OK, "restarted", target="fpm", restarted=True)

        def scale_workers(args: Any, ctx: ActionContext) -> ActionResult:
            self.made.append("scale_workers")
            return ActionResult(Outcome.OK, "pm.max_children 5 -> 10", target="fpm")

        def notify(args: Any, ctx: ActionContext) -> ActionResult:
            self.made.append(f"notify {ctx.summary}")
            return ActionResult(Outcome.OK, "sent", target=args.notifier)

        return {"restart": restart, "scale_workers": scale_workers, "notify": notify}


def _wire(tmp_path: Path, calls: Calls) -> Engine:
    return wired(tmp_path, CONFIG, calls.actions()).engine


def probe(engine: Engine, now: float, ok: bool) -> None:
    engine.signals.probes["site"].record(ok, "200 in 3 ms" if ok else "timed out", now)
    engine.tick(now)


def cycle(engine: Engine, t: float) -> None:
    """The trigger at ``t`` (two failed probes), then the site healthy for a few seconds:
    what follows a restart that "works" until the pool fills again."""
    probe(engine, t, False)
    probe(engine, t + 0.5, False)
    for dt in (1.0, 1.5, 2.0, 2.6, 3.5):
        probe(engine, t + dt, True)


def records(path: Path, event: str) -> list[dict[str, Any]]:
    return [r for r in read(path) if r["event"] == event]


def test_a_remedy_whose_trigger_keeps_returning_escalates_then_alerts(tmp_path: Path) -> None:
    calls = Calls()
    engine = _wire(tmp_path, calls)
    alog = tmp_path / "actions.jsonl"
    for i in range(5):  # the trigger comes back about 3 s after each close
        cycle(engine, 100 + 6 * i)
    opened = records(alog, "incident_opened")
    closed = records(alog, "incident_closed")
    assert [c["outcome"] for c in closed] == ["resolved"] * 4 + ["exhausted"]
    # three restarts "worked"; the fourth incident does not repeat it: it scales instead
    assert [m.split(" ")[0] for m in calls.made] == ["restart"] * 3 + ["scale_workers", "notify"]
    assert all("flapping" not in r for r in opened[:3])
    fourth = opened[3]
    assert fourth["flapping"]["returns"] == 3
    assert fourth["flapping"]["skipped_steps"] == [1]
    assert fourth["flapping"]["escalated_to_step"] == 2
    assert (
        "flapping: resolved 3 times in 16s, the trigger returned within 4.5s each time"
        in (fourth["reason"])
    )
    assert "escalating to step 2 (scale_workers)" in fourth["reason"]
    skipped = [r for r in records(alog, "action_held") if r["incident"] == fourth["incident"]]
    assert [(r["step"], r["outcome"], r["guard"]) for r in skipped] == [(1, "skipped", "flapping")]
    assert closed[3]["flapping"]["escalated_to_step"] == 2
    # the scaled pool "worked" only for a moment too: no step is left, so it alerts, and the
    # breaker stops the playbook
    fifth = opened[4]
    assert fifth["flapping"]["escalated_to_step"] is None
    assert fifth["flapping"]["skipped_steps"] == [1, 2]
    assert "no further step to escalate to" in fifth["reason"]
    assert "flapping" in closed[4]["reason"]
    assert "flapping: resolved 4 times in" in calls.made[-1]  # what the alert says
    assert records(alog, "breaker_opened")
    cycle(engine, 130)
    assert len(records(alog, "incident_opened")) == 5  # held back by the breaker


def test_a_playbook_whose_incidents_are_far_apart_is_not_flapping(tmp_path: Path) -> None:
    calls = Calls()
    engine = _wire(tmp_path, calls)
    alog = tmp_path / "actions.jsonl"
    for i in range(5):  # the trigger returns 2 minutes after each close: past returns_within
        cycle(engine, 100 + 125 * i)
    assert calls.made == ["restart"] * 5
    assert all("flapping" not in r for r in records(alog, "incident_opened"))
    assert [c["outcome"] for c in records(alog, "incident_closed")] == ["resolved"] * 5


def test_returns_older_than_the_window_are_forgotten(tmp_path: Path) -> None:
    calls = Calls()
    engine = _wire(tmp_path, calls)
    for i in range(3):
        cycle(engine, 100 + 6 * i)
    # the third return is counted when the trigger holds again; 10 minutes on, the first
    # two have left the window
    cycle(engine, 100 + 6 * 3)  # the fourth incident escalates (3 returns)
    cycle(engine, 1000)  # long after: the scale's return was not within 30 s, the window empty
    assert calls.made[-1] == "restart"


def test_flapping_survives_a_daemon_restart(tmp_path: Path) -> None:
    calls = Calls()
    engine = _wire(tmp_path, calls)
    alog = tmp_path / "actions.jsonl"
    for i in range(3):
        cycle(engine, 100 + 6 * i)
    assert calls.made == ["restart"] * 3
    # the daemon restarts between the third close and the trigger's return: the guard book
    # keeps the returns and the close not yet returned from
    loaded = load_text(tmp_path, CONFIG)
    assert loaded.config is not None
    book = Guards(tmp_path / "state", loaded.config.guards, 120).playbooks["fpm-stuck"]
    assert len(book.returns) == 2 and book.resolved is not None
    again = Calls()
    engine = _wire(tmp_path, again)
    cycle(engine, 118)
    assert again.made == ["scale_workers"]
    assert records(alog, "incident_opened")[-1]["flapping"]["escalated_to_step"] == 2


def test_reset_forgets_flapping(tmp_path: Path) -> None:
    calls = Calls()
    engine = _wire(tmp_path, calls)
    for i in range(3):
        cycle(engine, 100 + 6 * i)
    engine.guards.reset("fpm-stuck")
    cycle(engine, 118)
    assert calls.made == ["restart"] * 4


def test_a_manual_trigger_runs_the_playbook_as_written(tmp_path: Path) -> None:
    calls = Calls()
    engine = _wire(tmp_path, calls)
    for i in range(4):
        cycle(engine, 100 + 6 * i)
    assert calls.made[-1] == "scale_workers"
    pb = engine.playbooks[0]
    assert engine.trigger(pb, 200, who="ops").allowed
    assert calls.made[-1] == "restart"


LOGS_ONLY = """
sources:
  acc: {type: access_log, path: /var/log/nginx/access.log}
  site: {type: probe, url: "http://127.0.0.1:1/"}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s, max_actions: 100}
playbooks:
  - name: fpm-502
    when: {status_rate: {source: acc, status: 502, window: 20s, at_least: 10}}
    corroborate: probe
    steps:
      - restart: fpm
        verify: {probe: site, within: 5s, settle: 1s}
      - scale_workers: fpm
        verify: {probe: site, within: 5s, settle: 1s}
    limits: {cooldown: 10s, max_runs: 100, per: 1h, backoff: false}
    flap: {after: 2, returns_within: 30s, window: 10m}
"""


def test_forged_lines_after_a_close_are_no_return(tmp_path: Path) -> None:
    """Whoever can write the access log forges 502s right after each real incident closes:
    the probe failed within the trigger's window (the outage just fixed), never since the
    close, so no return is counted and the playbook is not pushed past its first step."""
    calls = Calls()
    engine = wired(tmp_path, LOGS_ONLY, calls.actions()).engine
    alog = tmp_path / "actions.jsonl"
    for t in (100.0, 200.0, 300.0, 400.0):
        probe(engine, t - 0.2, False)  # a real outage: the probe fails, users get 502s
        engine.signals.statuses["acc"].add(t, 502, 20)
        engine.tick(t)
        for dt in (1.0, 1.5, 2.1):
            probe(engine, t + dt, True)
        engine.signals.statuses["acc"].add(t + 4, 502, 20)  # forged, 2 s after the close
        probe(engine, t + 4, True)
    assert calls.made == ["restart"] * 4
    assert engine.guards.playbooks["fpm-502"].returns == []
    assert all("flapping" not in r for r in records(alog, "incident_opened"))
    held = records(alog, "trigger_held_back")
    assert held and all(r["guard"] in ("uncorroborated", "cooldown") for r in held)


REPLAYED = """
sources:
  web: {{type: access_log, path: {access}, format: nginx-combined}}
services:
  fpm: {{kind: php-fpm, unit: php8.2-fpm.service, startup_grace: 0s, max_actions: 100}}
playbooks:
  - name: fpm-stuck
    when: {{status_rate: {{source: web, status: 502, window: 5s, at_least: 5}}}}
    steps:
      - restart: fpm
        verify: {{within: 5s, settle: 2s}}
      - scale_workers: fpm
        name: scale_workers
        verify: {{within: 5s, settle: 2s}}
    limits: {{cooldown: 0s, max_runs: 100, per: 1h, backoff: false}}
    flap: {{after: 2, returns_within: 30s, window: 10m}}
"""


def test_replay_sees_the_same_flapping(tmp_path: Path) -> None:
    """A log of 502 bursts every 12 s, each followed by 200s: replay (the same engine, on the
    log's clock) restarts twice, then scales, then alerts and stops."""
    start = datetime.datetime(2026, 12, 5, 10, 0, 0, tzinfo=datetime.UTC)

    def line(t: float, status: int) -> str:
        ts = (start + datetime.timedelta(seconds=t)).strftime("%d/%b/%Y:%H:%M:%S +0000")
        return f'127.0.0.1 - - [{ts}] "GET / HTTP/1.1" {status} 12 "-" "curl"\n'

    lines = []
    for c in range(5):
        lines += [line(12 * c, 502)] * 10
        lines += [line(12 * c + k * 0.5, 200) for k in range(2, 20)]
    access = tmp_path / "access.log"
    access.write_text("".join(lines))
    cfg = tmp_path / "r.yaml"
    cfg.write_text(REPLAYED.format(access=access))
    (tmp_path / "playbooks.d").mkdir()
    out, err = io.StringIO(), io.StringIO()
    assert main(["-c", str(cfg), "replay", "--json", str(access)], out, err) == 0, err.getvalue()
    recs = [json.loads(x) for x in out.getvalue().splitlines()][:-1]
    acted = [r["action"] for r in recs if r["event"] == "action_result"]
    assert acted == ["restart", "restart", "scale_workers"]
    opened = [r for r in recs if r["event"] == "incident_opened"]
    assert [r.get("flapping", {}).get("escalated_to_step", 0) for r in opened] == [0, 0, 2, None]
    assert "escalating to step 2 (scale_workers)" in opened[2]["reason"]
    closed = [r["outcome"] for r in recs if r["event"] == "incident_closed"]
    assert closed == ["resolved", "resolved", "resolved", "exhausted"]


def test_a_hand_edited_book_with_bad_returns_loads_what_it_can(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, CONFIG)
    assert loaded.config is not None
    guards = Guards(tmp_path / "state", loaded.config.guards, 100)
    guards.resolved("fpm-stuck", 90, 0)
    assert guards.trigger_holds("fpm-stuck", loaded.playbooks[0].flap or Flap(), 95) is not None
    guards.save(100)
    book = tmp_path / "state" / "guards.json"
    doc = json.loads(book.read_text())
    doc["data"]["playbooks"]["fpm-stuck"]["returns"] += [
        "x",
        {"closed_at": "yesterday", "after": 1},
        {"closed_at": 91, "after": True},
    ]
    book.write_text(json.dumps(doc))
    again = Guards(tmp_path / "state", loaded.config.guards, 100).playbooks["fpm-stuck"]
    assert [(r.closed, r.after, r.step) for r in again.returns] == [(90, 5, 0)]
