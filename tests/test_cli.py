"""The CLI, in-process: stdout, stderr and exit status of each command."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from remediator.cli import main

REPO = Path(__file__).resolve().parent.parent


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The shipped example config, copied with the permissions an install would give it."""
    dest = tmp_path / "etc"
    shutil.copytree(REPO / "config", dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest / "remediator.yaml"


def test_check_on_valid_config_prints_summary_and_exits_0(example: Path) -> None:
    rc, out, err = run("-c", str(example), "check")
    assert rc == 0
    # The example reads this host's /var/log: a missing log is a warning, and where nginx's
    # logs are www-data's (Debian's logrotate), check says so (test_corroborate.py); nothing else
    others = [
        line
        for line in err.splitlines()
        if "can forge lines" not in line and not line.startswith("warning: source ")
    ]
    assert others == [], err
    last = out.splitlines()[-1]
    assert last.startswith("ok: 9 sources, 3 services, 10 playbooks (9 playbook files; ")


def test_check_on_broken_playbook_exits_2_with_one_located_line_per_error(example: Path) -> None:
    bad = example.parent / "playbooks.d" / "99-bad.yaml"
    bad.write_text("name: x\nwhen: {probe_failing: site}\nsteps:\n  - restrat: php-fpm\n")
    bad.chmod(0o644)
    rc, out, err = run("-c", str(example), "check")
    assert rc == 2
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == (
        f"{bad}:4:5: steps[0].restrat: unknown action 'restrat' (did you mean 'restart'?); "
        "actions: reload, restart, config_test, scale_workers, diagnose, command, notify"
    )
    assert lines[-1].endswith("1 error, configuration not usable")
    assert "Traceback" not in err


def test_check_on_missing_config_exits_2_without_traceback(tmp_path: Path) -> None:
    rc, _, err = run("-c", str(tmp_path / "nope.yaml"), "check")
    assert rc == 2
    assert "nope.yaml:1:1: cannot read: No such file or directory" in err
    assert "Traceback" not in err


def test_check_on_binary_garbage_is_a_located_error(tmp_path: Path) -> None:
    cfg = tmp_path / "r.yaml"
    cfg.write_bytes(b"sources:\n  a: \xff\xfe\x00garbage\n")
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert f"{cfg}:2:6: not valid UTF-8" in err


def test_check_reports_errors_of_main_file_and_playbooks_in_one_run(tmp_path: Path) -> None:
    (tmp_path / "playbooks.d").mkdir()
    (tmp_path / "playbooks.d" / "a.yaml").write_text("name: a\nwhen: {}\nsteps: []\n")
    cfg = tmp_path / "r.yaml"
    cfg.write_text("sourcse: {}\n")
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert "r.yaml:1:1: sourcse: unknown key 'sourcse' (did you mean 'sources'?)" in err
    assert "a.yaml:2:7: when: expected a mapping with exactly one condition" in err
    assert "a.yaml:3:8: steps: needs at least 1 item(s)" in err


def test_check_warns_when_there_are_no_playbooks(tmp_path: Path) -> None:
    (tmp_path / "playbooks.d").mkdir()
    cfg = tmp_path / "r.yaml"
    cfg.write_text("sources: {}\n")
    rc, out, err = run("-c", str(cfg), "check")
    assert rc == 0
    assert out.startswith("ok: 0 sources, 0 services, 0 playbooks")
    assert "warning: no usable playbooks" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, _ = run("frobnicate")
    assert rc == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_schema_prints_json_schema_for_config_and_playbooks() -> None:
    rc, out, _ = run("schema")
    assert rc == 0
    doc = json.loads(out)
    assert doc["$schema"].startswith("http://json-schema.org/draft-07")
    assert "sources" in doc["properties"]
    rc, out, _ = run("schema", "playbook")
    assert rc == 0
    assert "playbook" in json.loads(out)["definitions"]


INLINE_ONLY = """\
state_dir: state
action_log: actions.jsonl
sources:
  acc: {type: access_log, path: access.log}
playbooks:
  - name: pb
    when: {status_rate: {source: acc, status: 502, at_least: 5}}
    steps: [notify: oncall]
notifiers:
  oncall: {url: "http://127.0.0.1:9/hook"}
"""


def test_playbooks_in_the_main_file_need_no_playbooks_directory(tmp_path: Path) -> None:
    # check and run agree: the default playbooks.d may be absent; run starts on this config
    cfg = tmp_path / "r.yaml"
    cfg.write_text(INLINE_ONLY)
    (tmp_path / "access.log").touch()
    rc, out, err = run("-c", str(cfg), "check")
    assert (rc, err) == (0, "")
    assert out.startswith("ok: 1 source, 0 services, 1 playbook (0 playbook files; ")
    # a directory the operator names must exist (a typo would leave its playbooks out), and
    # check says what run would do with the rest
    cfg.write_text("playbooks_dir: playbook.d\n" + INLINE_ONLY)
    rc, out, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert err.splitlines() == [
        f"{tmp_path}/playbook.d:1:1: playbooks directory does not exist",
        "run would start with 1 playbook, without what these errors disable (the shipped "
        "unit checks first and does not start)",
        f"{cfg}: 1 error, configuration not usable",
    ]


def test_python_m_remediator_runs_the_cli(example: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    proc = subprocess.run(
        [sys.executable, "-m", "remediator", "-c", str(example), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # before the verdict, check may say what it read of logs the host has (Debian's php-fpm
    # writes /var/log/php8.2-fpm.log once it has run, even only `php-fpm8.2 -t`)
    assert proc.stdout.splitlines()[-1].startswith("ok: "), proc.stdout
