"""The action log on a real file system: records, rotation, and failing closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remediator.actionlog import FIELDS, ActionLog, ActionLogError, read


def test_records_carry_every_standard_field_and_a_utc_timestamp(tmp_path: Path) -> None:
    alog = ActionLog(tmp_path / "log" / "actions.jsonl", journal=False)
    assert alog.check() is None
    alog.write({"event": "action_intent", "playbook": "pb", "action": "restart", "dry_run": False})
    (rec,) = list(read(alog.path))
    assert set(FIELDS) <= rec.keys()
    assert rec["ts"].endswith("Z") and "T" in rec["ts"]
    assert rec["action"] == "restart"
    assert oct(alog.path.stat().st_mode & 0o777) == "0o640"


def test_writing_after_logrotate_renamed_the_file_goes_to_the_new_file(tmp_path: Path) -> None:
    alog = ActionLog(tmp_path / "actions.jsonl", journal=False)
    alog.write({"event": "one"})
    alog.path.rename(tmp_path / "actions.jsonl.1")
    alog.write({"event": "two"})
    assert [r["event"] for r in read(alog.path)] == ["two"]
    assert [r["event"] for r in read(tmp_path / "actions.jsonl.1")] == ["one"]


def test_unwritable_log_raises_so_the_caller_does_not_act(tmp_path: Path) -> None:
    target = tmp_path / "actions.jsonl"
    target.mkdir()  # a directory where the file should be: EISDIR even for root
    alog = ActionLog(target, journal=False)
    assert alog.check() is not None
    with pytest.raises(ActionLogError, match="cannot write the action log"):
        alog.write({"event": "action_intent"})


def test_full_disk_fails_closed(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.fail("/dev/full is missing on this Linux host")
    link = tmp_path / "actions.jsonl"
    link.symlink_to("/dev/full")
    with pytest.raises(ActionLogError):
        ActionLog(link, journal=False).write({"event": "action_intent"})


def test_reader_skips_lines_that_are_not_records(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"event": "a"}\nnot json\n[1]\n\xff\xfe\n{"event": "b"}\n')
    assert [r["event"] for r in read(path)] == ["a", "b"]


def test_each_record_is_one_line_even_with_newlines_in_values(tmp_path: Path) -> None:
    alog = ActionLog(tmp_path / "a.jsonl", journal=False)
    alog.write({"event": "x", "reason": "line one\nline two", "evidence": {"lines": ["a\nb"]}})
    raw = alog.path.read_bytes()
    assert raw.count(b"\n") == 1
    assert json.loads(raw)["reason"] == "line one\nline two"
    assert alog.path.stat().st_size == len(raw)
