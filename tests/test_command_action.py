"""The command action: real processes, real process groups, templates that stay data."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from remediator.actions.base import ActionContext, Outcome
from remediator.actions.command import ACTIONS, command
from remediator.actions.declare import CommandArgs
from remediator.cli import main
from remediator.system import DryRunSystem, System
from tests.stack import is_alive, wait_for

PY = sys.executable
ARGV = "import sys; print(len(sys.argv) - 1); print(*sys.argv[1:], sep='\\n')"

# A leader that forks a child (its own group member), tells its PID, and hangs.
HANG = """
import os, time
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""


def ctx(system: System | None = None, incident: str = "inc-7") -> ActionContext:
    return ActionContext(
        system=system or System(), services={}, notifiers={}, playbook="php", incident=incident
    )


def test_exit_zero_is_ok_with_its_output() -> None:
    r = command(CommandArgs(argv=("/bin/echo", "flushed")), ctx())
    assert (r.outcome, r.details["returncode"], r.details["output"]) == (Outcome.OK, 0, "flushed\n")


def test_a_nonzero_exit_fails_with_the_end_of_its_output() -> None:
    script = "import sys; print('warming'); print('cache locked'); sys.exit(3)"
    r = command(CommandArgs(argv=(PY, "-c", script)), ctx())
    assert r.outcome is Outcome.FAILED
    assert r.reason.endswith("exited with status 3: cache locked")
    assert r.details["output"] == "warming\ncache locked\n"


def test_a_hanging_command_is_killed_with_its_group_at_the_timeout() -> None:
    r = command(CommandArgs(argv=(PY, "-c", HANG), timeout=0.3), ctx())
    # HANG would exit 0 after 60 s: a failure that says so is the timeout at work
    assert r.outcome is Outcome.FAILED and "timed out after 0.3s" in r.reason
    child = int(r.details["output"].split()[0])
    wait_for(lambda: not is_alive(child), 2, "the forked child to die with its group")


def test_templates_are_expanded_from_the_context_and_step() -> None:
    args = CommandArgs(argv=(PY, "-c", ARGV, "{playbook}", "{incident}/{service}"), service="fpm")
    r = command(args, ctx())
    assert r.details["output"] == "2\nphp\ninc-7/fpm\n"


def test_other_braces_stay_literal() -> None:
    args = CommandArgs(argv=(PY, "-c", ARGV, "{0}", "{playbook.__class__}", "{{incident}}"))
    r = command(args, ctx())
    assert r.details["output"] == "3\n{0}\n{playbook.__class__}\n{inc-7}\n"


def test_a_value_with_shell_metacharacters_is_one_argument_and_runs_nothing(
    tmp_path: Path,
) -> None:
    canary = tmp_path / "pwned"
    evil = f"x; touch {canary} && $(touch {canary}) `touch {canary}` | tee {canary}"
    r = command(CommandArgs(argv=(PY, "-c", ARGV, "{incident}")), ctx(incident=evil))
    assert r.details["output"] == f"1\n{evil}\n"
    assert not canary.exists()


def test_service_placeholder_without_a_service_is_refused() -> None:
    r = command(CommandArgs(argv=("/bin/echo", "{service}")), ctx())
    assert r.outcome is Outcome.REFUSED


def test_dry_run_does_not_run_it_and_says_what_it_would_run(tmp_path: Path) -> None:
    canary = tmp_path / "ran-{incident}"
    dry = DryRunSystem()
    r = ACTIONS["command"](CommandArgs(argv=("/usr/bin/touch", str(canary))), ctx(dry))
    expected = ["/usr/bin/touch", str(tmp_path / "ran-inc-7")]
    assert r.outcome is Outcome.WOULD_RUN
    assert r.details["argv"] == expected
    assert r.details["would"] == [{"kind": "command", "argv": expected, "timeout_s": 30.0}]
    assert dry.would[0].detail["argv"] == expected
    assert not list(tmp_path.iterdir())


ENVIRON = "import sys; sys.stdout.write(open('/proc/self/environ').read())"


def _environ(output: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in output.split("\0") if kv)


def test_the_environment_is_the_minimal_set_plus_env_and_nothing_of_the_daemons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    args = CommandArgs(argv=(PY, "-c", ENVIRON), service="fpm", env={"PATH": "/opt/bin", "X": ""})
    r = command(args, ctx())
    assert _environ(r.details["output"]) == {
        "PATH": "/opt/bin",
        "LANG": "C.UTF-8",
        "REMEDIATOR_PLAYBOOK": "php",
        "REMEDIATOR_INCIDENT": "inc-7",
        "REMEDIATOR_SERVICE": "fpm",
        "X": "",
    }
    assert r.details["env"] == ["PATH", "X"]  # names only: a value may be a token


def test_a_timeout_names_each_process_killed(tmp_path: Path) -> None:
    r = command(CommandArgs(argv=(PY, "-c", HANG), timeout=0.3), ctx())
    child = int(r.details["output"].split()[0])
    names = {k["pid"]: k["name"] for k in r.details["killed"]}
    assert child in names and len(names) == 2
    assert r.reason.endswith("timed out after 0.3s; 2 process(es) it started were killed")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            "{1BAD: x}",
            "steps[0].command.env: '1BAD' is not a valid environment variable name "
            "(letters, digits and _, not starting with a digit)",
        ),
        (
            "{REMEDIATOR_INCIDENT: x}",
            "steps[0].command.env: 'REMEDIATOR_INCIDENT': REMEDIATOR_* variables are set by "
            "remediator",
        ),
        ('{A: "x\\0y"}', "steps[0].command.env.A: an environment value cannot hold a NUL"),
        ("{A: [x]}", "steps[0].command.env.A: expected a string, got a list"),
    ],
)
def test_env_is_checked_at_load_time(tmp_path: Path, env: str, message: str) -> None:
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path}/state\naction_log: {tmp_path}/actions.jsonl\n"
        f"playbooks_dir: {tmp_path}/playbooks.d\n"
        "sources: {probe: {type: probe, url: 'http://127.0.0.1:9/'}}\n"
        "playbooks:\n"
        "  - name: x\n"
        "    when: {probe_failing: probe}\n"
        "    steps:\n"
        f"      - command: {{argv: [/bin/true], env: {env}}}\n"
    )
    cfg.chmod(0o600)
    (tmp_path / "playbooks.d").mkdir()
    out, err = io.StringIO(), io.StringIO()
    assert main(["-c", str(cfg), "check"], out, err) == 2
    assert message in err.getvalue()
