"""``remediator report`` of a real incident, as a real browser renders it.

Once for the module: a real nginx + PHP-FPM under load, the daemon on them, PHP-FPM killed; the
daemon restarts it and closes the incident; ``remediator report --last`` writes its page while
the logs are still there; Debian's chromium, headless and with no network, renders the page
once, giving its DOM and a PNG. The load's User-Agent is hostile HTML, so nginx itself writes
it into every access-log line the incident keeps as evidence, and a forged error line (what
www-data can append to nginx's log) carries terminal escape sequences: both must render as
text.
"""

from __future__ import annotations

import html
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from remediator import escape
from remediator.cli import main
from tests import browser
from tests.e2e import (
    DaemonProcess,
    config,
    fpm_down_when,
    fpm_service,
    nginx_sources,
    probe,
    recovered_after,
)
from tests.stack import LoadGenerator, Stack

pytestmark = pytest.mark.servers

HOSTILE_UA = "</script><img src=x onerror=alert(1)>"
ESCAPES = "\x1b[2J\x1b]0;owned\x07"
FORGED = (
    "2026/11/24 10:26:03 [error] 7#7: *1 connect() to unix:/run/php/fpm.sock failed "
    f"(111: Connection refused) while connecting to upstream, client: {ESCAPES}<b>bold</b>\n"
)
PLAYBOOK = {
    "name": "fpm-down",
    "when": fpm_down_when(),
    "steps": [{"restart": "fpm", "verify": {"probe": "site", "within": "5s", "settle": "500ms"}}],
    "limits": {"cooldown": "30s", "max_runs": 3, "per": "1h"},
}  # fmt: skip
WIDTH, HEIGHT = 1280, 1200  # the screenshot: the header and the chart
LIGHT = {"5xx": (0xD6, 0x28, 0x28), "requests": (0x25, 0x63, 0xEB), "ok": (0x1F, 0x7A, 0x3A)}


@dataclass(frozen=True)
class Made:
    records: list[dict[str, Any]]
    command: str  # the exact start command of PHP-FPM
    rc: int
    out: str
    page: Path
    html: str
    shown: browser.Rendered

    @property
    def evidence(self) -> dict[str, list[str]]:
        opened = next(r for r in self.records if r["event"] == "incident_opened")
        lines: dict[str, list[str]] = opened["evidence"]["lines"]
        return lines


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    why = browser.unavailable()
    if why is not None:
        pytest.fail(why, pytrace=False)
    work = tmp_path_factory.mktemp("report")
    with Stack() as stack:
        fpm = stack.fpm()
        nginx = stack.nginx(fpm)
        cfg = config(
            work,
            sources={
                **nginx_sources(nginx),
                "site": probe(nginx.url()),
            },
            services={"fpm": fpm_service(fpm, startup_grace="1s")},
            playbooks=[PLAYBOOK],
        )
        headers = {"User-Agent": HOSTILE_UA}
        with (
            DaemonProcess(work, cfg) as daemon,
            LoadGenerator(nginx.url(), rate=100, headers=headers) as load,
        ):
            load.wait_ok(count=50)  # traffic on the chart before the fault
            with nginx.error_log.open("a") as log:  # read before the 502s that follow
                log.write(FORGED)
            killed = time.monotonic()
            fpm.kill_all()
            recovered_after(load, killed, settle=0.5, timeout=15)
            daemon.wait_record("incident_closed", 15)
        page = work / "report.html"
        out, err = io.StringIO(), io.StringIO()
        rc = main(["-c", str(daemon.config_path), "report", "--last", "-o", str(page)], out, err)
        assert rc == 0, err.getvalue()
        shown = browser.render(
            page, work / "report.png", work, width=WIDTH, height=HEIGHT, pdf=work / "report.pdf"
        )
        command = f"$ /usr/sbin/php-fpm8.2 -y {fpm.conf}"  # the program as check resolved it
        yield Made(daemon.records(), command, rc, out.getvalue(), page, page.read_text(), shown)


