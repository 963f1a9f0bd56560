"""Where a replay's time could still go: each way of reading a log's blocks that was proposed,
timed against a bare line loop in the same process.

``python -m tests.bench.bench_scan_ideas [LINES]`` writes the same ``nginx-combined`` log as
``bench_parse`` (2 M lines by default), reads it once into replay's blocks (``_regions``:
512 KB, each leading with a newline), then times, over five rounds each running every reader
in turn (medians, CPU time, as a share of the bare loop's):

* the parts of a replay: reading the blocks, reading and scanning them (what the scan does
  for replay), and the whole replay with the shipped config;
* the scan's own regex (``Pattern.split``, eight lines a match) without the bookkeeping;
* one ``fullmatch`` per block of a regex with no groups (validation only), and the same
  with eight lines a repetition;
* the cheapest second passes that would give the statuses after such a validation:
  ``findall`` of every status, of the non-200 ones, ``bytes.count`` of one status, and
  ``bytes.find`` of one second's time (to cut a block at second boundaries);
* a floor: a regex that only walks to each newline, and ``bytes.count(b"\\n")``.

The rows are what ``docs/benchmarks.md`` (fourth round) quotes; nothing here is used by
remediator itself.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.bench.bench_parse import FORMAT, bare_loop, generate, replay_with_playbooks

RUNS = 5


def _line(status: bytes, time_: bytes) -> bytes:
    """nginx-combined as the fast regex reads it, with the status and time given."""
    field = rb"[!-\xff]*+"
    return (
        rb"\n" + field + rb" - " + field + rb" \[" + time_ + rb'\] "[^"]*+" ' + status
        + rb" " + field + rb' "[^"]*+" "[^"]*+"\r?+'
    )  # fmt: skip


def _readers(path: Path) -> list[tuple[str, Callable[[], object]]]:
    from remediator.replay import _regions  # noqa: PLC0415

    with path.open("rb") as f:
        blocks = list(_regions(f))
    views = [memoryview(buf)[:end] for buf, end in blocks]
    plain = rb"\d\d\d"
    groupless = re.compile(rb"(?:" + _line(plain, rb".{26}") + rb")*+").fullmatch
    eight = _line(plain, rb".{26}") * 8
    groupless8 = re.compile(
        rb"(?:" + eight + rb")*+(?:" + _line(plain, rb".{26}") + rb")*+"
    ).fullmatch
    walk = re.compile(rb"(?:\n[^\n]*+)*+").fullmatch
    statuses = re.compile(rb'" ([0-9]{3}) ').findall
    non200 = re.compile(rb'" (?!200 )([0-9]{3}) ').findall
    split = FORMAT._scanner._block
    assert split is not None

    def read() -> None:
        with path.open("rb") as f:
            for _ in _regions(f):
                pass

    def read_scan() -> None:
        with path.open("rb") as f:
            for buf, end in _regions(f):
                with memoryview(buf) as mv, mv[:end] as region:
                    FORMAT.scan_region(region)

    def each(fn: Callable[[memoryview], object]) -> Callable[[], object]:
        return lambda: [fn(v) for v in views]

    def valid(fn: Callable[[memoryview], re.Match[bytes] | None]) -> Callable[[], object]:
        def run() -> None:
            for v in views:
                if fn(v) is None:
                    raise AssertionError("a block of well-formed lines failed validation")

        return run

    def count(needle: bytes) -> Callable[[], object]:
        return lambda: [buf.count(needle, 0, end) for buf, end in blocks]

    def find(needle: bytes) -> Callable[[], object]:
        return lambda: [buf.find(needle, 0, end) for buf, end in blocks]

    second = b"[24/Nov/2026:09:20:00 +0000]"  # not in most blocks: a whole pass each
    return [
        ("bare binary line loop (baseline)", lambda: bare_loop(path)),
        ("replay: reading the blocks (pread)", read),
        ("replay: reading and scanning the blocks", read_scan),
        ("replay, whole (shipped config)", lambda: replay_with_playbooks(path)),
        ("scan's regex alone (split, 8 lines a match)", each(split)),
        ("(1) fullmatch per block, no groups", valid(groupless)),
        ("(1) fullmatch per block, no groups, 8 lines a repetition", valid(groupless8)),
        ("(1) second pass: findall of every status", each(statuses)),
        ("(1) second pass: findall of the non-200 statuses", each(non200)),
        ("(3) bytes.count of one status (b'\" 502 ')", count(b'" 502 ')),
        ("(3) bytes.count of b'\" 200 '", count(b'" 200 ')),
        ("(3) bytes.find of one second's time", find(second)),
        ("floor: a regex that walks to each newline", valid(walk)),
        ("floor: bytes.count(b'\\n')", count(b"\n")),
    ]


def main() -> int:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    with tempfile.TemporaryDirectory(prefix="bench-scan-ideas-") as d:
        log = Path(d) / "access.log"
        generate(log, lines)
        readers = _readers(log)
        replay_with_playbooks(log)  # warm-up: imports, config
        times: list[list[float]] = [[] for _ in readers]
        for _ in range(RUNS):
            for i, (_, fn) in enumerate(readers):
                c = time.process_time()
                fn()
                times[i].append(time.process_time() - c)
    # each round's ratio to that round's bare loop, then the median of those
    base = times[0]
    print(f"{lines:,} nginx-combined lines; medians of {RUNS} rounds; "
          f"load average {os.getloadavg()[0]:.2f} after\n")  # fmt: skip
    print("| reader | CPU s | bare loops |")
    print("|---|---:|---:|")
    for (name, _), ts in zip(readers, times, strict=True):
        ratio = statistics.median(t / b for t, b in zip(ts, base, strict=True))
        print(f"| {name} | {statistics.median(ts):.3f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
