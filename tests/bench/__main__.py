"""`make bench`: run every benchmark module ``tests/bench/bench_*.py`` in turn.

Each module is run as its own process (``python -m tests.bench.bench_x``) so one benchmark's
memory and threads never colour another's figures; each prints its own table of medians and
ratios against a baseline measured in the same run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    modules = sorted(p.stem for p in here.glob("bench_*.py"))
    only = set(sys.argv[1:])
    failed = 0
    for mod in modules:
        if only and mod not in only:
            continue
        print(f"\n## {mod}\n", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"tests.bench.{mod}"])
        failed += rc != 0
    if not modules:
        print("no benchmarks yet")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
