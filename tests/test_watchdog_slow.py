"""The loop never blocks (issue 8, item 6), under the real systemd.

remediator runs as the shipped ``Type=notify`` unit (installed as tests/test_service_unit.py
does) with ``WatchdogSec=2s``, in front of Debian's php8.2-fpm and nginx units. Real-looking
nginx error lines in the error log it follows make it do, for longer than the watchdog allows,
each slow thing that used to run in the main loop:

- a step's config test (a reload of php8.2-fpm whose ``config_test`` waits first);
- a rollback: scale_workers edits the pool, the site stays broken for another reason (its
  checkout page answers 503), and the rollback's config test waits;
- the ``on_exhausted`` notification, to a webhook that answers late.

How long the slow thing lasts is the test's to decide, not a fixed sleep: the config test
(``held-config-test``, which then runs the real ``php-fpm8.2 -t``) and the webhook wait while a
hold file exists. The test keeps them held until the daemon has shown, for more than twice
WatchdogSec, that its loop keeps turning: status.json rewritten again and again in that phase
(the loop writes it, then pings the watchdog), new access-log lines counted, ``remediator
status`` answering. Then it lets go and checks that the slow thing completed and is in the
action log, and that systemd never killed the daemon (same MainPID, NRestarts=0, no
"Watchdog timeout" in the journal).

The probes run every 5 s, longer than WatchdogSec: their results must not be what keeps an
idle daemon pinging. An idle daemon must also outlive a WatchdogSec (1 s) shorter than the 2 s
it waits between looks at its status: the loop turns at least every half of ``WATCHDOG_USEC``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from remediator import status
from remediator.daemon import watchdog_every
from tests.stack import wait_for
from tests.sysd import DEBIAN_PHP_SITE, PHP_OK, BootedSystemd
from tests.test_service_unit import (
    CONFIG,
    FPM,
    GUARDS,
    NGINX,
    PLAYBOOKS,
    SHIPPED_UNIT,
    UNIT,
    Service,
    dropin,
)

WATCHDOG_S = 2
SITE = "http://127.0.0.1/index.php"
HOLDS = "/run/watchdog-test"
HOLD_TEST = f"{HOLDS}/hold-config-test"
HOLD_HOOK = f"{HOLDS}/hold-webhook"
RECEIVED = f"{HOLDS}/webhook.jsonl"
HELD_TEST = "/etc/remediator/held-config-test"
HOOK_UNIT = "watchdog-webhook.service"
HOOK_PORT = 8787
POOL = "/etc/php/8.2/fpm/pool.d/www.conf"
SOCK = "/run/php/php8.2-fpm.sock"

_CONFIG = f"""\
dry_run: false
state_dir: /var/lib/remediator
action_log: /var/log/remediator/actions.jsonl
playbooks_dir: playbooks.d
sources:
  nginx_access: {{type: access_log, path: /var/log/nginx/access.log, format: nginx-combined}}
  nginx_error: {{type: error_log, path: /var/log/nginx/error.log, format: nginx-error}}
  site:
    type: probe
    url: http://127.0.0.1/health.php
    interval: 5s
    timeout: 1s
    expect_body: ok
  checkout:
    type: probe
    url: http://127.0.0.1/checkout.php
    interval: 5s
    timeout: 1s
services:
  php-fpm:
    kind: php-fpm
    unit: {FPM}
    config_test: [{HELD_TEST}, php-fpm8.2, -t]
    pool_file: {POOL}
    startup_grace: 1s
notifiers:
  oncall: {{url: "http://127.0.0.1:{HOOK_PORT}/hook", timeout: 30s}}
"""

# One playbook per test, each on its own cause, so no test's lines trip another's.
_RELOAD = """\
name: php-fpm-refused
description: nginx cannot connect to PHP-FPM; reload it (its config test is slow)
# the test writes the error lines itself on a healthy site: log lines alone must do here
corroborate: none
when:
  error_cause: {source: nginx_error, cause: upstream_refused, window: 20s, at_least: 3}
steps:
  - reload: php-fpm
    verify: {probe: site, within: 10s, settle: 1s}
on_exhausted: {stop: false}
"""
_SCALE = """\
name: php-fpm-saturated
description: PHP-FPM's backlog is full; add workers (the checkout stays broken all the same)
when:
  error_cause: {source: nginx_error, cause: upstream_overloaded, window: 20s, at_least: 3}
steps:
  - scale_workers: {service: php-fpm, min_children: 2, max_children: 8, memory_reserve: 16MiB}
    verify: {probe: checkout, within: 3s, settle: 0s}
