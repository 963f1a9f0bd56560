"""``remediator classify``, in-process: each line's cause, time and rule; the summary; stdin;
escaping of what a line holds; untimed lines counted."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from remediator.cli import main

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "tests" / "samples" / "error"
REFUSED = b"connect() failed (111: Connection refused) while connecting to upstream"
NX = b"2026/11/24 09:26:23 [error] 7#7: *1 "
FP = b"[24-Nov-2026 09:27:00] WARNING: [pool www] child 5 exited on signal 11 (SIGSEGV)"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    p = tmp_path / "error.log"
    p.write_bytes(NX + REFUSED + b"\n" + b"hello, no time and no cause\n" + FP + b"\n")
    return p


def test_text_shows_each_lines_time_cause_and_rule(log: Path) -> None:
    rc, out, err = run("classify", "--tz", "UTC", str(log))
    assert (rc, err) == (0, "")
    rows = out.splitlines()
    assert rows[0].split()[:4] == [
        "1", "2026-11-24T09:26:23Z", "upstream_refused", "nginx-error/upstream_syscall"
    ]  # fmt: skip
    assert rows[1].split()[:4] == ["2", "2026-11-24T09:26:23Z~", "-", "-"]
    assert rows[2].split()[:4] == ["3", "2026-11-24T09:27:00Z", "worker_crashed",
                                   "php-fpm/child_signal"]  # fmt: skip
    assert rows[-1] == ("3 lines, 2 classified (upstream_refused: 1, worker_crashed: 1), 1 untimed")


def test_json_is_one_object_per_line_then_a_summary(log: Path) -> None:
    rc, out, _ = run("classify", "--json", "--tz", "UTC", str(log))
    assert rc == 0
    recs = [json.loads(x) for x in out.splitlines()]
    assert recs[0] == {"line": 1, "cause": "upstream_refused", "time": "2026-11-24T09:26:23Z",
                       "rule": "nginx-error/upstream_syscall", "untimed": False}  # fmt: skip
    assert recs[1] == {"line": 2, "cause": None, "time": "2026-11-24T09:26:23Z", "rule": None,
                       "untimed": True}  # fmt: skip
    assert recs[-1] == {"summary": True, "lines": 3, "classified": 2, "untimed": 1,
                        "causes": {"upstream_refused": 1, "worker_crashed": 1}}  # fmt: skip


def test_a_format_reads_every_line_as_that_server(log: Path) -> None:
    rc, out, _ = run("classify", "--json", "--format", "nginx-error", str(log))
    assert rc == 0
    summary = json.loads(out.splitlines()[-1])
    assert summary["causes"] == {"upstream_refused": 1}
    assert summary["untimed"] == 2  # FPM's time is not nginx's


def test_stdin_is_read_for_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(REFUSED + b"\n")))
    rc, out, _ = run("classify", "--json", "-")
    assert rc == 0
    recs = [json.loads(x) for x in out.splitlines()]
    assert recs[0]["cause"] == "upstream_refused"
    assert recs[0]["time"] is None  # no time known yet: none, and counted
    assert recs[-1]["untimed"] == 1


def test_control_characters_in_a_line_are_escaped_in_text(tmp_path: Path) -> None:
    p = tmp_path / "evil.log"
    p.write_bytes(NX + REFUSED + b', request: "GET /\x1b[2J\x1b]0;owned\x07 HTTP/1.1"\r\n')
    rc, out, _ = run("classify", str(p))
    assert rc == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J\\x1b]0;owned\\x07" in out


def test_json_escapes_them_too(tmp_path: Path) -> None:
    p = tmp_path / "evil.log"
    p.write_bytes(b"\x1b[2J" + REFUSED + b"\n")
    rc, out, _ = run("classify", "--json", str(p))
    assert rc == 0
    assert "\x1b" not in out


def test_gzip_and_several_files_name_the_file(tmp_path: Path, log: Path) -> None:
    gz = tmp_path / "error.log.1.gz"
    gz.write_bytes(gzip.compress(NX + REFUSED + b"\n"))
    rc, out, _ = run("classify", "--json", str(log), str(gz))
    assert rc == 0
    recs = [json.loads(x) for x in out.splitlines()]
    assert recs[3] == {"line": 1, "cause": "upstream_refused", "time": recs[0]["time"],
                       "rule": "nginx-error/upstream_syscall", "untimed": False,
                       "file": str(gz)}  # fmt: skip
    assert recs[-1]["lines"] == 4


def test_the_corpus_classifies_through_the_command() -> None:
    rc, out, _ = run("classify", "--json", "--format", "apache-error",
                     str(SAMPLES / "apache-error.corpus-22.log"))  # fmt: skip
    assert rc == 0
    want = [json.loads(x)["cause"] for x in
            (SAMPLES / "apache-error.corpus-22.expect").read_text().splitlines()]  # fmt: skip
    got = [json.loads(x)["cause"] for x in out.splitlines()[:-1]]
    assert got == want


def test_a_configured_source_gives_its_format(tmp_path: Path, log: Path) -> None:
    dest = tmp_path / "etc"
    shutil.copytree(REPO / "config", dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    rc, out, _ = run("-c", str(dest / "remediator.yaml"), "classify", "--json",
                     "--source", "fpm_journal", str(log))  # fmt: skip
    assert rc == 0
    assert json.loads(out.splitlines()[-1])["causes"] == {"worker_crashed": 1}
    rc, _, err = run("-c", str(dest / "remediator.yaml"), "classify", "--source", "site", str(log))
    assert rc == 2
    assert "no error_log or journal source 'site'" in err


def test_an_unknown_format_or_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    rc, _, err = run("classify", "--format", "iis", str(tmp_path / "x"))
    assert rc == 2
    assert "unknown format 'iis'" in err
    rc, _, err = run("classify", str(tmp_path / "nope.log"))
    assert rc == 2
    assert "nope.log: No such file or directory" in err
    assert "Traceback" not in err


def test_a_device_is_refused_not_read_forever() -> None:
    rc, out, err = run("classify", "/dev/zero")
    assert rc == 2
    assert err == "/dev/zero: not a regular file\n"
    assert out == ""
