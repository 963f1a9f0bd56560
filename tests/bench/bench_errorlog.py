"""Error-log classification: lines per second of ``ErrorFormat.classify`` and ``time``.

``python -m tests.bench.bench_errorlog [LINES]`` builds, per dialect, a log of LINES lines
(200 k by default) from the sample corpus (``tests/samples/error``): 98 % lines that name no
cause (most of any real error log: 404s, auth failures, rate limits, notices) and 2 % that do,
shuffled with a fixed seed. It reports medians over five runs of:

* the baseline, ``for line in lines: n += 1``;
* ``classify`` on the irrelevant lines alone (the hot path: what a line that matches nothing
  costs), then on the mix;
* ``time`` on the mix (replay reads every line's time).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from remediator.sources.errorlog import ERROR_FORMATS, ErrorFormat

RUNS = 5
SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "error"


def _pool(name: str) -> tuple[list[bytes], list[bytes]]:
    """(irrelevant lines, cause lines) of a dialect's samples."""
    quiet: list[bytes] = []
    loud: list[bytes] = []
    for log in sorted(SAMPLES.glob(f"{name}.*log")):
        lines = log.read_bytes()[:-1].split(b"\n")
        rows = log.with_suffix(".expect").read_text(encoding="utf-8").splitlines()
        for line, row in zip(lines, rows, strict=True):
            (loud if json.loads(row)["cause"] else quiet).append(line)
    return quiet, loud


def _mix(quiet: list[bytes], loud: list[bytes], n: int, rng: random.Random) -> list[bytes]:
    return [rng.choice(loud) if rng.random() < 0.02 else rng.choice(quiet) for _ in range(n)]


def _median(fn: Callable[[], int]) -> float:
    """Median CPU seconds of RUNS runs, after a warm-up (CPU: a shared host's other work
    inflates wall-clock time, much less this process's own)."""
    fn()
    cpus = []
    for _ in range(RUNS):
        t = time.process_time()
        fn()
        cpus.append(time.process_time() - t)
    return statistics.median(cpus)


def _bench(fmt: ErrorFormat, n: int) -> list[tuple[str, float]]:
    rng = random.Random(20261205)  # noqa: S311  # test data, not secrets
    quiet, loud = _pool(fmt.name)
    only_quiet = [rng.choice(quiet) for _ in range(n)]
    mix = _mix(quiet, loud, n, rng)

    def bare() -> int:
        k = 0
        for _ in mix:
            k += 1
        return k

    def classify(lines: list[bytes]) -> Callable[[], int]:
        c = fmt.classify
        return lambda: sum(1 for line in lines if c(line) is not None)

    def times() -> int:
        t = fmt.time
        return sum(1 for line in mix if t(line) is not None)

    return [
        ("bare loop (baseline)", _median(bare)),
        ("classify, lines naming no cause", _median(classify(only_quiet))),
        ("classify, 2 % naming a cause", _median(classify(mix))),
        ("time, same mix", _median(times)),
    ]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(f"{n:,} lines per dialect from the sample corpus; medians of {RUNS} runs (CPU)\n")
    print("| dialect | reader | lines/s | µs a line | vs baseline |")
    print("|---|---|---:|---:|---:|")
    for fmt in ERROR_FORMATS.values():
        rows = _bench(fmt, n)
        base = rows[0][1]
        for label, secs in rows:
            print(f"| {fmt.name} | {label} | {n / secs:,.0f} | {secs / n * 1e6:.2f} "
                  f"| {base / secs:.1%} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
