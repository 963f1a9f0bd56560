"""The report costs the daemon nothing: none of the daemon's modules imports it.

A fresh interpreter imports every module of the package but the report's own (the CLI, the
daemon, the engine, every action, source and service backend), builds the action registry the
daemon runs with, and then no ``remediator.report`` module may be loaded. ``remediator report``
imports it inside its command, as the other occasional commands import theirs.
"""

from __future__ import annotations

import subprocess
import sys

from tests.sysd import REPO

SCRIPT = """
import importlib, pathlib, sys
import remediator
root = pathlib.Path(remediator.__file__).parent
skip = ("remediator.report", "remediator.demo", "remediator.__main__")
names = sorted(  # from the files: pkgutil.walk_packages would import the report to walk it
    ".".join(("remediator", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
    for p in root.rglob("*.py")
)
names = [n for n in names if not n.startswith(skip)]
for name in names:
    importlib.import_module(name)
from remediator.actions.registry import all_actions
all_actions()
loaded = sorted(m for m in sys.modules if m.startswith("remediator.report"))
print(len(names), "imported;", "report modules:", loaded)
sys.exit(1 if loaded or "remediator.daemon" not in sys.modules else 0)
"""


def test_no_module_of_the_daemon_imports_the_report() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "report modules: []" in proc.stdout


def test_the_report_command_imports_it_when_run() -> None:
    script = (
        "import sys; from remediator.cli import main; "
        "main(['-c', '/nonexistent/r.yaml', 'report']); "
        "print(any(m.startswith('remediator.report') for m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert proc.stdout.strip().endswith("True"), proc.stdout + proc.stderr
