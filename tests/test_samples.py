"""Every captured sample line parses to what its ``.expect`` line says (tests/samples/README.md).

Each ``NAME.log`` has a ``NAME.expect`` beside it, one JSON value per line. Access logs are also
scanned whole (and through ``scan_file`` in small blocks), which must agree line for line.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from remediator.sources.accesslog import (
    ACCESS_FORMATS,
    AccessFormat,
    compile_apache_format,
    compile_nginx_format,
)
from remediator.sources.errorlog import ERROR_FORMATS

SAMPLES = Path(__file__).parent / "samples"
ACCESS = sorted((SAMPLES / "access").glob("*.log"))
ERRORS = sorted((SAMPLES / "error").glob("*.log"))


def _lines(log: Path) -> list[bytes]:
    data = log.read_bytes()
    assert data.endswith(b"\n"), f"{log.name}: the last line must end with a newline"
    return data[:-1].split(b"\n")


def _expectations(log: Path) -> list[dict[str, Any]]:
    path = log.with_suffix(".expect")
    rows = [json.loads(row) for row in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(_lines(log)), f"{path.name}: one expectation per log line"
    return [r if r is not None else {"status": None, "cause": None} for r in rows]


def _epoch(iso: str | None) -> float | None:
    return None if iso is None else dt.datetime.fromisoformat(iso).timestamp()


def _access_format(log: Path) -> AccessFormat:
    spec = log.with_suffix(".format")
    if spec.exists():
        s = json.loads(spec.read_text(encoding="utf-8"))
        compile_ = compile_nginx_format if s["flavour"] == "nginx" else compile_apache_format
        return compile_(s["format"])
    return ACCESS_FORMATS[log.name.split(".")[0]]


def test_the_sample_folder_is_not_empty() -> None:
    assert ACCESS
    assert ERRORS


@pytest.mark.parametrize("log", ACCESS, ids=lambda p: p.name)
def test_access_sample_lines_read_as_annotated(log: Path) -> None:
    fmt = _access_format(log)
    for n, (line, want) in enumerate(zip(_lines(log), _expectations(log), strict=True), 1):
        where = f"{log.name}:{n}: {want.get('note', '')}"
        assert fmt.status(line) == want["status"], where
        if want["status"] is None:
            continue
        assert fmt.time(line) == _epoch(want["time"]), where
        if "upstream_status" in want:
            assert fmt.upstream_status(line) == want["upstream_status"], where
        fields = fmt.fields(line)
        if "fields" in want and want["fields"] is None:
            assert fields is None, where
            continue
        assert fields is not None, where
        assert fields["status"] == str(want["status"]), where
        for key, value in (want.get("fields") or {}).items():
            assert fields[key] == value, where


@pytest.mark.parametrize("log", ACCESS, ids=lambda p: p.name)
def test_access_sample_scans_agree_with_the_annotations(log: Path) -> None:
    fmt = _access_format(log)
    want = _expectations(log)
    good = [w for w in want if w["status"] is not None]
    data = log.read_bytes()
    for batches in ([fmt.scan(data)], list(fmt.scan_file(io.BytesIO(data), block_size=512))):
        assert [s for b in batches for s in b.statuses] == [w["status"] for w in good]
        assert [t for b in batches for t in b.times or []] == [_epoch(w["time"]) for w in good]
        assert sum(b.malformed for b in batches) == len(want) - len(good)


# syslog dates have no year: the corpus is read as if on this day (its lines are all older)
READ_ON = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()


def _verdicts(log: Path) -> list[tuple[bytes, str | None, str | None, dict[str, Any]]]:
    """(line, expected cause, classified cause, expectation) for every line of a sample."""
    fmt = ERROR_FORMATS[log.name.split(".")[0]]
    out = []
    for line, want in zip(_lines(log), _expectations(log), strict=True):
        got = fmt.classify(line)
        out.append((line, want["cause"], got.value if got else None, want))
    return out


@pytest.mark.parametrize("log", ERRORS, ids=lambda p: p.name)
def test_error_sample_lines_classify_as_annotated(log: Path) -> None:
    fmt = ERROR_FORMATS[log.name.split(".")[0]]
    for n, (line, want) in enumerate(zip(_lines(log), _expectations(log), strict=True), 1):
        where = f"{log.name}:{n}: {want.get('note', '')}"
        cause = fmt.classify(line)
        assert (cause.value if cause else None) == want["cause"], where
        t, want_t = fmt.time(line, dt.UTC, READ_ON), _epoch(want.get("time"))
        assert t == (None if want_t is None else pytest.approx(want_t, abs=1e-6)), where


CORPUS = [p for p in ERRORS if ".stderr." not in p.name and ".journal." not in p.name
          and p.name.count(".") > 1]  # fmt: skip


@pytest.mark.parametrize("log", CORPUS, ids=lambda p: p.name)
def test_every_corpus_line_says_where_it_comes_from(log: Path) -> None:
    for n, want in enumerate(_expectations(log), 1):
        assert want.get("origin"), f"{log.name}:{n}: no origin"


_APACHE_24 = re.compile(rb"\bAH[01]\d{4}: |\[[\w-]*:\w+\] ")  # a code, or [module:level]


def _server(log: Path, line: bytes) -> str:
    name = log.name.split(".")[0]
    if name == "apache-error":
        return "apache 2.4" if _APACHE_24.search(line) else "apache 2.2"
    return name


def test_the_corpus_is_large_and_agrees() -> None:
    """At least 300 lines; >= 97 % of cause-bearing lines classified right, by server and
    cause; no irrelevant line classified (no false alarm). Prints the agreement table."""
    table: dict[tuple[str, str], list[int]] = {}
    false_alarms, total = [], 0
    for log in ERRORS:
        for line, want, got, exp in _verdicts(log):
            total += 1
            if want is None:
                if got is not None:
                    false_alarms.append(f"{log.name}: {got} for {exp.get('note')}")
                continue
            row = table.setdefault((_server(log, line), want), [0, 0])
            row[0] += want == got
            row[1] += 1
    right = sum(r[0] for r in table.values())
    bearing = sum(r[1] for r in table.values())
    print(f"\nerror-log corpus: {total} lines, {bearing} name a cause, {right} right")  # -s
    for (server, cause), (ok, n) in sorted(table.items()):
        print(f"  {server:<14} {cause:<24} {ok:>3}/{n:<3}")
    assert total >= 300
    assert not false_alarms
    assert right >= 0.97 * bearing