on_exhausted: {stop: false}
"""
_ALERT = """\
name: php-fpm-reset
description: PHP-FPM workers reset connections; reload, and tell a person when that fails
when:
  error_cause: {source: nginx_error, cause: upstream_reset, window: 20s, at_least: 3}
steps:
  - reload: php-fpm
    verify: {probe: checkout, within: 1s, settle: 0s}
on_exhausted: {notify: oncall, stop: true}
"""

REFUSED = f"connect() to unix:{SOCK} failed (111: Connection refused) while connecting to upstream"
OVERLOADED = (
    f"connect() to unix:{SOCK} failed (11: Resource temporarily unavailable) "
    "while connecting to upstream"
)
RESET = "recv() failed (104: Connection reset by peer) while reading response header from upstream"

# The site is up, but its checkout is broken for a reason no PHP-FPM change can fix.
_CHECKOUT = '<?php\nhttp_response_code(503);\necho "database unreachable\\n";\n'

# Runs inside the daemon's sandbox: /run is visible (read-only) there, /tmp is not.
_HELD_TEST = f"""\
#!/bin/sh
# tests/test_watchdog_slow.py: a config test that waits while the test holds it, then runs
# the real one ("$@"). It gives up waiting after a minute.
n=0
while [ -e {HOLD_TEST} ] && [ "$n" -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done
[ "$n" -gt 0 ] && echo "held by the test ($n x 50ms)"
exec "$@"
"""

# A webhook that notes what it receives and answers while the test does not hold it.
_WEBHOOK = """\
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOLD, RECEIVED, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])


def note(rec):
    with open(RECEIVED, "a") as f:
        f.write(json.dumps(rec) + "\\n")


class Hook(BaseHTTPRequestHandler):
    def do_GET(self):
        self.reply(b"ready\\n")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        note({"event": "received", "body": body})
        deadline = time.monotonic() + 60
        while os.path.exists(HOLD) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.reply(b"ok\\n")
        note({"event": "answered", "incident": body.get("incident")})

    def reply(self, data):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Hook).serve_forever()
"""

_HOOK_UNIT = f"""\
[Unit]
Description=tests/test_watchdog_slow.py: a webhook that answers when the test lets it

