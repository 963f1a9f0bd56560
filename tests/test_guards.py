"""Guards on a clock set by the test, persisted in a real state dir."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from remediator import state
from remediator.actions.declare import ServiceArgs
from remediator.config import Backoff, Breaker, Service
from remediator.config import Guards as GuardsConfig
from remediator.guards import Guard, Guards, stored_pause
from remediator.playbook import Limits, Playbook, ProbeFailing, Step

CFG = GuardsConfig(backoff=Backoff(10, 300, 600), breaker=Breaker(failures=3, open_for=3600))
FPM = Service(kind="php-fpm", unit="php8.2-fpm.service", max_actions=3, actions_window=600)


def playbook(**limits: float) -> Playbook:
    """A playbook that restarts a service (back-off spaces only those that change the host)."""
    return Playbook(
        name="pb",
        when=ProbeFailing(probe="site"),
        steps=(Step("restart", ServiceArgs("fpm"), None),),
        limits=Limits(**limits),  # type: ignore[arg-type]
    )


def test_cooldown_holds_a_playbook_back_after_a_run(tmp_path: Path) -> None:
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=300, backoff=False)
    assert g.may_run(pb, 1000).allowed
    g.run_started(pb, 1000)
    g.run_finished(pb, 1005, success=True)
    v = g.may_run(pb, 1100)
    assert (v.allowed, v.guard, v.until) == (False, Guard.COOLDOWN, 1305)
    assert g.may_run(pb, 1305).allowed


def test_max_runs_per_window(tmp_path: Path) -> None:
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=0, max_runs=2, per=3600, backoff=False)
    for t in (0, 100):
        g.run_started(pb, t)
        g.run_finished(pb, t + 1, success=True)
    v = g.may_run(pb, 200)
    assert v.guard is Guard.MAX_RUNS and v.until == 3600
    assert g.may_run(pb, 3601).allowed


def test_backoff_doubles_from_10s_to_5m_and_resets_after_10m_healthy(tmp_path: Path) -> None:
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=0, max_runs=100, per=86400)
    waits = []
    now = 0.0
    for _ in range(7):
        g.run_started(pb, now)
        g.run_finished(pb, now, success=True)
        v = g.may_run(pb, now)
        assert v.guard is Guard.BACKOFF and v.until is not None
        waits.append(v.until - now)
        now = v.until
    assert waits == [10, 20, 40, 80, 160, 300, 300]
    now += 600  # ten minutes without an incident
    assert g.may_run(pb, now).allowed
    g.run_started(pb, now)
    g.run_finished(pb, now, success=True)
    assert g.may_run(pb, now).until == now + 10


def test_breaker_opens_after_repeated_failures_until_reset(tmp_path: Path) -> None:
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=0, max_runs=100, backoff=False)
    opened = [g.run_finished(pb, t, success=False) for t in (1, 2, 3)]
    assert opened == [False, False, True]
    v = g.may_run(pb, 10)
    assert v.guard is Guard.BREAKER
    assert "remediator reset pb" in v.reason
    assert g.reset("pb")
    assert g.may_run(pb, 11).allowed


def test_breaker_closes_by_itself_after_open_for(tmp_path: Path) -> None:
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=0, backoff=False)
    g.open_breaker("pb", 100, "steps exhausted")
    assert g.may_run(pb, 3699).guard is Guard.BREAKER
    assert g.may_run(pb, 3700).allowed


def test_budget_survives_a_daemon_restart(tmp_path: Path) -> None:
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=300, backoff=False)
    g.run_started(pb, 1000)
    g.run_finished(pb, 1001, success=False)
    g.action_taken("php-fpm", FPM, 1000, restarted=True)
    g.save(1001)
    again = Guards(tmp_path, CFG, 1002)
    assert again.may_run(pb, 1002).guard is Guard.COOLDOWN
    assert again.in_grace("php-fpm", FPM, 1002).guard is Guard.STARTUP_GRACE
    assert again.playbooks["pb"].failures == 1


def test_after_a_reboot_times_carry_over_by_their_wall_clock_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=300, backoff=False)
    g.run_finished(pb, 50_000, success=True)
    g.save(50_000)
    doc = json.loads((tmp_path / "guards.json").read_text())
    doc["wall"] = time.time() - 100  # saved 100 s ago (wall clock) ...
    (tmp_path / "guards.json").write_text(json.dumps(doc))
    monkeypatch.setattr(state, "boot_id", lambda: "another-boot")  # ... before a reboot
    after = Guards(tmp_path, CFG, 20.0)  # monotonic clock restarted: now is 20 s after boot
    v = after.may_run(pb, 20.0)
    assert v.guard is Guard.COOLDOWN
    assert v.until == pytest.approx(20.0 - 100 + 300, abs=2)


def test_corrupt_state_file_is_reported_and_treated_as_empty(tmp_path: Path) -> None:
    (tmp_path / "guards.json").write_text("{not json")
    g = Guards(tmp_path, CFG, 0)
    assert g.playbooks == {}


def test_service_action_cap_per_window(tmp_path: Path) -> None:
    g = Guards(tmp_path, CFG, 0)
    for t in (0, 10, 20):
        assert g.may_act("php-fpm", FPM, t).allowed
        g.action_taken("php-fpm", FPM, t, restarted=False)
    v = g.may_act("php-fpm", FPM, 30)
    assert v.guard is Guard.SERVICE_BUDGET and v.until == 600
    assert g.may_act("php-fpm", FPM, 601).allowed


def test_pause_for_a_while_then_resumes_by_itself(tmp_path: Path) -> None:
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=0, backoff=False)
    g.set_pause(100, 1800, "deploy")
    v = g.may_run(pb, 200)
    assert v.guard is Guard.PAUSED and "deploy" in v.reason
    assert g.may_run(pb, 1900).allowed
    g.set_pause(2000, None)
    assert g.may_run(pb, 10**9).guard is Guard.PAUSED
    g.resume()
    assert g.may_run(pb, 10**9).allowed


def test_a_run_interrupted_by_a_daemon_restart_counts_as_failed_and_cools_down(
    tmp_path: Path,
) -> None:
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=300, backoff=False)
    g.run_started(pb, 1000)
    g.save(1000)  # the daemon dies before the run ends
    again = Guards(tmp_path, CFG, 1001)
    assert again.may_run(pb, 1001).guard is Guard.COOLDOWN
    assert again.playbooks["pb"].failures == 1


def test_a_pause_says_who_and_why_and_outlives_a_restart(tmp_path: Path) -> None:
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=0, backoff=False)
    g.set_pause(100, 1800, "deploy", user="alice")
    assert g.may_run(pb, 200).reason == "paused by alice (deploy) for 28m more"
    again = Guards(tmp_path, CFG, 300)  # the daemon restarted
    assert again.may_run(pb, 300).guard is Guard.PAUSED
    assert stored_pause(tmp_path, 300).reason == "paused by alice (deploy) for 27m more"
    again.resume()
    assert stored_pause(tmp_path, 300).allowed


def test_may_run_takes_nothing_from_the_state_dir(tmp_path: Path) -> None:
    """The operator's switches reach the guards only through whoever holds the daemon lock:
    a reset left behind by an older version is not picked up by any process deciding."""
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=0, backoff=False)
    g.open_breaker("pb", 10, "steps exhausted")
    (tmp_path / "reset.d").mkdir()
    (tmp_path / "reset.d" / "pb").touch()
    assert g.may_run(pb, 50).guard is Guard.BREAKER
    assert (tmp_path / "reset.d" / "pb").exists()
    assert g.breaker_open("pb", 50)
    assert g.reset("pb") and not g.breaker_open("pb", 50)


def test_after_a_reboot_every_kind_of_stored_time_moves_and_nothing_else_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each record names its own time fields: runs, ends, breakers, service actions and
    starts, and the pause all carry over by their wall-clock age; counts and reasons stay."""
    g = Guards(tmp_path, CFG, 0)
    pb = playbook(cooldown=0, max_runs=2, per=3600, backoff=False)
    for t in (50_000, 50_010):
        g.run_started(pb, t, incident="inc-1")
        g.run_finished(pb, t + 1, success=False)
    g.open_breaker("pb", 50_011, "2 failed runs")
    g.action_taken("php-fpm", FPM, 50_005, restarted=True)
    g.set_pause(50_011, 600, "deploy", user="alice")
    g.save(50_011)
    for name in ("guards.json", "pause.json"):
        doc = json.loads((tmp_path / name).read_text())
        doc["wall"] = time.time() - 11  # saved 11 s ago, before a reboot
        (tmp_path / name).write_text(json.dumps(doc))
    monkeypatch.setattr(state, "boot_id", lambda: "another-boot")
    after = Guards(tmp_path, CFG, 100.0)  # 100 s after this boot
    book = after.playbooks["pb"]
    shift = 100.0 - 11 - 50_011
    assert book.runs == pytest.approx([50_000 + shift, 50_010 + shift], abs=2)
    assert book.breaker_opened == pytest.approx(50_011 + shift, abs=2)
    assert (book.failures, book.breaker_reason) == (2, "2 failed runs")
    assert after.services["php-fpm"].actions == pytest.approx([50_005 + shift], abs=2)
    assert after.in_grace("php-fpm", FPM, 100.0).allowed  # 17 s after the restart: no grace
    assert after.may_run(pb, 100.0).reason == "paused by alice (deploy) for 10m more"


def test_a_state_file_with_fields_of_the_wrong_type_loads_what_is_sound(tmp_path: Path) -> None:
    g = Guards(tmp_path, CFG, 0)
    g.save(0)
    doc = json.loads((tmp_path / "guards.json").read_text())
    doc["data"] = {
        "playbooks": {
            "pb": {"runs_at": "x", "failures": "3", "last_end_at": True, "breaker_opened_at": 5},
            "other": ["not", "a", "record"],
        },
        "services": "nope",
    }
    (tmp_path / "guards.json").write_text(json.dumps(doc))
    again = Guards(tmp_path, CFG, 10)
    book = again.playbooks["pb"]
    assert (book.runs, book.failures, book.last_end, book.breaker_opened) == ([], 0, None, 5)
    assert again.may_run(playbook(cooldown=0, backoff=False), 10).guard is Guard.BREAKER
    assert again.services == {}
