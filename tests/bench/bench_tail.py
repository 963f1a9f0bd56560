"""What following a log costs: CPU at 1,000 lines/s, CPU when idle, and append-to-read latency.

Run: ``python -m tests.bench.bench_tail`` (about 80 s). For each backend a follower runs in its
own process, as the daemon's main loop does (``select()`` on ``fileno()`` with ``timeout(now)``,
``process(now)``, a checkpoint every second), and measures its own CPU time
(``time.process_time``: user + system) against wall time. This process is the writer: one
``write()`` per nginx-like line, paced by the monotonic clock, each line stamped with
``time.monotonic_ns()`` (one clock for every process) so the follower can tell each line's
latency.

Three set-ups: inotify with its default batch interval, inotify waking for every event, polling.

- load: 1,000 lines/s for 10 s; CPU as the median of nine 1-second samples, % of one core.
- idle: 10 s with no write; CPU likewise.
- latency: 200 lines 20 ms apart; median and p99 from write to ``process()`` returning it.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from remediator import logs
from remediator.sources.tail import Backend, Tailer

LOAD_RATE = 1000
LOAD_SECONDS = 10.0
IDLE_SECONDS = 10.0
LATENCY_LINES = 200
LATENCY_GAP = 0.02
POLL_INTERVAL = 1.0  # the Tailer's defaults, as the daemon would run it
BATCH_INTERVAL = 0.05

_LINE = (
    '{stamp} 203.0.113.{ip} - - [25/Nov/2026:10:00:00 +0000] "GET /index.php?page={i} HTTP/1.1" '
    '200 5123 "https://example.test/" "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0" '
    "upstream=unix:/run/php/php8.2-fpm.sock rt=0.012\n"
)


def _follow(
    backend: Backend, batch: float, path: Path, seconds: float, state_dir: Path
) -> dict[str, Any]:
    """The follower process: a main loop like the daemon's, timing itself."""
    tailer = Tailer(
        [path],
        backend=backend,
        state_dir=state_dir,
        poll_interval=POLL_INTERVAL,
        batch_interval=batch,
    )
    fd = tailer.fileno()
    print("ready", flush=True)
    start = last_wall = time.monotonic()
    last_cpu = time.process_time()
    end, next_sample, next_checkpoint = start + seconds, start + 1.0, start + 1.0
    samples: list[float] = []
    latencies: list[float] = []
    lines = 0
    while (now := time.monotonic()) < end:
        wait = tailer.timeout(now)
        wait = (
            min(next_sample, end) - now if wait is None else min(wait, min(next_sample, end) - now)
        )
        select.select([fd], [], [], max(wait, 0.0))
        now = time.monotonic()
        for got in tailer.process(now).values():
            received = time.monotonic_ns()
            lines += len(got)
            latencies += [(received - int(line.split(b" ", 1)[0])) / 1e6 for line in got]
        if now >= next_checkpoint:
            tailer.checkpoint()
            next_checkpoint += 1.0
        if now >= next_sample:
            cpu = time.process_time()
            samples.append((cpu - last_cpu) / (now - last_wall))
            last_cpu, last_wall, next_sample = cpu, now, next_sample + 1.0
    tailer.close()
    return {"cpu_samples": samples, "latencies_ms": latencies, "lines": lines}


def _run(backend: Backend, batch: float, seconds: float, rate: float, count: int) -> dict[str, Any]:
    """Start a follower for ``seconds`` and write ``count`` lines at ``rate`` lines/s to it,
    starting half a second in."""
    with tempfile.TemporaryDirectory(prefix="bench-tail-") as tmp:
        path = Path(tmp) / "access.log"
        path.write_bytes(b"")
        cmd = [sys.executable, "-m", "tests.bench.bench_tail", "--follow", backend.value]
        cmd += [str(batch), str(path), str(seconds), tmp]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            begin = time.monotonic() + 0.5  # after the follower's first look
            for i in range(count):
                delay = begin + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                line = _LINE.format(stamp=time.monotonic_ns(), ip=i % 250, i=i)
                os.write(fd, line.encode())
            os.close(fd)
            out, _ = proc.communicate(timeout=seconds + 30)
        result: dict[str, Any] = json.loads(out)
        result["written"] = count
        return result


def _pct(samples: list[float]) -> str:
    return f"{100 * statistics.median(samples):.2f} %"


def main() -> int:
    rows = []
    configs = [
        (Backend.INOTIFY, BATCH_INTERVAL, f"inotify, batch {BATCH_INTERVAL * 1000:g} ms (default)"),
        (Backend.INOTIFY, 0.0, "inotify, no batching"),
        (Backend.POLLING, 0.0, f"polling every {POLL_INTERVAL:g} s"),
    ]
    for backend, batch, label in configs:
        # Writes from 0.5 s to 10.5 s; samples 1..9 are whole seconds of steady load.
        load = _run(backend, batch, LOAD_SECONDS + 1.5, LOAD_RATE, int(LOAD_RATE * LOAD_SECONDS))
        idle = _run(backend, batch, IDLE_SECONDS, 1.0, 0)
        lat_seconds = LATENCY_LINES * LATENCY_GAP + 2.0
        lat = _run(backend, batch, lat_seconds, 1 / LATENCY_GAP, LATENCY_LINES)
        ms = sorted(lat["latencies_ms"])
        p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))] if ms else float("nan")
        rows.append(
            f"| {label} | {_pct(load['cpu_samples'][1:10])} | {load['lines']}/{load['written']} "
            f"| {_pct(idle['cpu_samples'])} | {statistics.median(ms):.2f} ms | {p99:.2f} ms "
            f"| {lat['lines']}/{lat['written']} |"
        )
    print("| backend | CPU at 1,000 lines/s | lines read | CPU idle | latency median |", end="")
    print(" latency p99 | lines read |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(
        "\nCPU: median of 1-second samples of the follower process's CPU time over wall time"
        " (% of one core); latency: from write() to process() returning the line."
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--follow"]:
        _, _, name, batch, file, secs, state = sys.argv
        logs.setup(fmt="json", level="warning", stream=sys.stderr)  # stdout carries the result
        result = _follow(Backend(name), float(batch), Path(file), float(secs), Path(state))
        print(json.dumps(result))
        sys.exit(0)
    sys.exit(main())
