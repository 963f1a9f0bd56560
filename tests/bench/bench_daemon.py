"""The running daemon's cost and speed: idle CPU, CPU at 1,000 lines/s, RSS, and
append-to-decision latency; and CPU at 1,000 lines/s with Prometheus metrics on and off, in
the same run. Run: ``python -m tests.bench.bench_daemon`` (about 5.5 minutes), or
``python -m tests.bench.bench_daemon metrics`` for the metrics part alone (3.5 minutes).

The daemon runs as its own process (``remediator run``) on a config with an access log, an
error log and (for one measurement) an HTTP probe once a second against a local server. Its CPU
is read from /proc (psutil ``cpu_times``) over a measured interval, as % of one core. The
baseline, measured in the same run on the same file and load, is ``tail -F``: the least any
log follower can cost.

Latency: 200 lines with a 502, one every 50 ms, from ``write()`` to the playbook's trigger
holding in the daemon's main loop (watcher, tailer, parser, detector, evaluation as ``run``
wires them; in-process, the loop in its own thread). The baseline is ``tail -F`` printing the
same line.
"""

from __future__ import annotations

import http.server
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

LINE = (
    '203.0.113.{ip} - - [{now}] "GET /index.php?page={i} HTTP/1.1" {status} 5123 '
    '"https://example.test/" "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"\n'
)
CONFIG = """
state_dir: {tmp}/state
action_log: {tmp}/actions.jsonl
log_format: json
log_level: warning
guards:
  breaker: {{failures: 100}}
sources:
  access: {{type: access_log, path: {tmp}/access.log, format: nginx-combined}}
  errors: {{type: error_log, path: {tmp}/error.log, format: nginx-error}}
{probe}
services:
  fpm: {{kind: php-fpm, pid_file: {tmp}/none.pid, start: [/bin/true]}}
playbooks:
  - name: any-502
    when: {{status_rate: {{source: access, status: 502, window: 1s, at_least: 1}}}}
    steps:
      - notify: hook
    limits: {{cooldown: 0, max_runs: 1000, per: 1h, backoff: false}}
    on_exhausted: {{stop: false}}
notifiers:
  hook: {{url: "http://127.0.0.1:9/"}}
{metrics}
"""
IDLE = 30.0  # seconds: CPU time is counted in 10 ms ticks, so idle needs a long look
PROBE = '  site: {{type: probe, url: "http://127.0.0.1:{port}/", interval: 1s, timeout: 500ms}}'
METRICS = "metrics: {{listen: '127.0.0.1:{port}', textfile: {tmp}/remediator.prom, textfile_every: {every}s}}"
METRICS_LOAD = 20.0  # seconds under load per daemon, metrics on and off


# The daemon refuses a config in a directory others can write (/tmp): the benchmarks keep theirs
# here, like the tests do theirs.
_HOME = Path.home() / ".cache" / "remediator-bench"


def _tmpdir() -> tempfile.TemporaryDirectory[str]:
    _HOME.mkdir(mode=0o755, parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix="bench-daemon-", dir=_HOME)


def _stamp() -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _start_daemon(
    tmp: Path, probe_port: int | None, metrics_port: int | None = None, every: float = 15.0
) -> subprocess.Popen[bytes]:
    for name in ("access.log", "error.log"):
        (tmp / name).touch()
    (tmp / "playbooks.d").mkdir(exist_ok=True)
    probe = PROBE.format(port=probe_port) if probe_port else ""
    metrics = METRICS.format(port=metrics_port, tmp=tmp, every=every) if metrics_port else ""
    cfg = tmp / "remediator.yaml"
    cfg.write_text(CONFIG.format(tmp=tmp, probe=probe, metrics=metrics))
    return launch(cfg, tmp / "state")


