"""`remediator check` on hostile files: how fast the answer comes, and the memory it takes.

``python -m tests.bench.bench_config`` runs ``remediator check`` as a process (five runs, the
median wall time and the largest peak RSS) on:

* the shipped example (``config/``): the baseline, mostly Python's start-up;
* the example with a 377-byte "billion laughs" playbook (nested YAML aliases);
* the example with a playbook of 300 nested ``any:``;
* the example with a playbook of 20 k list items (the node-count bound), and a 1 MiB `any:`
  of 15,000 conditions (refused at that bound).

The files live in a directory under ``~/.cache`` (root's home): /tmp would be refused.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.test_yaml_bounds import BOMB, nested_any

RUNS = 5
REPO = Path(__file__).resolve().parents[2]


def _case(base: Path, name: str, playbook: str | None) -> Path:
    d = base / name
    shutil.copytree(REPO / "config", d)
    if playbook is not None:
        (d / "playbooks.d" / "zz-hostile.yaml").write_text(playbook)
    return d / "remediator.yaml"


def _big_any() -> str:
    """The slowest hostile file found (issue 9's audit): 1 MiB of plausible conditions."""
    cond = " - {status_rate: {source: nginx_access, status: 502, at_least: 5}}\n"
    head = "name: big\nwhen:\n any:\n"
    n = (1024 * 1024 - len(head) - 200) // len(cond)
    return head + cond * n + "steps: [restart: php-fpm]\n"


def _run(cfg: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) of the child, exit status."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "remediator", "-c", str(cfg), "check"],
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(after, before) / 1024, proc.returncode


def main() -> int:
    home = Path.home() / ".cache" / "remediator-bench"
    home.mkdir(mode=0o755, parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(dir=home))
    try:
        cases = {
            "shipped example": _case(base, "ok", None),
            "alias bomb (377 B)": _case(base, "bomb", BOMB),
            "300 nested any": _case(base, "deep", nested_any(300)),
            "20 k items (60 KB)": _case(base, "wide", "[" + "0, " * 20_001 + "0]\n"),
            "1 MiB any: of 15 k conditions": _case(base, "big", _big_any()),
        }
        print(f"| case | exit | wall (median of {RUNS}) | peak RSS |")
        print("|---|---|---|---|")
        for name, cfg in cases.items():
            runs = [_run(cfg) for _ in range(RUNS)]
            wall = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            print(f"| {name} | {runs[0][2]} | {wall * 1000:.0f} ms | {rss:.0f} MiB |", flush=True)
    finally:
        shutil.rmtree(base)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
