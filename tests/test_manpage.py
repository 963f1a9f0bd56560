"""The man pages are generated from the CLI's and the config's declarations, and kept fresh."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from remediator import docgen, manpage
from remediator.cli import _parser

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["remediator.8", "remediator.yaml.5"])
def test_the_committed_page_is_up_to_date(name: str) -> None:
    current = (REPO / "man" / name).read_text()
    assert current == manpage.pages()[name], f"man/{name} is stale: run `make man`"


def _rendered(name: str) -> str:
    res = subprocess.run(
        ["man", "--warnings", "-l", str(REPO / "man" / name)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "MANWIDTH": "100"},
        check=True,
    )
    assert res.stderr == "", res.stderr  # groff's warnings: a roff mistake
    return re.sub(".\b", "", res.stdout)  # no overstrike (bold) left


def test_remediator_8_lists_every_command_and_option_of_the_parser() -> None:
    text = _rendered("remediator.8")
    parser = _parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert subs.choices
    for name, sub in subs.choices.items():
        assert f"remediator {name}" in text
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue  # -h on every command: said once, not per command
            for flag in action.option_strings:
                assert flag in text, f"{name} {flag}"
    for heading in ("EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"):
        assert heading in text


def test_remediator_yaml_5_documents_every_key_of_the_reference() -> None:
    text = " ".join(_rendered("remediator.yaml.5").split())
    reference = docgen.markdown()
    rows = [ln for ln in reference.splitlines() if ln.startswith("| `")]
    assert rows
    for row in rows:
        key = row.split("`")[1]
        assert key in text, key
    assert "THE MAIN FILE" in text


def test_roff_control_characters_in_text_are_escaped() -> None:
    assert manpage._esc(".not a request\n'nor this") == "\\&.not a request\n\\&'nor this"
    assert manpage._esc("a\\b") == "a\\eb"
