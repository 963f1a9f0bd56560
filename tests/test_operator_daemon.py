"""The operator's switches against a real daemon process (``remediator run``): applied by the
daemon, acknowledged, recorded with the operator's name; no other process takes them.

The CLI runs in-process (stdout, stderr, exit status); the daemon is a process of its own
(tests/e2e.py). Where a real server matters (a config test), a real nginx + PHP-FPM.
"""

from __future__ import annotations

import io
import os
import pwd
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediator.cli import main
from remediator.operator import Kind, Request
from tests.e2e import (
    DaemonProcess,
    config,
    eventually,
    nginx_service,
    nginx_sources,
    only,
    probe,
    wall_ts,
)
from tests.stack import Nginx

ROOT = pwd.getpwuid(os.getuid()).pw_name
NEVER = {"status_rate": {"source": "access", "status": 418, "at_least": 5}}
QUICK = {"cooldown": "0s", "backoff": False}
FAILS = {
    "name": "fails",
    "when": NEVER,
    "steps": [{"command": ["/bin/false"], "verify": {"within": "500ms"}}],
    "limits": QUICK,
}
SLOW = {  # the daemon's own incident: 502s in the access log, then a step that takes a while
    "name": "slow",
    "when": {"status_rate": {"source": "access", "status": 502, "at_least": 5}},
    "steps": [{"command": {"argv": ["/bin/sleep", "3"]}, "verify": {"within": "500ms"}}],
    "limits": QUICK,
}
LINE_502 = '127.0.0.1 - - [05/Dec/2026:15:46:32 +0000] "GET / HTTP/1.1" 502 157 "-" "curl"\n'


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


def _cfg(tmp_path: Path, *playbooks: dict[str, Any]) -> dict[str, Any]:
    access = tmp_path / "access.log"
    access.touch()
    return config(
        tmp_path,
        sources={"access": {"type": "access_log", "path": str(access)}},
        services={},
        playbooks=list(playbooks or [FAILS]),
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path, _cfg(tmp_path, FAILS, SLOW)) as running:
        yield running


def _cli(daemon: DaemonProcess, *argv: str) -> tuple[int, str, str]:
    return run("-c", str(daemon.config_path), *argv)


def _put(box: Path, req: Request, *, mode: int = 0o600, uid: int = 0) -> Path:
    """A request file with ``mode`` and owner ``uid``, made aside and renamed in whole."""
    aside = box.parent / f"aside-{req.id}"
    aside.write_bytes(req.encode())
    aside.chmod(mode)
    os.chown(aside, uid, uid)
    path = box / f"{req.id}.json"
    aside.rename(path)
    return path


# --- pause, resume, reset ----------------------------------------------------------------------


