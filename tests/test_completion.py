"""Shell completion is generated from the CLI's parser, kept fresh, and works in a real bash."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from remediator import completion
from remediator.cli import _parser

REPO = Path(__file__).resolve().parent.parent
BASH = REPO / "completion" / "bash" / "remediator"
ZSH = REPO / "completion" / "zsh" / "_remediator"


@pytest.mark.parametrize("name", ["bash/remediator", "zsh/_remediator"])
def test_the_committed_script_is_up_to_date(name: str) -> None:
    current = (REPO / "completion" / name).read_text()
    assert current == completion.scripts()[name], f"completion/{name} is stale: run `make man`"


def complete(line: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for the last word of ``line`` (empty last word when it ends in space)."""
    words = shlex.split(line) + ([""] if line.endswith(" ") else [])
    script = (
        f"source {shlex.quote(str(BASH))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_remediator\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    res = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=True,
    )
    assert res.stderr == ""
    return sorted(w for w in res.stdout.splitlines() if w)


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subs.choices)


def test_bash_offers_every_command() -> None:
    assert complete("remediator ") == sorted(_commands())
    assert complete("remediator -c /etc/remediator/remediator.yaml re") == sorted(
        c for c in _commands() if c.startswith("re")
    )


def test_bash_offers_exactly_each_commands_options() -> None:
    for name, sub in _commands().items():
        flags = sorted(f for a in sub._actions for f in a.option_strings)
        assert complete(f"remediator {name} -") == flags, name


def test_bash_completes_choices_and_file_arguments(tmp_path: Path) -> None:
    assert complete("remediator schema ") == ["config", "playbook"]
    (tmp_path / "access.log").touch()
    (tmp_path / "other.txt").touch()
    assert complete("remediator replay acc", cwd=tmp_path) == ["access.log"]
    assert complete("remediator -c oth", cwd=tmp_path) == ["other.txt"]
    assert complete("remediator log --since ") == []  # a time: nothing to guess


def test_zsh_parses_the_completion_function() -> None:
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.fail("zsh is not installed (scripts/ensure-system-deps installs it)")
    res = subprocess.run([zsh, "-n", str(ZSH)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    text = ZSH.read_text()
    for name in _commands():
        assert f"\n        {name}) _arguments" in text