[Service]
ExecStart=/usr/bin/python3 {HOLDS}/webhook.py {HOLD_HOOK} {RECEIVED} {HOOK_PORT}
"""


class Hold:
    """A hold file: while it exists, the held config test or the webhook waits."""

    def __init__(self, host: BootedSystemd, path: str) -> None:
        self.host = host
        self.path = path

    def on(self) -> None:
        self.host.write(self.path, "held by tests/test_watchdog_slow.py\n")

    def off(self) -> None:
        with contextlib.suppress(OSError):  # the namespace may be gone at teardown
            (self.host.root / self.path[1:]).unlink(missing_ok=True)


@dataclass
class Holds:
    test: Hold
    hook: Hold


@pytest.fixture(scope="module")
def installed(systemd_host: BootedSystemd) -> Iterator[BootedSystemd]:
    """php8.2-fpm, nginx (default site with PHP) and the webhook started; the shipped unit
    installed with WatchdogSec=2s; the held config test in /etc/remediator."""
    host = systemd_host
    # A symlink to sites-available/default: remove the link, never write through it.
    (host.root / "etc/nginx/sites-enabled/default").unlink(missing_ok=True)
    host.write("/etc/nginx/sites-enabled/default", DEBIAN_PHP_SITE)
    host.write("/var/www/html/index.php", PHP_OK)
    host.write("/var/www/html/health.php", PHP_OK)
    host.write("/var/www/html/checkout.php", _CHECKOUT)
    host.write(HELD_TEST, _HELD_TEST).chmod(0o755)
    host.write(f"{HOLDS}/webhook.py", _WEBHOOK)
    host.install_unit(HOOK_UNIT, _HOOK_UNIT, reload=False)
    host.install_unit(UNIT, SHIPPED_UNIT.read_text(), reload=False)
    host.install_unit(f"{UNIT}.d/test.conf", dropin(WATCHDOG_S))
    try:
        host.systemctl("start", FPM, NGINX, HOOK_UNIT, check=True)
        wait_for(
            lambda: host.http_get(f"http://127.0.0.1:{HOOK_PORT}/")[0] == 200,
            10,
            "the webhook to listen",
        )
        yield host
    finally:
        host.systemctl("stop", UNIT, HOOK_UNIT, NGINX, FPM)
        host.systemctl("reset-failed")


@pytest.fixture
def holds(installed: BootedSystemd) -> Iterator[Holds]:
    """Both holds, released at the end (a failed test must not leave the daemon waiting)."""
    h = Holds(Hold(installed, HOLD_TEST), Hold(installed, HOLD_HOOK))
    h.test.off()
    h.hook.off()
    try:
        yield h
    finally:
        h.test.off()
        h.hook.off()


@dataclass
class Run:
    """The daemon of one test: its unit, its MainPID, and where the journal stood."""

    svc: Service
    pid: int
    cursor: str
    before: int  # action-log records before this test


def _start(host: BootedSystemd, playbook: str) -> Run:
    """remediator freshly started with only ``playbook``, fresh budgets, the pool as shipped."""
    host.systemctl("stop", UNIT, check=True)
    (host.root / GUARDS[1:]).unlink(missing_ok=True)
    shipped_pool = Path(POOL).read_text()  # the host's file: the overlay's lower layer
    if (host.root / POOL[1:]).read_text() != shipped_pool:
        host.write(POOL, shipped_pool)
    host.write(CONFIG, _CONFIG)
    pdir = host.root / PLAYBOOKS[1:]
    pdir.mkdir(parents=True, exist_ok=True)
    for old in pdir.iterdir():
        old.unlink()
    host.write(f"{PLAYBOOKS}/test.yaml", playbook)
    host.systemctl("reset-failed", UNIT)
    host.systemctl("start", FPM, NGINX, HOOK_UNIT, check=True)
    svc = Service(host)
    cursor = svc.cursor()
    host.systemctl("start", UNIT, check=True)
    pid = svc.wait_serving()
    return Run(svc, pid, cursor, len(svc.actions()))


def _nginx_errors(host: BootedSystemd, what: str, n: int = 5) -> None:
    """Append ``n`` error lines as nginx writes them (one write: one batch for the daemon)."""
    stamp = time.strftime("%Y/%m/%d %H:%M:%S")
    lines = "".join(
        f"{stamp} [error] 4242#4242: *{100 + i} {what}, client: 127.0.0.1, server: _, "
        f'request: "GET /index.php HTTP/1.1", upstream: "fastcgi://unix:{SOCK}:", '
        f'host: "127.0.0.1"\n'
        for i in range(n)
    )
    with (host.root / "var/log/nginx/error.log").open("a") as f:
        f.write(lines)


def _held_tests(host: BootedSystemd) -> list[psutil.Process]:
    """The held config tests running inside the namespace (waiting, or not yet exec'd)."""
    found = []
    for proc in psutil.Process(host.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.cmdline()[1:2] == [HELD_TEST]:
                found.append(proc)
    return found


def _webhook(host: BootedSystemd) -> list[dict[str, Any]]:
    path = host.root / RECEIVED[1:]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _hook_waiting(host: BootedSystemd) -> bool:
    """A notification arrived and is not answered yet."""
    events = [r["event"] for r in _webhook(host)]
    return events.count("received") > events.count("answered")


def _phase(svc: Service) -> str | None:
    inc = svc.status_json().get("incident")
    return inc["phase"] if inc else None


@dataclass
class Seen:
    """What the daemon published while the slow thing was held."""

    writes: list[dict[str, Any]]  # distinct status.json bodies, all in the held phase
    lines_before: int  # nginx_access lines counted when the hold was seen
    status_out: str  # `remediator status`, run while held


def _wait_alive(run: Run, cond: Callable[[], bool], timeout: float, what: str) -> None:
    """:func:`_wait`, failing at once, with systemd's words, when the daemon was killed."""

    def check() -> bool:
        if cond():
            return True
        props = run.svc.host.show(UNIT, "MainPID", "NRestarts")
        if props != {"MainPID": str(run.pid), "NRestarts": "0"}:
            journal = run.svc.journal_text(run.cursor, until="Watchdog timeout")
            raise AssertionError(
                f"the daemon (pid {run.pid}) was killed waiting for {what}: {props}\n"
                + journal[-3000:]
            )
        return False

    wait_for(check, timeout, what)


def _hold_through(run: Run, hold: Hold, phase: str, held: Callable[[], bool]) -> Seen:
    """Once the daemon is in ``phase`` and the slow thing is ``held``: keep it held until
    status.json has been rewritten at least 3 times in that phase over more than twice
    WatchdogSec and has counted the site's new access-log lines; run ``remediator status``;
    check it is still held (all of that happened during it), then let go."""
    svc, host = run.svc, run.svc.host
    _wait_alive(
        run, lambda: _phase(svc) == phase and held(), 30, f"the daemon {phase}, held by the test"
    )
    first = svc.status_json()
    held_at = time.monotonic()
    lines_before = int(first["sources"]["nginx_access"]["lines"])
    writes = {first["updated"]: first}
    for _ in range(3):  # users keep using the site; nginx logs each request
        assert host.http_get(SITE) == (200, "ok\n")

    def enough() -> bool:
        s = svc.status_json()
        if (s.get("incident") or {}).get("phase") == phase:
            writes.setdefault(s["updated"], s)
        newest = writes[max(writes)]
        return (
            len(writes) >= 3
            and time.monotonic() - held_at > 2 * WATCHDOG_S
            and int(newest["sources"]["nginx_access"]["lines"]) >= lines_before + 3
        )

    _wait_alive(run, enough, 30, f"status.json rewritten during {phase}")
    rc, out, err = svc.cli("status")
    assert rc == 0, err
    still_held = held()
    hold.off()
    assert still_held, f"the slow part of {phase} ended before the test let go"
    return Seen([writes[k] for k in sorted(writes)], lines_before, out)


def _closed(run: Run) -> list[dict[str, Any]]:
    """This test's incident's records, once it is closed."""

    def done() -> bool:
        return any(r["event"] == "incident_closed" for r in run.svc.actions()[run.before :])

    wait_for(done, 30, "the incident to close")
    recs = run.svc.actions()[run.before :]
    assert len({r.get("incident") for r in recs}) == 1, recs
    return recs


def _assert_kept_turning(run: Run, seen: Seen, phase: str) -> None:
    assert len(seen.writes) >= 3
    assert all(w["pid"] == run.pid and w["incident"]["phase"] == phase for w in seen.writes)
    ages = [w["incident"]["age_s"] for w in seen.writes]
    assert ages == sorted(ages) and len(set(ages)) == len(ages)
    assert int(seen.writes[-1]["sources"]["nginx_access"]["lines"]) >= seen.lines_before + 3
    assert seen.status_out.startswith(f"remediator running, pid {run.pid};")
    assert f" {phase} for " in seen.status_out


def _assert_never_killed(run: Run, until: str = "incident_closed") -> None:
    journal = run.svc.journal_text(run.cursor, until=until)
    assert until in journal  # the daemon's own journal lines are there...
    assert "Watchdog timeout" not in journal  # ...and systemd never lost patience
    assert "SIGABRT" not in journal
    assert run.svc.host.show(UNIT, "MainPID", "NRestarts", "ActiveState", "SubState") == {
        "MainPID": str(run.pid),
        "NRestarts": "0",
        "ActiveState": "active",
        "SubState": "running",
    }


def _held_ms(steps: list[dict[str, Any]]) -> float:
    """How long the held config test ran, from an action's recorded steps."""
    (step,) = [s for s in steps if s.get("argv", [None])[0] == HELD_TEST and "held" in s["output"]]
    assert step["rc"] == 0
    return float(step["ms"])


# --- the cases --------------------------------------------------------------------------------


def test_the_loop_waits_at_most_half_of_watchdog_usec_meant_for_this_process() -> None:
    me = str(os.getpid())
    assert watchdog_every({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": me}) == 1.0
    assert watchdog_every({"WATCHDOG_USEC": "30000000"}) == 15.0  # no PID: ours
    assert watchdog_every({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None  # a parent's
    assert watchdog_every({}) is None
    assert watchdog_every({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_every({"WATCHDOG_USEC": "0"}) is None


@pytest.mark.systemd
def test_an_idle_daemon_pings_a_watchdog_shorter_than_its_status_interval(
    installed: BootedSystemd,
) -> None:
    """Nothing happens (no lines, probes every 5 s, status looked at every 2 s), and
    WatchdogSec=1s: the loop still turns, and pings, at least every half of it."""
    installed.install_unit(f"{UNIT}.d/test.conf", dropin(1))
    try:
        run = _start(installed, _RELOAD)
        assert installed.show(UNIT, "WatchdogUSec") == {"WatchdogUSec": "1s"}
        idle_from = time.monotonic()
        _wait_alive(
            run,
            lambda: time.monotonic() - idle_from > 3 * status.EVERY,
            30,
            "three of the daemon's status intervals, idle",
        )
        assert run.svc.actions()[run.before :] == []
        _assert_never_killed(run, until="daemon_ready")
    finally:
        installed.install_unit(f"{UNIT}.d/test.conf", dropin(WATCHDOG_S))


@pytest.mark.systemd
def test_a_config_test_longer_than_the_watchdog_runs_off_the_loop(
    installed: BootedSystemd, holds: Holds
) -> None:
    run = _start(installed, _RELOAD)
    holds.test.on()
    _nginx_errors(installed, REFUSED)
    seen = _hold_through(run, holds.test, "acting", lambda: bool(_held_tests(installed)))

    recs = _closed(run)
    assert [r["event"] for r in recs] == [
        "incident_opened",
        "action_intent",
        "action_result",
        "verify_passed",
        "incident_closed",
    ]
    opened, _, result, _, closed = recs
    assert opened["playbook"] == "php-fpm-refused"
    assert any(REFUSED in line for line in opened["evidence"]["lines"]["nginx_error"])
    assert (result["action"], result["outcome"]) == ("reload", "ok"), result["reason"]
    held = _held_ms(result["details"]["steps"])
    print(f"\nheld config test: {held:.0f} ms; status.json written {len(seen.writes)}x meanwhile")
    assert held > WATCHDOG_S * 1000  # the premise: it outlasted WatchdogSec
    assert ["systemctl", "reload", FPM] in [s.get("argv") for s in result["details"]["steps"]]
    assert closed["outcome"] == "resolved"
    _assert_kept_turning(run, seen, "acting")
    _assert_never_killed(run)


@pytest.mark.systemd
def test_a_rollback_longer_than_the_watchdog_runs_off_the_loop(
    installed: BootedSystemd, holds: Holds
) -> None:
    run = _start(installed, _SCALE)
    pool = installed.root / POOL[1:]
    original = pool.read_text()
    assert "\npm.max_children = 5\n" in original
    _nginx_errors(installed, OVERLOADED)

    def scaled() -> bool:
        return any(r["event"] == "action_result" for r in run.svc.actions()[run.before :])

    wait_for(scaled, 20, "the scale_workers result")
    holds.test.on()  # the edit's own config test and reload ran: hold the rollback's
    result = next(r for r in run.svc.actions()[run.before :] if r["event"] == "action_result")
    assert (result["action"], result["outcome"]) == ("scale_workers", "ok"), result["reason"]
    assert result["reason"].startswith("pm.max_children 5 -> 8")
    seen = _hold_through(run, holds.test, "rolling_back", lambda: bool(_held_tests(installed)))

    recs = _closed(run)
    assert [r["event"] for r in recs] == [
        "incident_opened",
        "action_intent",
        "action_result",
        "verify_failed",
        "rollback_intent",
        "rollback_result",
        "incident_closed",
    ]
    failed, undone, closed = recs[3], recs[5], recs[6]
    assert "probe checkout" in failed["reason"]
    assert undone["outcome"] == "ok", undone["reason"]
    assert undone["reason"] == f"restored {POOL} and reloaded"
    test = undone["details"]["config_test"]
    assert test["outcome"] == "ok"
    held = _held_ms(test["steps"])
    print(f"\nheld rollback config test: {held:.0f} ms; status.json {len(seen.writes)}x meanwhile")
    assert held > WATCHDOG_S * 1000
    assert undone["details"]["reload"]["outcome"] == "ok"
    assert pool.read_text() == original
    assert closed["outcome"] == "exhausted"
    _assert_kept_turning(run, seen, "rolling_back")
    _assert_never_killed(run)


@pytest.mark.systemd
def test_a_webhook_slower_than_the_watchdog_is_notified_off_the_loop(
    installed: BootedSystemd, holds: Holds
) -> None:
    run = _start(installed, _ALERT)
    received_before = len(_webhook(installed))
    holds.hook.on()
    _nginx_errors(installed, RESET)
    seen = _hold_through(run, holds.hook, "notifying", lambda: _hook_waiting(installed))

    recs = _closed(run)
    assert [r["event"] for r in recs] == [
        "incident_opened",
        "action_intent",
        "action_result",
        "verify_failed",
        "notify",
        "breaker_opened",
        "incident_closed",
    ]
    notified, closed = recs[4], recs[6]
    assert (notified["target"], notified["outcome"]) == ("oncall", "ok"), notified["reason"]
    assert notified["reason"] == "steps exhausted: sent (HTTP 200)"
    took = float(notified["details"]["duration_ms"])
    print(f"\nheld webhook: {took:.0f} ms; status.json written {len(seen.writes)}x meanwhile")
    assert took > WATCHDOG_S * 1000
    (got,) = [r for r in _webhook(installed)[received_before:] if r["event"] == "received"]
    assert got["body"]["incident"] == closed["incident"]
    assert got["body"]["playbook"] == "php-fpm-reset"
    assert closed["outcome"] == "exhausted"
    _assert_kept_turning(run, seen, "notifying")
    _assert_never_killed(run)