def test_pause_is_applied_by_the_daemon_acknowledged_and_recorded_with_sudo_user(
    daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    rc, out, err = _cli(daemon, "pause", "--for", "30m", "--reason", "deploy 42")
    assert (rc, err) == (0, "")
    assert out.startswith(f"applied by the daemon, pid {daemon.pid}: paused for 30m, until ")
    rec = only(daemon.records("operator_pause"))
    assert (rec["user"], rec["reason"], rec["outcome"], rec["dry_run"]) == (
        "alice",
        "deploy 42",
        "ok",
        False,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["until"])
    assert abs(wall_ts({"ts": rec["until"]}) - (wall_ts(rec) + 1800)) < 2
    rc, out, _ = _cli(daemon, "status")
    assert rc == 0
    assert re.search(r"\n  PAUSED: paused by alice \(deploy 42\) for (30|29)m more\n", out), out


def test_resume_and_reset_are_recorded_with_the_login_name_of_the_uid(
    daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("USER", "someone-else")
    assert _cli(daemon, "pause")[0] == 0
    rc, out, _ = _cli(daemon, "resume", "--reason", "deploy done")
    assert (rc, out) == (0, f"applied by the daemon, pid {daemon.pid}: resumed\n")
    rec = only(daemon.records("operator_resume"))
    assert (rec["user"], rec["reason"], rec["was_paused"]) == (ROOT, "deploy done", True)
    rc, out, _ = _cli(daemon, "reset", "fails")
    assert (rc, out) == (
        0,
        f"applied by the daemon, pid {daemon.pid}: fails: its breaker was not open; "
        "its failures and back-off are forgotten\n",
    )
    rec = only(daemon.records("operator_reset"))
    assert (rec["user"], rec["playbook"], rec["breaker_was_open"], rec["reason"]) == (
        ROOT,
        "fails",
        False,
        "",
    )
    assert "PAUSED" not in _cli(daemon, "status")[1]


def test_without_a_daemon_the_command_applies_the_switch_itself_and_says_so(
    tmp_path: Path,
) -> None:
    daemon = DaemonProcess(tmp_path, _cfg(tmp_path))
    rc, out, err = _cli(daemon, "pause", "--reason", "disk swap")
    assert (rc, err) == (0, "")
    assert out.startswith("no daemon running: applied to the state: paused until resumed")
    rec = only(daemon.records("operator_pause"))
    assert (rec["user"], rec["until"]) == (ROOT, None)
    rc, out, _ = _cli(daemon, "status")
    assert rc == 1
    assert "  PAUSED: paused by root (disk swap) (applies when it starts)\n" in out
    with daemon:  # the daemon starts paused, and from now on it answers
        eventually(lambda: _cli(daemon, "status")[0] == 0, 10, "status of the running daemon")
        assert "  PAUSED: paused by root (disk swap)\n" in _cli(daemon, "status")[1]
        rc, out, _ = _cli(daemon, "resume")
        assert (rc, out) == (0, f"applied by the daemon, pid {daemon.pid}: resumed\n")


def test_a_second_daemon_on_the_same_state_does_not_start(daemon: DaemonProcess) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "remediator", "-c", str(daemon.config_path), "run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert f"another remediator daemon (pid {daemon.pid}) holds" in second.stderr
    assert daemon.is_running()


# --- requests the daemon must not apply ----------------------------------------------------------


def test_a_request_file_group_writable_or_owned_by_another_uid_is_ignored_and_removed(
    daemon: DaemonProcess,
) -> None:
    box = daemon.state_dir / "requests"
    bad = [
        _put(box, Request(Kind.PAUSE, "mallory", "group"), mode=0o660),
        _put(box, Request(Kind.PAUSE, "mallory", "nobody"), uid=65534),
    ]
    eventually(lambda: not any(p.exists() for p in bad), 10, "the daemon to remove them")
    reasons = sorted(
        e["reason"] for e in daemon.log_events() if e.get("event") == "operator_request_ignored"
    )
    assert reasons == ["owned by uid 65534, not root", "writable by group or others (mode 0660)"]
    assert not daemon.records("operator_pause")
    assert "PAUSED" not in _cli(daemon, "status")[1]
    # while a request as the command writes it is applied
    assert _cli(daemon, "pause")[0] == 0
    assert only(daemon.records("operator_pause"))["user"] == ROOT


def test_a_request_the_daemon_does_not_answer_within_2s_is_withdrawn_and_never_applied(
    daemon: DaemonProcess,
) -> None:
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        rc, out, err = _cli(daemon, "pause", "--reason", "while stopped")
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert (rc, out) == (1, "")
    assert err == (
        f"remediator pause: the daemon (pid {daemon.pid}) did not answer within 2s: "
        "the request was withdrawn, nothing was applied\n"
    )
    assert list((daemon.state_dir / "requests").iterdir()) == []
    rc, out, _ = _cli(daemon, "resume")  # answered: the daemon has looked since
    assert (rc, out) == (
        0,
        f"applied by the daemon, pid {daemon.pid}: resumed (there was no pause)\n",
    )
    assert not daemon.records("operator_pause")


# --- trigger ------------------------------------------------------------------------------------


def test_trigger_while_the_daemon_handles_an_incident_is_refused_and_writes_nothing_about_it(
    daemon: DaemonProcess,
) -> None:
    with (daemon.workdir / "access.log").open("a") as f:
        f.write(LINE_502 * 10)
    inc = daemon.wait_record("action_intent", 10, playbook="slow")[0]["incident"]
    rc, out, err = _cli(daemon, "trigger", "fails", "--dry-run")
    assert (rc, err) == (1, "")
    assert out == (
        f"refused by the daemon, pid {daemon.pid}: fails not run: incident {inc} is in progress\n"
    )
    rec = only(daemon.records("operator_trigger"))
    assert (rec["incident"], rec["outcome"], rec["playbook"], rec["dry_run"], rec["user"]) == (
        None,
        "refused",
        "fails",
        True,
        ROOT,
    )
    daemon.wait_record("incident_closed", 15, incident=inc)
    events = [r["event"] for r in daemon.records(incident=inc)]
    assert events.count("incident_closed") == 1 and events[-1] == "incident_closed"
    assert events.index("action_result") < events.index("incident_closed")
    assert only(daemon.records("incident_closed", incident=inc))["outcome"] != "interrupted"
    assert not daemon.records("incident_opened", playbook="fails")


def test_a_trigger_without_a_daemon_takes_no_request_meant_for_one(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, _cfg(tmp_path))
    box = daemon.state_dir / "requests"
    box.mkdir(parents=True, mode=0o700)
    pending = _put(box, Request(Kind.RESET, "alice", playbook="fails"))
    before = pending.read_bytes()
    rc, out, err = _cli(daemon, "trigger", "fails", "--dry-run")
    assert (rc, err) == (0, "")
    assert re.match(
        r"no daemon running: run by this command: incident \S+ opened \(dry run\)\n", out
    )
    assert pending.read_bytes() == before
    assert not daemon.records("operator_reset")


def test_a_forced_trigger_names_the_operator_not_a_uid(
    daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    rc, out, _ = _cli(daemon, "trigger", "fails", "--force", "--reason", "drill")
    assert rc == 1  # it ran and did not resolve: /bin/false
    inc = re.match(rf"applied by the daemon, pid {daemon.pid}: incident (\S+) opened\n", out)
    assert inc is not None, out
    rec = only(daemon.records("operator_trigger"))
    assert (rec["incident"], rec["user"], rec["reason"], rec["force"], rec["dry_run"]) == (
        inc[1],
        "alice",
        "drill",
        True,
        False,
    )
    opened = only(daemon.records("incident_opened", incident=inc[1]))
    assert opened["reason"] == "triggered by hand by alice"
    assert f"incident {inc[1]}  fails  exhausted" in out  # the timeline, followed to its close


# --- with a real nginx: reset + trigger --dry-run, and trigger's exit status ---------------------

RELOAD = {
    "name": "reload-nginx",
    "when": NEVER,
    "steps": [{"reload": "nginx", "verify": {"probe": "site", "within": "3s"}}],
    "limits": QUICK,
}


def _nginx_cfg(tmp_path: Path, nginx: Nginx) -> dict[str, Any]:
    return config(
        tmp_path,
        sources={**nginx_sources(nginx), "site": probe(nginx.url(), interval="250ms")},
        services={"nginx": nginx_service(nginx)},
        playbooks=[RELOAD, FAILS | {"when": RELOAD["when"]}],
    )


@pytest.fixture
def nginx_daemon(nginx_fpm: Nginx, tmp_path: Path) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path, _nginx_cfg(tmp_path, nginx_fpm)) as running:
        yield running


@pytest.mark.servers
def test_reset_then_trigger_dry_run_are_both_applied_by_the_running_daemon(
    nginx_fpm: Nginx, nginx_daemon: DaemonProcess
) -> None:
    daemon = nginx_daemon
    nginx_fpm.break_config()
    rc, out, _ = _cli(daemon, "trigger", "reload-nginx")  # refused config test: breaker opens
    assert rc == 1 and out.startswith(f"applied by the daemon, pid {daemon.pid}: incident ")
    eventually(lambda: "breaker open" in _cli(daemon, "status")[1], 10, "status: breaker open")
    nginx_fpm.restore_config()

    rc, out, _ = _cli(daemon, "reset", "reload-nginx")
    assert (rc, out) == (
        0,
        f"applied by the daemon, pid {daemon.pid}: reload-nginx: its breaker is closed; "
        "its failures and back-off are forgotten\n",
    )
    assert only(daemon.records("operator_reset"))["breaker_was_open"] is True
    status = _cli(daemon, "status")[1]
    assert "breaker open" not in status and "  reload-nginx             ready\n" in status

    rc, out, err = _cli(daemon, "trigger", "reload-nginx", "--dry-run")
    assert (rc, err) == (0, ""), out
    found = re.match(
        rf"applied by the daemon, pid {daemon.pid}: incident (\S+) opened \(dry run\)", out
    )
    assert found is not None, out
    recs = daemon.records(incident=found[1])
    assert all(r["dry_run"] is True for r in recs)
    assert only([r for r in recs if r["event"] == "action_result"])["outcome"] == "would_run"
    assert recs[-1]["event"] == "incident_closed" and recs[-1]["outcome"] == "resolved"
    trig = only(daemon.records("operator_trigger", incident=found[1]))
    assert (trig["dry_run"], trig["force"], trig["user"]) == (True, False, ROOT)
    # a dry run counts in no budget: the playbook is as ready as before
    assert "  reload-nginx             ready\n" in _cli(daemon, "status")[1]


@pytest.mark.servers
def test_trigger_dry_run_exits_0_when_every_step_would_run_1_when_one_is_refused(
    nginx_fpm: Nginx, nginx_daemon: DaemonProcess
) -> None:
    daemon = nginx_daemon
    rc, out, _ = _cli(daemon, "trigger", "reload-nginx", "--dry-run")
    assert rc == 0, out
    nginx_fpm.break_config()
    rc, out, _ = _cli(daemon, "trigger", "reload-nginx", "--dry-run")
    assert rc == 1, out
    inc = re.search(r"incident (\S+) opened", out)
    assert inc is not None
    result = only(daemon.records("action_result", incident=inc[1]))
    assert result["outcome"] == "refused" and result["dry_run"] is True
    nginx_fpm.restore_config()
    assert _cli(daemon, "pause", "--reason", "drill")[0] == 0
    rc, out, _ = _cli(daemon, "trigger", "reload-nginx", "--dry-run")  # the trigger is refused
    assert rc == 1
    assert out == (
        f"refused by the daemon, pid {daemon.pid}: reload-nginx not run: paused by {ROOT} "
        "(drill) (--force passes the guards, and is logged)\n"
    )


@pytest.mark.servers
def test_trigger_dry_run_without_a_daemon_exits_1_when_a_config_test_fails(
    nginx_fpm: Nginx, tmp_path: Path
) -> None:
    daemon = DaemonProcess(tmp_path, _nginx_cfg(tmp_path, nginx_fpm))
    nginx_fpm.break_config()
    rc, out, err = _cli(daemon, "trigger", "reload-nginx", "--dry-run")
    assert (rc, err) == (1, ""), out
    assert out.startswith("no daemon running: run by this command: incident ")
    assert "step 1 reload nginx: refused" in out
    nginx_fpm.restore_config()
    rc, out, _ = _cli(daemon, "trigger", "reload-nginx", "--dry-run")
    assert rc == 0, out


def test_trigger_exits_2_on_usage_and_config_errors(daemon: DaemonProcess) -> None:
    rc, out, err = _cli(daemon, "trigger", "fials", "--dry-run")
    assert (rc, out) == (2, "")
    assert err == "no playbook 'fials' (did you mean 'fails'?)\n"
    rc, _, err = _cli(daemon, "trigger", "fails", "--reason", "bad\x1b[2J")
    assert rc == 2
    daemon.config_path.write_text(daemon.config_path.read_text() + "bogus: 1\n")
    rc, out, err = _cli(daemon, "trigger", "fails", "--dry-run")
    assert (rc, out) == (2, "")
    assert "bogus: unknown key 'bogus'" in err
    assert not daemon.records("operator_trigger")
    assert daemon.is_running()
