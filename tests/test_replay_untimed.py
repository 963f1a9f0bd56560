"""Error-log lines without a time of their own are replayed at the last known time, counted
``untimed`` in the summary (JSON and text), and never dropped, even before the first time."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest

from remediator import feed, replay

T = "2026/11/24 09:26:23"
REFUSED = "connect() failed (111: Connection refused) while connecting to upstream"


def _replay(tmp_path: Path, text: str) -> dict[str, object]:
    log = tmp_path / "error.log"
    log.write_text(text)
    _, summary = replay.replay([log], None, [], fmt="nginx-error", tz=dt.UTC)
    return summary


def test_lines_before_the_first_time_wait_for_it_and_are_counted(tmp_path: Path) -> None:
    summary = _replay(
        tmp_path,
        f'nginx: [emerg] unknown directive "x" in /e/n.conf:1\n{REFUSED}\n'
        f"{T} [error] 7#7: *1 {REFUSED}\n",
    )
    assert summary["lines"] == 3
    assert summary["untimed"] == 2
    assert summary["causes"] == {"config_error": 1, "upstream_refused": 2}
    assert summary["from"] == "2026-11-24T09:26:23Z"


def test_an_untimed_line_takes_the_last_known_time(tmp_path: Path) -> None:
    summary = _replay(
        tmp_path, f"{T} [error] 7#7: *1 {REFUSED}\n{REFUSED}\n2026/11/24 09:26:30 [info] x\n"
    )
    assert (summary["lines"], summary["untimed"]) == (3, 1)
    assert summary["causes"] == {"upstream_refused": 2}


def test_a_file_with_no_time_at_all_is_counted_not_lost(tmp_path: Path) -> None:
    summary = _replay(tmp_path, f"{REFUSED}\n{REFUSED}\n")
    assert (summary["lines"], summary["untimed"]) == (2, 2)


def test_the_text_summary_says_how_many_were_untimed(tmp_path: Path) -> None:
    summary = _replay(tmp_path, f"{REFUSED}\n{T} [error] 7#7: *1 {REFUSED}\n")
    out = io.StringIO()
    replay.print_timeline([], summary, out, tz=dt.UTC)
    assert "2 lines (0 malformed, 1 untimed)" in out.getvalue()


def test_lines_waiting_for_a_first_time_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "UNTIMED_WAITING", 2)
    summary = _replay(tmp_path, f"{REFUSED}\n" * 5 + f"{T} [error] 7#7: *1 {REFUSED}\n")
    assert (summary["lines"], summary["untimed"]) == (6, 5)
    assert summary["causes"] == {"upstream_refused": 3}  # two waited, the others were counted