def launch(cfg: Path, state_dir: Path) -> subprocess.Popen[bytes]:
    """``remediator run`` on ``cfg``, once it has written its status and settled a second."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "remediator", "-c", str(cfg), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not (state_dir / "status.json").exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the daemon did not start")
        time.sleep(0.05)
    time.sleep(1.0)  # let start-up work (imports, first snapshot) settle
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not stopped within 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cpu_percent(pid: int, seconds: float, during: Any = None) -> float:
    p = psutil.Process(pid)
    t0 = sum(p.cpu_times()[:2])
    w0 = time.monotonic()
    if during is not None:
        during(seconds)
    else:
        time.sleep(seconds)
    return 100.0 * (sum(p.cpu_times()[:2]) - t0) / (time.monotonic() - w0)


def _write_at(path: Path, rate: float, seconds: float) -> None:
    with path.open("a", buffering=1) as f:
        start = time.monotonic()
        i = 0
        while True:
            due = start + i / rate
            now = time.monotonic()
            if due - start >= seconds:
                return
            if due > now:
                time.sleep(due - now)
            f.write(LINE.format(ip=i % 250, now=_stamp(), i=i, status=200))
            i += 1


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def measure_cpu(rounds: int = 2) -> dict[str, Any]:
    out: dict[str, list[float]] = {
        k: [] for k in ("idle_logs", "idle_probe", "load_1000", "tail_load_1000")
    }
    rss: list[float] = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        for _ in range(rounds):
            with _tmpdir() as d:
                tmp = Path(d)
                proc = _start_daemon(tmp, None)
                try:
                    out["idle_logs"].append(_cpu_percent(proc.pid, IDLE))
                    out["load_1000"].append(
                        _cpu_percent(
                            proc.pid, 10, lambda s, log=tmp / "access.log": _write_at(log, 1000, s)
                        )
                    )
                    rss.append(psutil.Process(proc.pid).memory_info().rss / 2**20)
                finally:
                    stop(proc)
                tail = subprocess.Popen(
                    ["tail", "-F", "-n0", str(tmp / "access.log")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    time.sleep(0.5)
                    out["tail_load_1000"].append(
                        _cpu_percent(
                            tail.pid, 10, lambda s, log=tmp / "access.log": _write_at(log, 1000, s)
                        )
                    )
                finally:
                    tail.kill()
                    tail.wait()
            with _tmpdir() as d:
                proc = _start_daemon(Path(d), srv.server_address[1])
                try:
                    out["idle_probe"].append(_cpu_percent(proc.pid, IDLE))
                finally:
                    stop(proc)
    finally:
        srv.shutdown()
    res = {k: _median(v) for k, v in out.items()}
    res["rss_mib"] = _median(rss)
    return res


def measure_latency(lines: int = 200, gap: float = 0.05) -> dict[str, float]:
    """From ``write()`` of a 502 line to the trigger holding in the daemon's own main loop
    (watcher + tailer + parser + detector + evaluation, as ``run`` wires them), in-process:
    the main loop in one thread, this writer in another."""
    from remediator.detect import Signals, evaluate  # noqa: PLC0415
    from remediator.load import load  # noqa: PLC0415
    from remediator.playbook import walk_conditions  # noqa: PLC0415
    from remediator.watch import Watcher  # noqa: PLC0415

    with _tmpdir() as d:
        tmp = Path(d)
        for name in ("access.log", "error.log"):
            (tmp / name).touch()
        (tmp / "playbooks.d").mkdir()
        cfg = tmp / "remediator.yaml"
        cfg.write_text(CONFIG.format(tmp=tmp, probe="", metrics=""))
        loaded = load(cfg)
        assert loaded.config is not None
        pb = loaded.playbooks[0]
        signals = Signals.for_conditions(walk_conditions(pb.when))
        watcher = Watcher(loaded.config, signals, state_dir=tmp / "state")
        decided: list[float] = []
        stop = threading.Event()

        def loop() -> None:
            seen = 0
            while not stop.is_set():
                watcher.run_once(time.monotonic(), 0.5)
                now = time.monotonic()
                n = watcher.feeder.stats["access"].matched  # 5xx lines seen so far
                if n > seen and evaluate(pb.when, signals, now)[0]:
                    decided.extend([time.perf_counter()] * (n - seen))
                    seen = n

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        appended: list[float] = []
        time.sleep(0.3)
        with (tmp / "access.log").open("a", buffering=1) as f:
            for i in range(lines):
                appended.append(time.perf_counter())
                f.write(LINE.format(ip=1, now=_stamp(), i=i, status=502))
                time.sleep(gap)
        time.sleep(0.5)
        stop.set()
        watcher.wake()
        thread.join(5)
        watcher.close()
    lat = [(d_ - a) * 1000 for a, d_ in zip(appended, decided, strict=False)]
    base = _tail_latency()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    return {
        "decisions": len(lat),
        "appended": lines,
        "median_ms": _median(lat) if lat else float("nan"),
        "p99_ms": q[98],
        "tail_median_ms": _median(base),
    }


def _tail_latency(lines: int = 50) -> list[float]:
    """Baseline: ``tail -F`` printing a line appended to the file it follows."""
    with _tmpdir() as d:
        log = Path(d) / "access.log"
        log.touch()
        tail = subprocess.Popen(
            ["tail", "-F", "-n0", str(log)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        base: list[float] = []
        try:
            time.sleep(0.5)
            assert tail.stdout is not None
            with log.open("a", buffering=1) as f:
                for i in range(lines):
                    t0 = time.time()
                    f.write(LINE.format(ip=1, now=_stamp(), i=i, status=502))
                    tail.stdout.readline()
                    base.append((time.time() - t0) * 1000)
                    time.sleep(0.02)
        finally:
            tail.kill()
            tail.wait()
        return base


METRICS_MODES = {"off": None, "on": 15.0, "on_1s": 1.0}  # scrape and textfile every N s


def measure_metrics(rounds: int = 3) -> dict[str, list[float]]:
    """CPU at 1,000 lines/s with metrics off, and on: served on loopback and written to a
    textfile, both every 15 s (Prometheus's usual scrape interval, the textfile's default) or
    every second (more than any real set-up); the three alternate in the same run, on the same
    config otherwise."""
    out: dict[str, list[float]] = {mode: [] for mode in METRICS_MODES}
    for _ in range(rounds):
        for mode, every in METRICS_MODES.items():
            with _tmpdir() as d:
                tmp = Path(d)
                port = _free_port() if every is not None else None
                proc = _start_daemon(tmp, None, port, every or 15.0)
                done = threading.Event()
                scraper = threading.Thread(target=_scrape, args=(port, every, done), daemon=True)
                if port is not None:
                    scraper.start()
                try:
                    out[mode].append(
                        _cpu_percent(
                            proc.pid,
                            METRICS_LOAD,
                            lambda s, log=tmp / "access.log": _write_at(log, 1000, s),
                        )
                    )
                    if port is not None:
                        body = _get_metrics(port)
                        assert 'remediator_log_lines_total{source="access"}' in body, body[:500]
                        assert (tmp / "remediator.prom").exists()
                finally:
                    done.set()
                    stop(proc)
    return out


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get_metrics(port: int) -> str:
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _scrape(port: int, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            _get_metrics(port)
        except OSError:
            continue


def measure_scrape(n: int = 2000) -> dict[str, float]:
    """CPU of one scrape's rendering and of one status sample (every 2 s), in-process, on the
    metrics of a config with 8 playbooks, 4 services and 6 log sources after 100 incidents."""
    from prometheus_client.exposition import generate_latest  # noqa: PLC0415

    from remediator.config import AccessLogSource, Config, Service, Source  # noqa: PLC0415
    from remediator.metrics import Metrics  # noqa: PLC0415

    sources: dict[str, Source] = {
        f"log{i}": AccessLogSource(path=Path(f"/nonexistent/{i}")) for i in range(6)
    }
    services = {f"svc{i}": Service(kind="nginx", unit="nginx.service") for i in range(4)}
    playbooks = [f"pb{i}" for i in range(8)]
    m = Metrics()
    m.configure(Config(sources=sources, services=services), playbooks)
    for i in range(100):
        pb, svc = playbooks[i % 8], f"svc{i % 4}"
        m.record({"event": "incident_opened", "playbook": pb, "detection_ms": 800.0})
        step = {"playbook": pb, "action": "restart", "target": svc, "outcome": "ok"}
        m.record({"event": "action_result", **step, "duration_ms": 50.0})
        m.record({"event": "incident_closed", "playbook": pb, "outcome": "resolved"})
    snap: dict[str, Any] = {
        "sources": {n: {"state": "ok", "lines": 1000, "malformed": 0} for n in sources}
    }
    t0 = time.process_time()
    for _ in range(n):
        body = generate_latest(m.registry)
    render = (time.process_time() - t0) / n
    t0 = time.process_time()
    for i in range(n):
        snap["sources"]["log0"]["lines"] = 1000 + i
        m.sample(snap, {}, 0.0)
    sample = (time.process_time() - t0) / n
    return {"render_ms": render * 1000, "sample_ms": sample * 1000, "bytes": len(body)}


def main_metrics() -> None:
    one = measure_scrape()
    print(
        f"one scrape rendered: {one['render_ms']:.2f} ms of CPU ({one['bytes']:.0f} bytes); "
        f"one status sample: {one['sample_ms']:.3f} ms\n"
    )
    res = measure_metrics()
    print(
        "| CPU at 1,000 lines/s | metrics off | on (scraped, textfile every 15 s) "
        "| on (both every 1 s) |"
    )
    print("|---|---:|---:|---:|")
    medians = " | ".join(f"{_median(res[m]):.2f} %" for m in METRICS_MODES)
    print(f"| median of {len(res['off'])} | {medians} |")
    runs = ", ".join("/".join(f"{v:.2f}" for v in r) for r in zip(*res.values(), strict=True))
    print(f"\nruns (off/on/on_1s, {METRICS_LOAD:g} s each, alternating): {runs}")


def main() -> None:
    lat = measure_latency()
    cpu = measure_cpu()
    print("| measure | remediator | baseline (`tail -F`) | target |")
    print("|---|---:|---:|---:|")
    print(
        f"| append-to-decision, median | {lat['median_ms']:.1f} ms | "
        f"{lat['tail_median_ms']:.2f} ms | <= 25 ms |"
    )
    print(f"| append-to-decision, p99 | {lat['p99_ms']:.1f} ms | | <= 100 ms |")
    print(f"| decisions / 502 lines appended | {lat['decisions']} / {lat['appended']} | | all |")
    print(f"| CPU idle, logs only | {cpu['idle_logs']:.3f} % | | <= 0.05 % |")
    print(f"| CPU idle, one probe per second | {cpu['idle_probe']:.3f} % | | <= 0.2 % |")
    print(
        f"| CPU at 1,000 lines/s | {cpu['load_1000']:.2f} % | {cpu['tail_load_1000']:.2f} % | "
        "<= 1.5 % |"
    )
    print(f"| RSS | {cpu['rss_mib']:.1f} MiB | | <= 35 MB |")
    print(
        "\nmedians of 2 rounds (30 s idle, 10 s under load) and of 200 appends (latency); "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
    )
    main_metrics()


if __name__ == "__main__":
    if sys.argv[1:] == ["metrics"]:
        main_metrics()
    else:
        main()
