"""Every fast way of reading an access log agrees with the reference, line for line.

The reference reads one line at a time: the format's line regex, and its exact regex when
that fails (``AccessFormat.status`` and ``time``). The fast paths read many lines per regex
match and lines eight at a time when they share a second: ``scan`` (a buffer), ``scan_file``
(blocks of a file), and replay's own reading (``replay._regions``: blocks read straight into
buffers of their own, each scanned in place). On the captured samples of every format, and on
lines made from them and spoilt at random (bytes a server escapes, fields cut or added, lines
glued or emptied), the well-formed lines, their statuses and times, the malformed count and
where the malformed lines are must be the same. Any divergence fails.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediator.replay import _Block, _regions
from remediator.sources.access.scanner import Batch
from remediator.sources.accesslog import AccessFormat
from tests.test_samples import ACCESS, _access_format

Ref = list[tuple[float | None, int | None]]


def _reference(fmt: AccessFormat, lines: list[bytes]) -> Ref:
    return [(fmt.time(line), fmt.status(line)) for line in lines]


def _split(data: bytes) -> list[bytes]:
    """The lines of a buffer as every path counts them: a last newline ends the last line."""
    return data.removesuffix(b"\n").split(b"\n") if data else []


def _agrees(fmt: AccessFormat, ref: Ref, batch: Batch, how: str) -> None:
    good = [(t, s) for t, s in ref if s is not None]
    assert batch.statuses == [s for _, s in good], how
    assert (batch.times or []) == ([t for t, _ in good] if fmt.has_time else []), how
    assert batch.malformed == len(ref) - len(good), how
    assert batch.bad == [i for i, (_, s) in enumerate(ref) if s is None], how


def _replays(fmt: AccessFormat, f: io.BufferedIOBase, block: int) -> tuple[Batch, list[bytes]]:
    """What replay reads of ``f`` in blocks of ``block`` bytes, and the lines it would hand
    on as evidence."""
    batches, lines = [], []
    for buf, end in _regions(f, block):
        with memoryview(buf) as mv, mv[:end] as region:
            batches.append(fmt.scan_region(region))
        lines += _Block(buf, end).lines
    return Batch.join(batches), lines


def _all_paths_agree(fmt: AccessFormat, data: bytes) -> None:
    lines = _split(data)
    ref = _reference(fmt, lines)
    _agrees(fmt, ref, fmt.scan(data), "scan")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "access.log"
        path.write_bytes(data)
        for block in (64, 1000, 1 << 16):
            _agrees(fmt, ref, Batch.join(fmt.scan_file(io.BytesIO(data), block)), f"{block}")
            # replay reads a plain file at offsets, and anything else (gzip) as a stream
            with path.open("rb") as plain:
                for how, f in (("plain file", plain), ("stream", io.BytesIO(data))):
                    batch, read = _replays(fmt, f, block)
                    _agrees(fmt, ref, batch, f"replay, {how}, blocks of {block}")
                    assert read == lines, f"replay, {how}, blocks of {block}: evidence"


@pytest.mark.parametrize("log", ACCESS, ids=lambda p: p.name)
def test_every_path_reads_the_samples_as_the_reference(log: Path) -> None:
    data = log.read_bytes()
    fmt = _access_format(log)
    _all_paths_agree(fmt, data)
    _all_paths_agree(fmt, data * 9)  # seconds long enough for blocks of eight lines
    _all_paths_agree(fmt, data.removesuffix(b"\n"))  # a last line without its newline


# Bytes a server writes only escaped, or that end a field: what a forged or foreign line holds.
_ODD = st.sampled_from(list(b'"\\ \t\r\x00\x7f\xff[]-:+0123456789'))


def _spoil(draw: st.DrawFn, line: bytes) -> bytes:
    how = draw(st.sampled_from(["keep"] * 5 + ["insert", "delete", "cut", "more", "empty"]))
    at = draw(st.integers(0, len(line)))
    if how == "insert":
        return line[:at] + bytes([draw(_ODD)]) + line[at:]
    if how == "delete":
        return line[:at] + line[at + 1 :]
    if how == "cut":
        return line[:at]
    if how == "more":
        return line + draw(st.sampled_from([b' "x"', b" x", b' "', b" 200", b"\\"]))
    return b"" if how == "empty" else line


def _spoilt_logs(log: Path) -> st.SearchStrategy[bytes]:
    lines = _split(log.read_bytes())

    @st.composite
    def logs(draw: st.DrawFn) -> bytes:
        out: list[bytes] = []
        for _ in range(draw(st.integers(0, 8))):
            line = draw(st.sampled_from(lines))
            # a run of the same line: a second shared by enough lines to be read in blocks
            for _ in range(draw(st.sampled_from([1, 1, 2, 8, 9, 17]))):
                # after a line that leaves a quote open, one as written: two such lines in a
                # row are the one case the scans read differently (see the xfail below)
                odd = bool(out) and out[-1].count(b'"') % 2 == 1
                out.append(line if odd else _spoil(draw, line))
        return b"\n".join(out) + draw(st.sampled_from([b"", b"\n"]))

    return logs()


def _property(log: Path) -> Callable[[], None]:
    fmt = _access_format(log)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_spoilt_logs(log))
    def check(data: bytes) -> None:
        _all_paths_agree(fmt, data)

    return check


@pytest.mark.parametrize("log", ACCESS, ids=lambda p: p.name)
def test_every_path_reads_spoilt_sample_lines_as_the_reference(log: Path) -> None:
    _property(log)()


@pytest.mark.xfail(
    strict=True,
    reason="known: a line that leaves a quote open (cut inside a quoted field, or a raw "
    "newline inside one) and a next line that closes it are read as one line by the scans, "
    'whose quoted fields are [^"]*: sre runs that five times faster than [^"\\n]*, and '
    "either that or a newline count per block would cost a third of the replay. nginx "
    "writes a quote as \\x22 and a newline as \\x0A, so only forged lines do this "
    "(docs/benchmarks.md)",
)
def test_a_raw_newline_inside_quotes_makes_two_malformed_lines_in_a_scan() -> None:
    line = _split((Path(__file__).parent / "samples/access/nginx-combined.log").read_bytes())[0]
    cut = line.index(b'"') + 1
    data = b"\n".join([line] * 8 + [line[:cut] + b"\n" + line[cut:]] + [line] * 8)
    _all_paths_agree(_access_format(Path("nginx-combined.log")), data)
