"""``make demo``: remediator fixing a real outage, as it happens.

1. a sandboxed nginx + PHP-FPM on loopback (private configs, logs and sockets in a temp dir,
   high ports; the test bed's servers);
2. the configuration the demo runs, shown whole and checked as an operator would
   (``remediator check``): shaped like the shipped ``config/remediator.yaml`` (the same source
   and service names), with the sandbox's paths, PHP-FPM controlled by its pid file (no systemd
   needed), and the shipped PHP-FPM playbooks copied verbatim from ``config/playbooks.d/``;
3. the daemon started on exactly that file, load applied, PHP-FPM killed: the demo shows the
   502s, the daemon's detection, its restart and the verified recovery live, then the incident
   from ``remediator log``, and what ``remediator replay`` makes of the same logs afterwards;
4. the incident's page (``remediator report``) written to ``build/demo/incident.html``, and a
   screenshot of it by a headless chromium to ``build/demo/incident.png`` (printed: ``.pdf``).

Everything it started is stopped at the end, also on Ctrl-C. It runs from a checkout (it
uses the test bed in ``tests/stack.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from remediator.cli import main as cli
from remediator.events import Event

if TYPE_CHECKING:
    from tests.stack import Nginx, PhpFpm

REPO = Path(__file__).resolve().parent.parent
# What the demo leaves behind for a person to open (generated, ignored by git with build/).
ARTIFACTS = REPO / "build" / "demo"
PAGE = ARTIFACTS / "incident.html"
SCREENSHOT = ARTIFACTS / "incident.png"
PRINTED = ARTIFACTS / "incident.pdf"
BOLD, DIM, RED, GREEN, OFF = "\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[0m"

# The shipped playbooks the demo runs, verbatim: PHP-FPM down (502s + nginx's "connect()
# failed"), and its master gone (the service's own state).
PLAYBOOKS = ("10-php-fpm-down.yaml", "15-php-fpm-master-gone.yaml")

CONFIG = """\
# The demo's configuration: like the shipped config/remediator.yaml, for the sandbox. Same
# source and service names, so the shipped playbooks in playbooks.d/ run unchanged.
dry_run: false
state_dir: {tmp}/state
action_log: {tmp}/actions.jsonl
playbooks_dir: playbooks.d
log_format: console
sources:
  nginx_access:
    type: access_log
    path: {access}
    format: nginx-timed  # the sandbox's nginx logs request and upstream times
  nginx_error:
    type: error_log
    path: {error}
    format: nginx-error
  fpm_log:
    type: error_log
    path: {fpm_log}
    format: php-fpm
  site:
    type: probe
    url: "{url}"
    interval: 1s
    timeout: 500ms
    expect_status: 200
    expect_body: ok
services:
  php-fpm:
    kind: php-fpm
    # no systemd here: the pid file names the master, and this starts it
    pid_file: {pid}
    start: [php-fpm8.2, -y, {conf}]
    config_file: {conf}
    config_test: [php-fpm8.2, -t, -y, {conf}]
    pool_file: {pool}
    startup_grace: 2s
notifiers:
  # the playbooks alert "oncall" when their steps run out; here nothing listens on port 9
  oncall: {{url: "http://127.0.0.1:9/remediator", timeout: 1s}}
"""


def write_config(tmp: Path, nginx: Nginx, fpm: PhpFpm) -> Path:
    """The demo's config for these servers, and the shipped playbooks beside it."""
    cfg = tmp / "remediator.yaml"
    cfg.write_text(
        CONFIG.format(
            tmp=tmp,
            access=nginx.access_log,
            error=nginx.error_log,
            fpm_log=fpm.error_log,
            url=nginx.url(),
            pid=fpm.pid_file,
            conf=fpm.conf,
            pool=fpm.pool_file,
        )
    )
    playbooks = tmp / "playbooks.d"
    playbooks.mkdir(exist_ok=True)
    for name in PLAYBOOKS:
        shutil.copyfile(REPO / "config" / "playbooks.d" / name, playbooks / name)
    for p in [tmp, playbooks, *playbooks.iterdir()]:  # as an install leaves them
        p.chmod(0o755 if p.is_dir() else 0o644)
    cfg.chmod(0o640)  # docs/install.md: 0640 root:adm
    return cfg


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{OFF}", flush=True)


def _show_and_check(cfg: Path) -> int:
    say(f"the configuration this demo runs: {cfg}")
    print(cfg.read_text(), end="")
    names = ", ".join(p.name for p in sorted((cfg.parent / "playbooks.d").iterdir()))
    print(f"{DIM}# playbooks.d/: {names} (copied from config/playbooks.d/){OFF}")
    say("remediator check   (that file, as an operator checks it after an edit)")
    return cli(["-c", str(cfg), "check"])


