"""What each switch does to an engine on a real state dir and action log (in-process; the
daemon's side end to end is in test_operator_daemon.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from remediator.actionlog import read
from remediator.actions.registry import all_actions
from remediator.engine import Engine
from remediator.load import Loaded, load
from remediator.operator import Kind, Request
from remediator.switches import apply, offline_engine, trigger_succeeded

CONFIG = """\
state_dir: state
action_log: actions.jsonl
sources:
  access: {type: access_log, path: access.log}
"""
PLAYBOOK = """\
name: flush
when: {status_rate: {source: access, status: 418, at_least: 5}}
steps:
  - command: [/bin/true]
    verify: {within: 1s}
limits: {cooldown: 5m, backoff: false}
"""


@pytest.fixture
def loaded(tmp_path: Path) -> Loaded:
    (tmp_path / "playbooks.d").mkdir()
    (tmp_path / "playbooks.d" / "flush.yaml").write_text(PLAYBOOK)
    (tmp_path / "access.log").touch()
    (tmp_path / "r.yaml").write_text(CONFIG)
    result = load(tmp_path / "r.yaml")
    assert result.ok, result.all_errors()
    return result


def _records(engine: Engine) -> list[dict[str, object]]:
    return list(read(engine.actionlog.path))


def test_a_dry_run_trigger_changes_nothing_and_counts_in_no_budget(loaded: Loaded) -> None:
    now = time.monotonic()
    engine = offline_engine(loaded, now, all_actions())
    req = Request(Kind.TRIGGER, "alice", "drill", playbook="flush", dry_run=True)
    reply = apply(engine, req, now, pid=None)
    assert reply.applied and reply.incident is not None
    engine.tick(now)  # the step's result
    engine.tick(now + 2)  # no evidence of recovery within 1s: exhausted
    recs = [r for r in _records(engine) if r["incident"] == reply.incident]
    assert {r["dry_run"] for r in recs} == {True}
    assert [r["outcome"] for r in recs if r["event"] == "action_result"] == ["would_run"]
    assert trigger_succeeded(recs, dry_run=True)
    again = offline_engine(loaded, now + 3)  # what the next run of it would find
    assert not again.guards.breaker_open("flush", now + 3)
    pb = again.playbooks[0]
    assert again.guards.may_run(pb, now + 3).allowed  # no cooldown either


def test_a_real_trigger_through_the_same_path_counts(loaded: Loaded) -> None:
    now = time.monotonic()
    engine = offline_engine(loaded, now, all_actions())
    reply = apply(engine, Request(Kind.TRIGGER, "alice", playbook="flush"), now, pid=None)
    engine.tick(now)
    engine.tick(now + 2)
    recs = [r for r in _records(engine) if r["incident"] == reply.incident]
    assert {r["dry_run"] for r in recs} == {False}
    assert not trigger_succeeded(recs, dry_run=False)  # exhausted
    again = offline_engine(loaded, now + 3)
    assert again.guards.breaker_open("flush", now + 3)


def test_a_trigger_held_by_a_guard_is_recorded_with_the_guard(loaded: Loaded) -> None:
    now = time.monotonic()
    engine = offline_engine(loaded, now)
    engine.guards.open_breaker("flush", now, "steps exhausted")
    reply = apply(engine, Request(Kind.TRIGGER, "bob", playbook="flush"), now, pid=4711)
    assert (reply.applied, reply.guard, reply.pid) == (False, "breaker_open", 4711)
    rec = _records(engine)[-1]
    assert (rec["event"], rec["outcome"], rec["guard"], rec["incident"], rec["user"]) == (
        "operator_trigger",
        "held",
        "breaker_open",
        None,
        "bob",
    )
    assert str(rec["refusal"]).startswith("breaker open (steps exhausted)")


def test_reset_says_whether_a_breaker_was_open(loaded: Loaded) -> None:
    now = time.monotonic()
    engine = offline_engine(loaded, now)
    engine.guards.open_breaker("flush", now, "steps exhausted")
    first = apply(engine, Request(Kind.RESET, "carol", "fixed", playbook="flush"), now, pid=None)
    second = apply(engine, Request(Kind.RESET, "carol", playbook="flush"), now, pid=None)
    assert first.message.startswith("flush: its breaker is closed")
    assert second.message.startswith("flush: its breaker was not open")
    assert [r["breaker_was_open"] for r in _records(engine)] == [True, False]
    assert not offline_engine(loaded, now).guards.breaker_open("flush", now)


def test_a_switch_for_a_playbook_the_engine_does_not_have_is_refused_unrecorded(
    loaded: Loaded,
) -> None:
    now = time.monotonic()
    engine = offline_engine(loaded, now)
    for kind in (Kind.RESET, Kind.TRIGGER):
        reply = apply(engine, Request(kind, "dave", playbook="gone"), now, pid=4711)
        assert not reply.applied
        assert reply.message == "no enabled playbook 'gone' in the daemon's configuration"
    assert _records(engine) == []


def test_pause_records_until_and_resume_whether_there_was_a_pause(loaded: Loaded) -> None:
    now = time.monotonic()
    engine = offline_engine(loaded, now)
    apply(engine, Request(Kind.PAUSE, "erin", "deploy", duration=600), now, pid=None)
    assert engine.guards.paused(now + 599).reason == "paused by erin (deploy) for 1s more"
    apply(engine, Request(Kind.RESUME, "erin"), now, pid=None)
    apply(engine, Request(Kind.RESUME, "erin"), now, pid=None)
    pause, *resumes = _records(engine)
    assert pause["event"] == "operator_pause" and str(pause["until"]).endswith("Z")
    assert [r["was_paused"] for r in resumes] == [True, False]
