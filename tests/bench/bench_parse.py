"""Replay ingestion of an access log: our scan against a bare line loop and fail2ban-regex.

``python -m tests.bench.bench_parse [LINES]`` writes a realistic ``nginx-combined`` log (2 M lines
by default: browser and bot user agents, referers, query strings, 1-5 % 5xx in bursts, about a
thousand requests a second) to a temporary directory, then reports medians over five rounds of:

* the baseline, ``for line in f: n += 1`` over the file opened ``'rb'``;
* ``AccessFormat.scan_file``: every line's status and time, malformed lines counted;
* ``remediator replay`` with the shipped example config and playbooks;
* ``fail2ban-regex`` with a 502 failregex, run once over a 200 k-line slice and extrapolated
  (it is two orders of magnitude slower; a full run would take minutes).

Each round runs the three in turn, so that each ratio compares runs made moments apart: on a
shared host the load drifts over minutes. Both wall-clock and CPU time are shown: other work
inflates the first more, but a busy neighbour slows the CPU time too (shared caches).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from remediator.sources.accesslog import ACCESS_FORMATS, Batch

RUNS = 5
F2B_LINES = 200_000
FORMAT = ACCESS_FORMATS["nginx-combined"]  # what the shipped config reads

_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/7.88.1",
    "python-requests/2.31.0",
    "-",
]
_PATHS = [
    "/",
    "/index.php",
    "/wp-login.php",
    "/wp-admin/admin-ajax.php",
    "/api/v1/items?id={n}&sort=desc",
    "/products/{n}/reviews?page={m}",
    "/static/js/app.{n}.min.js",
    "/static/css/main.{n}.css",
    "/images/catalog/{n}/thumb_{m}.webp",
    "/search?q=blue+running+shoes&page={m}",
    "/cart/add?sku=SKU-{n}&qty={m}",
    "/favicon.ico",
]
_REFERERS = ["-", "-", "-", "https://www.example.com/", "https://www.google.com/",
             "https://shop.example.com/products/{n}"]  # fmt: skip
_OK = [200] * 90 + [304] * 4 + [301, 302, 404, 404, 403, 499]


def generate(path: Path, lines: int, seed: int = 20261124) -> None:
    """Write ``lines`` nginx-combined lines, 1-5 % of them 5xx (mostly in bursts)."""
    rng = random.Random(seed)  # noqa: S311  # test data, not secrets
    t = dt.datetime(2026, 11, 24, 9, 0, 0, tzinfo=dt.UTC)
    burst = 0
    out: list[str] = []
    with path.open("w", encoding="ascii") as f:
        for i in range(lines):
            if rng.random() < 0.001:  # about a thousand requests a second
                t += dt.timedelta(seconds=1)
                burst = rng.randrange(600) if rng.random() < 0.01 else burst
            if burst:
                burst -= 1
            status = rng.choice((502, 502, 504)) if burst or rng.random() < 0.005 else 0
            status = status or rng.choice(_OK)
            n, m = rng.randrange(100_000), rng.randrange(1, 50)
            path_ = rng.choice(_PATHS).format(n=n, m=m)
            ref = rng.choice(_REFERERS).format(n=n)
            ua = rng.choice(_UAS)
            ip = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{i % 250 + 1}"
            size = 0 if status == 304 else rng.randrange(150, 90_000)
            out.append(
                f'{ip} - - [{t:%d/%b/%Y:%H:%M:%S +0000}] "GET {path_} HTTP/1.1" {status} {size} '
                f'"{ref}" "{ua}"\n'
            )
            if len(out) == 10_000:
                f.writelines(out)
                out.clear()
        f.writelines(out)


def bare_loop(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        for _line in f:
            n += 1
    return n


def ours(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        for batch in FORMAT.scan_file(f):
            n += batch.lines
    return n


def replay_with_playbooks(path: Path) -> int:
    """The whole of ``remediator replay``: parse, merge, every detector and the shipped
    example playbooks judged once per log second, the engine in dry run."""
    from remediator.load import load  # noqa: PLC0415
    from remediator.replay import replay  # noqa: PLC0415

    loaded = load(_example_config())
    _, summary = replay([path], loaded.config, loaded.playbooks, source="nginx_access")
    return int(summary["lines"])


def _example_config() -> Path:
    """The shipped example config, copied with the permissions an install gives it, where
    the loader trusts it (not under /tmp, which any user may write)."""
    home = Path.home() / ".cache" / "remediator-bench"
    home.mkdir(mode=0o755, parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="bench-parse-config-", dir=home)) / "etc"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest / "remediator.yaml"


def measure(fns: list[Callable[[Path], int]], path: Path) -> list[tuple[int, float, float]]:
    """(lines, median wall seconds, median CPU seconds) of each of ``fns`` over RUNS rounds
    (each round runs every one in turn), after one warm-up."""
    lines = [fn(path) for fn in fns]
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for _ in range(RUNS):
        for i, fn in enumerate(fns):
            w, c = time.perf_counter(), time.process_time()
            lines[i] = fn(path)
            cpus[i].append(time.process_time() - c)
            walls[i].append(time.perf_counter() - w)
    return [
        (n, statistics.median(w), statistics.median(c))
        for n, w, c in zip(lines, walls, cpus, strict=True)
    ]


def fail2ban(path: Path, tmp: Path) -> tuple[int, float, float] | None:
    """One fail2ban-regex run over the first F2B_LINES lines: (lines, wall s, CPU s)."""
    exe = shutil.which("fail2ban-regex")
    if exe is None:
        return None
    part = tmp / "slice.log"
    with path.open("rb") as src, part.open("wb") as dst:
        for i, line in enumerate(src):
            if i == F2B_LINES:
                break
            dst.write(line)
    regex = r'^<HOST> -[^"]*"[^"]*" 502 '  # fail2ban cuts the date out before matching
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w = time.perf_counter()
    out = subprocess.run([exe, str(part), regex], check=True, capture_output=True, timeout=600)
    wall = time.perf_counter() - w
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    matched = re.search(rb"(\d+) matched", out.stdout)
    with part.open("rb") as f:
        want = Batch.join(FORMAT.scan_file(f)).statuses.count(502)
    print(f"fail2ban-regex matched {matched.group(1).decode() if matched else '?'} lines "
          f"of the slice's {want} with status 502")  # fmt: skip
    return F2B_LINES, wall, cpu


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as d:
        tmp = Path(d)
        log = tmp / "access.log"
        t0 = time.perf_counter()
        generate(log, lines)
        size = log.stat().st_size
        print(f"{lines:,} nginx-combined lines, {size / lines:.0f} bytes a line on average, "
              f"generated in {time.perf_counter() - t0:.1f} s; medians of {RUNS} rounds")  # fmt: skip
        print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
              f"{platform.python_implementation()} {platform.python_version()}, "
              f"load average {_load()} before\n")  # fmt: skip
        base, mine, whole = measure([bare_loop, ours, replay_with_playbooks], log)
        print(f"load average {_load()} after the rounds\n")
        f2b = fail2ban(log, tmp)
    rows = [
        ("bare binary line loop (baseline)", *base),
        ("AccessFormat.scan_file", *mine),
        ("replay: parse + detectors + 8 example playbooks", *whole),
    ]
    print("| reader | lines | wall s | lines/s (wall) | lines/s (CPU) | vs baseline (wall / CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, wall, cpu in rows + ([("fail2ban-regex, 502 failregex \\*", *f2b)] if f2b else []):
        print(f"| {name} | {n:,} | {wall:.2f} | {n / wall:,.0f} | {n / cpu:,.0f} "
              f"| {n / wall / (base[0] / base[1]):.1%} / {n / cpu / (base[0] / base[2]):.1%} |")  # fmt: skip
    if f2b:
        print(f"\n\\* one run over the first {F2B_LINES:,} lines, extrapolated to lines/s; "
              f"its CPU time is that of the child process.")  # fmt: skip
    else:
        print("\nfail2ban-regex is not installed: skipped.")
    ok = mine[0] == base[0] == whole[0]
    print(f"\nscan counted {mine[0]:,} lines and replay {whole[0]:,} of {base[0]:,}: "
          f"{'ok' if ok else 'MISMATCH'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
