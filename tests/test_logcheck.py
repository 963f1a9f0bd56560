"""``remediator check`` reads the end of every configured log in its format."""

from __future__ import annotations

import io
import json
from pathlib import Path

from remediator.cli import main
from remediator.detect import Signals
from remediator.feed import Feeder
from remediator.load import load
from remediator.sources.access.guess import last_lines

SAMPLES = Path(__file__).parent / "samples"
TIMED = SAMPLES / "access" / "nginx-timed.log"  # 50 lines a real nginx wrote
NGINX_ERRORS = SAMPLES / "error" / "nginx-error.log"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


def _config(tmp_path: Path, sources: str) -> Path:
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text("sources:\n" + sources)
    (tmp_path / "playbooks.d").mkdir(exist_ok=True)
    return cfg


def _access(name: str, path: Path, fmt: str = "format: nginx-timed") -> str:
    return f"  {name}:\n    type: access_log\n    path: {path}\n    {fmt}\n"


def test_a_log_in_its_format_says_how_many_lines_read(tmp_path: Path) -> None:
    cfg = _config(tmp_path, _access("web", TIMED))
    rc, out, err = run("-c", str(cfg), "check")
    assert rc == 0, err
    assert f"source web: {TIMED}: 50 of the last 50 lines read as nginx-timed" in out
    assert "warning: source" not in err


def test_a_log_no_line_of_which_reads_is_an_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path, _access("web", TIMED, "format: apache-combined-time"))
    rc, out, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert out == ""
    assert f"error: source web: {TIMED}: 0 of the last 50 lines read as apache-combined-time" in err
    assert "the first that does not: 127.0.0.1 - - [" in err


def test_a_log_that_mostly_reads_warns_with_the_failing_line_escaped(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    lines = TIMED.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:20]) + b"GET /\x1b[2J not a line\n" + b"".join(lines[20:]))
    cfg = _config(tmp_path, _access("web", log))
    rc, out, err = run("-c", str(cfg), "check")
    assert rc == 0
    assert err.splitlines()[-1] == (
        f"warning: source web: {log}: 50 of the last 51 lines read as nginx-timed; "
        "the first that does not: GET /\\x1b[2J not a line"
    )
    assert out.splitlines()[-1].startswith("ok: 1 source")


def test_a_log_that_does_not_exist_is_a_warning(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "access.log"
    cfg = _config(tmp_path, _access("web", missing))
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 0
    assert f"warning: source web: {missing}: no such file (yet)" in err


def test_error_logs_are_read_too(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        f"  errors:\n    type: error_log\n    path: {NGINX_ERRORS}\n    format: apache-error\n",
    )
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert f"error: source errors: {NGINX_ERRORS}: 0 of the last" in err


def test_a_pasted_log_format_that_does_not_compile_is_located(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        f"  web:\n    type: access_log\n    path: {TIMED}\n"
        "    log_format: \"log_format main '$remote_addr $'\"\n",
    )
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert err.startswith(f"{cfg}:5:17: sources.web.log_format: column 31 of the format: ")


def test_format_and_log_format_together_is_a_located_error(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        f"  web:\n    type: access_log\n    path: {TIMED}\n    format: nginx-combined\n"
        "    log_format: '$remote_addr $status'\n",
    )
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert err.startswith(f"{cfg}:5:13: sources.web.format: give format (a built-in) or ")


def test_last_lines_reads_only_the_end_of_a_big_file(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1_000_000)))
    got = last_lines(log)
    assert len(got) == 1000
    assert got[-1] == b"line 999999"


# ---- format: auto ----------------------------------------------------------------------------
def test_format_auto_in_check_says_which_format_it_read(tmp_path: Path) -> None:
    cfg = _config(tmp_path, _access("web", TIMED, "format: auto"))
    rc, out, err = run("-c", str(cfg), "check")
    assert rc == 0, err
    assert out.splitlines()[0] == (
        f"source web: {TIMED}: 50 of the last 50 lines read as nginx-timed (auto)"
    )


def test_format_auto_in_the_daemon_guesses_from_the_log_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "later.log"
    cfg = _config(
        tmp_path, _access("web", TIMED, "format: auto") + _access("new", missing, "format: auto")
    )
    loaded = load(cfg)
    assert loaded.config is not None
    feeder = Feeder(loaded.config, Signals())
    assert feeder.formats["web"].name == "nginx-timed"
    assert feeder.formats["new"].name == "nginx-combined"  # nothing to guess from yet


def test_format_auto_in_replay_reads_the_replayed_file(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(TIMED.read_bytes())
    cfg = _config(tmp_path, _access("web", log, "format: auto"))
    rc, out, err = run("-c", str(cfg), "replay", "--json", str(log))
    assert rc == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert (summary["lines"], summary["malformed"]) == (50, 0)
    assert summary["formats_guessed"] == {str(log): "nginx-timed: 50 of 50 lines read"}
