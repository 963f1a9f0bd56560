"""The corpus of broken configs: each file says, in ``# expect:`` lines, every error it must give.

``main-*.yaml`` are main config files (with an empty playbooks directory); ``pb-*.yaml`` are
playbook files checked against ``tests/configs/base.yaml``. The errors reported must be exactly
the expected ones: located (line:column), with the key path and the message.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from remediator.load import load

HERE = Path(__file__).parent / "configs"
CASES = sorted((HERE / "bad").glob("*.yaml"))


def _expected(case: Path) -> list[str]:
    return [
        line.split("# expect: ", 1)[1].rstrip("\n")
        for line in case.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


def _install(case: Path, root: Path) -> tuple[Path, str]:
    """Copy the case to ``root`` with safe permissions; return the main file and the file name
    errors must carry."""
    (root / "playbooks.d").mkdir(mode=0o755)
    if case.name.startswith("pb-"):
        main = root / "remediator.yaml"
        shutil.copyfile(HERE / "base.yaml", main)
        target = root / "playbooks.d" / case.name
        shutil.copyfile(case, target)
        target.chmod(0o644)
        main.chmod(0o644)
        return main, f"playbooks.d/{case.name}"
    main = root / case.name
    shutil.copyfile(case, main)
    main.chmod(0o644)
    return main, case.name


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_config_reports_exactly_the_expected_located_errors(
    case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _expected(case)
    assert expected, f"{case.name} has no '# expect:' lines"
    main, shown = _install(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    loaded = load(main)
    got = sorted(str(e) for e in loaded.all_errors())
    assert got == sorted(f"{shown}:{line}" for line in expected)
    assert not loaded.ok


def test_corpus_covers_main_files_and_playbook_files() -> None:
    kinds = {c.name.split("-", 1)[0] for c in CASES}
    assert kinds == {"main", "pb"}
