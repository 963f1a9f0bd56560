"""Incident pages written by the running daemon as incidents close (remediator/pages.py), and
named by every notification: the page the on-call opens is there by the time they read.

A real daemon process, a real webhook receiver on loopback; the incidents are operator
triggers of a notify-only playbook, so no server is needed.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

from remediator.cli import main
from remediator.pages import prune
from tests.e2e import DaemonProcess, config, eventually
from tests.webhook import receiving

NEVER = {"status_rate": {"source": "access", "status": 418, "at_least": 5}}


def _cfg(tmp_path: Path, hook: str, **options: Any) -> dict[str, Any]:
    access = tmp_path / "access.log"
    access.touch()
    return config(
        tmp_path,
        sources={"access": {"type": "access_log", "path": str(access)}},
        services={},
        notifiers={"hook": {"url": hook}},
        playbooks=[
            {
                "name": "tell",
                "when": NEVER,
                "steps": [{"notify": {"notifier": "hook", "message": "look"}}],
                "limits": {"cooldown": "0s", "backoff": False},
            }
        ],
        **options,
    )


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _trigger(daemon: DaemonProcess, n: int) -> str:
    out, err = io.StringIO(), io.StringIO()
    main(["-c", str(daemon.config_path), "trigger", "tell", "--reason", f"drill {n}"], out, err)
    closed = daemon.wait_record("incident_closed", 15, count=n)
    return str(closed[-1]["incident"])


def test_each_closed_incident_is_written_as_a_page_the_notification_named(tmp_path: Path) -> None:
    with receiving() as hook, DaemonProcess(tmp_path, _cfg(tmp_path, hook.url())) as daemon:
        incident = _trigger(daemon, 1)
        page = tmp_path / "state" / "reports" / f"{incident}.html"
        eventually(page.exists, 30, "the incident's page")
        (_, _, body), *_ = hook.received
        assert body["incident"] == incident
        assert body["report"] == str(page)  # named before it was written, where it now is
        text = page.read_text()
        assert text.startswith("<!DOCTYPE html>") or text.lower().startswith("<!doctype html>")
        assert incident in text and "tell" in text
        assert stat.S_IMODE(page.stat().st_mode) == 0o640
        eventually(
            lambda: any(e.get("event") == "report_written" for e in daemon.log_events()),
            10,
            "the daemon's report_written event",
        )


def test_pages_beyond_keep_are_removed_oldest_first(tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    with (
        receiving() as hook,
        DaemonProcess(
            tmp_path, _cfg(tmp_path, hook.url(), reports={"dir": str(pages), "keep": 2})
        ) as daemon,
    ):
        ids = []
        for n in (1, 2, 3):
            ids.append(_trigger(daemon, n))
            eventually((pages / f"{ids[-1]}.html").exists, 30, f"page {n}")
        eventually(lambda: len(_names(pages)) == 2, 10, "the oldest page removed")
        assert _names(pages) == sorted(f"{i}.html" for i in ids[1:])


def test_no_page_and_no_path_when_reports_are_off(tmp_path: Path) -> None:
    cfg = _cfg
    with receiving() as hook:
        options = {"reports": {"write": False}}
        with DaemonProcess(tmp_path, cfg(tmp_path, hook.url(), **options)) as daemon:
            _trigger(daemon, 1)
            eventually(lambda: bool(hook.received), 10, "the notification")
            (_, _, body), *_ = hook.received
            assert "report" not in body
        assert not (tmp_path / "state" / "reports").exists()


def test_prune_keeps_the_newest_written_and_leaves_other_files(tmp_path: Path) -> None:
    names = ("20261205T100000Z-b.html", "20261205T100000Z-a.html", "20261204T235959Z-c.html")
    for n, name in enumerate(names):  # written in this order
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, ns=(n * 10**9, n * 10**9))
    (tmp_path / "notes.txt").write_text("mine")
    prune(tmp_path, 2)
    assert _names(tmp_path) == [*sorted(names[1:]), "notes.txt"]