class _Ticker(threading.Thread):
    """Prints what users get, every 250 ms, until stopped."""

    def __init__(self, load: object) -> None:
        super().__init__(daemon=True)
        self.load = load
        self.stop_event = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self.stop_event.wait(0.25):
            now = time.monotonic()
            counts = self.load.statuses(last, now)  # type: ignore[attr-defined]
            last = now
            ok = counts.get(200, 0)
            bad = sum(n for s, n in counts.items() if s != 200)
            colour = RED if bad else GREEN
            print(
                f"{DIM}  users: {colour}{ok:4d} x 200  {bad:4d} failed{OFF}"
                f"{DIM}  (per 250 ms){OFF}",
                flush=True,
            )


def _closed(action_log: Path) -> bool:
    from remediator.actionlog import read  # noqa: PLC0415

    return any(r.get("event") == Event.INCIDENT_CLOSED for r in read(action_log))


def _live(tmp: Path) -> int:
    from tests.stack import LoadGenerator, Stack, wait_for  # noqa: PLC0415

    say("starting a sandboxed nginx + PHP-FPM on loopback")
    with Stack() as stack:
        fpm = stack.fpm(pm="static", max_children=4)
        nginx = stack.nginx(fpm)
        print(f"  nginx {nginx.url()}  ->  PHP-FPM {fpm.socket}  (master pid {fpm.master_pid()})")
        cfg = write_config(tmp, nginx, fpm)
        if _show_and_check(cfg) != 0:
            return 1
        say(f"starting the daemon:  remediator -c {cfg} run")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "remediator", "-c", str(cfg), "run"],
            stdout=sys.stdout,
            stderr=sys.stdout,
            start_new_session=True,
        )
        try:
            wait_for((tmp / "state" / "status.json").exists, 15, "the daemon")
            say("load: 200 requests/s")
            with LoadGenerator(nginx.url(), rate=200) as load:
                ticker = _Ticker(load)
                ticker.start()
                time.sleep(1.5)
                say(
                    f"breaking PHP-FPM: kill -9 of its master and workers (pgid {fpm.master_pid()})"
                )
                killed = time.monotonic()
                fpm.kill_all()
                wait_for(
                    lambda: (
                        load.first_ok_after(killed) is not None and time.monotonic() - killed > 2.5
                    ),
                    20,
                    "recovery",
                )
                # the daemon verifies the step: users healthy again, and still so a settle later
                wait_for(lambda: _closed(tmp / "actions.jsonl"), 30, "the incident to close")
                ticker.stop_event.set()
                ticker.join()
            back = load.first_ok_after(killed)
            failed = sum(n for s, n in load.statuses(killed).items() if s != 200)
            if back is None:
                print(f"{RED}  not recovered{OFF}")
                return 1
            say(
                f"recovered: 200s again {back - killed:.3f} s after the kill, "
                f"{failed} requests failed; PHP-FPM master is now pid {fpm.master_pid()}"
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
        say("remediator log   (the incident, as an operator reviews it)")
        cli(["-c", str(cfg), "log"])
        say("remediator replay   (the same logs, afterwards: what the playbooks would do)")
        cli(["-c", str(cfg), "replay", str(nginx.access_log), str(nginx.error_log)])
        return _report(cfg)  # while the servers' logs are still there to chart


def _report(cfg: Path) -> int:
    """The incident's page (``remediator report``) and a screenshot of it, kept in
    :data:`ARTIFACTS` after the demo's own files are gone."""
    from tests import browser  # noqa: PLC0415 - a checkout's test bed, as tests.stack

    say(f"remediator report --last -o {PAGE}   (the incident as a page: chart, steps, evidence)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if cli(["-c", str(cfg), "report", "--last", "-o", str(PAGE)]) != 0:
        return 1
    why = browser.unavailable()
    if why is not None:
        print(f"  no screenshot: {why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="browser-", dir=cfg.parent) as d:
        browser.render(PAGE, SCREENSHOT, Path(d), width=1280, height=2200, pdf=PRINTED)
    print(f"  open the page:     {PAGE}\n  or its screenshot: {SCREENSHOT}\n  printed: {PRINTED}")
    return 0


def main() -> int:
    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    # Not under /tmp: remediator refuses config in a directory others can write (as sshd does).
    base = Path.home() / ".cache" / "remediator-demo"
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=base) as d:
        tmp = Path(d)
        try:
            return _live(tmp)
        except KeyboardInterrupt:
            print("\ninterrupted: everything the demo started has been stopped")
            return 130


if __name__ == "__main__":
    sys.exit(main())
