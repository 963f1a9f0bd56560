"""``make demo`` end to end: a real nginx + PHP-FPM, PHP-FPM killed, the daemon brings it back;
the configuration it shows and checks is the one the daemon runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sysd import REPO

pytestmark = [pytest.mark.servers, pytest.mark.slow]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_demo_runs_the_configuration_it_shows_and_recovers() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "remediator.demo"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        check=False,
    )
    out = _ANSI.sub("", proc.stdout)
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    shown = re.search(r"== the configuration this demo runs: (\S+)", out)
    checked = re.search(r"^ok: .*; (\S+)\)$", out, re.MULTILINE)
    ran = re.search(r"== starting the daemon:  remediator -c (\S+) run", out)
    assert shown and checked and ran, out[-3000:]
    assert shown[1] == checked[1] == ran[1]
    assert "2 playbooks" in out  # the shipped PHP-FPM playbooks, verbatim
    assert re.search(r"incident_opened .* playbook=php-fpm(-down|-master-gone)", out)
    assert re.search(r"incident_closed .* outcome=resolved", out)
    assert "== recovered: 200s again" in out
    # the action log, as `remediator log` tells it
    assert re.search(r"step 1 restart php-fpm: ok .*restarted php-fpm", out)
    assert "closed: resolved" in out
    # the incident's page and its screenshot, left for a person to open
    page = re.search(r"^  open the page: +(\S+)$", out, re.MULTILINE)
    shot = re.search(r"^  or its screenshot: (\S+)$", out, re.MULTILINE)
    assert page and shot, out[-3000:]
    html = Path(page[1]).read_text()
    assert '<svg class="chart"' in html and html.count('<g class="step-marker ') == 1
    png = Path(shot[1]).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 50_000  # not a blank page