def _as_text(line: str) -> str:
    """How a line from a record shows in the browser's serialised DOM."""
    return html.escape(escape.text(line), quote=False)


def test_report_writes_the_page_where_asked_and_prints_its_path(made: Made) -> None:
    assert made.rc == 0
    assert made.out.strip() == str(made.page)
    assert made.page.stat().st_mode & 0o777 == 0o640


def test_the_page_can_load_nothing(made: Made) -> None:
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', made.html)
    assert csp is not None
    assert "default-src 'none'" in csp[1] and "script-src 'none'" in csp[1]
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b", made.html)
    assert not re.search(r"<[^<>]*\s(src|href)\s*=|url\(|@import", made.html)
    urls = set(re.findall(r"https?://[^\s\"'<>]+", made.html))
    assert urls <= {"http://www.w3.org/2000/svg"}  # the SVG namespace: a name, never fetched


def test_the_browser_draws_the_chart_with_a_marker_per_step(made: Made) -> None:
    dom = made.shown.dom
    assert '<svg class="chart" id="traffic-chart"' in dom
    steps = {r["step"]: r for r in made.records if r["event"] == "action_result"}
    markers = re.findall(
        r'<g class="step-marker [^"]*" data-step="(\d+)" data-outcome="(\w+)"', dom
    )
    assert [(int(n), o) for n, o in markers] == [(n, r["outcome"]) for n, r in steps.items()]
    assert markers == [("1", "ok")]
    assert re.search(r'<path class="req-line" d="M', dom)  # requests, from the access log
    assert '<rect class="err-bar"' in dom  # and the 5xx of the fault
    assert 'data-cause="upstream_refused"' in dom  # its cause, from the error log
    assert "no longer cover" not in dom  # charted from the logs themselves


def test_every_evidence_line_is_on_the_page(made: Made) -> None:
    dom = made.shown.dom
    lines = [line for got in made.evidence.values() for line in got]
    assert len(lines) >= 4
    for line in lines:
        assert f'<li class="evidence-line">{_as_text(line)}</li>' in dom


def test_hostile_log_lines_render_as_text(made: Made) -> None:
    dom = made.shown.dom
    access = made.evidence["access"]
    assert any(HOSTILE_UA in line for line in access)  # nginx wrote it as the load sent it
    assert any(ESCAPES in line for line in made.evidence["errors"])  # the forgery was evidence
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in dom
    assert "\\x1b[2J\\x1b]0;owned\\x07&lt;b&gt;bold&lt;/b&gt;" in dom
    assert "\x1b" not in dom and "\x07" not in dom
    assert not re.search(r"<(img|script|b)\b", dom)
    assert "<title>fpm-down resolved: incident " in dom  # nothing ran to change it


def test_the_step_shows_its_exact_command_and_verification(made: Made) -> None:
    dom = made.shown.dom
    assert html.escape(made.command, quote=False) in dom
    assert '<li class="step good" id="step-1" data-step="1">' in dom
    assert re.search(r"<strong>Verified</strong> at ", dom)
    opened = next(r for r in made.records if r["event"] == "incident_opened")
    by = opened["corroboration"]["by"]  # the probe failing, or the master gone: what came first
    assert f"corroborated by <strong>{html.escape(by, quote=False)}</strong>" in dom


def test_the_screenshot_shows_the_chart(made: Made) -> None:
    png = browser.png_pixels(made.shown.png)
    assert (png.width, png.height) == (WIDTH, HEIGHT)
    assert len(set(png.rows)) > 200  # text, lines, fills: not a blank page
    for what, rgb in LIGHT.items():
        assert png.count(rgb) >= 20, f"hardly a pixel of the {what} colour {rgb}"


def test_the_page_prints(made: Made) -> None:
    assert made.shown.pdf is not None
    pdf = made.shown.pdf.read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 1
    assert "@media print" in made.html
