"""A real headless browser (Debian's ``chromium``) that renders a local page once: its DOM as the
browser built it, a PNG of it, and, if asked, the page printed to PDF.

One start does all of it (``--dump-dom``, ``--screenshot`` and ``--print-to-pdf`` together). The browser gets a
private profile under the caller's directory, no first-run work, no background networking,
and, when this process may make one (root), a network namespace of its own with nothing in it
(``unshare --net``): the page can reach nothing, not even loopback. It runs in its own
session and is killed by its process group if it overruns.

:func:`png_pixels` reads a PNG back (8-bit RGB or RGBA, as chromium writes them) with the
standard library, for tests that look at what was drawn.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT = 60.0


def unavailable() -> str | None:
    """Why no headless browser can run here, or None."""
    if not Path(CHROMIUM).exists():
        return (
            "chromium is not installed (Debian: chromium; scripts/ensure-system-deps installs it)"
        )
    return None


@dataclass(frozen=True)
class Rendered:
    dom: str  # the document as the browser built it (serialised)
    png: Path
    pdf: Path | None  # the page as printed (the print stylesheet applies)
    log: str  # the browser's stderr, for a failure's message


def render(
    page: Path,
    png: Path,
    workdir: Path,
    *,
    width: int = 1280,
    height: int = 2000,
    dark: bool = False,
    pdf: Path | None = None,
) -> Rendered:
    """Render ``page`` (a local file) to ``png`` at ``width`` x ``height`` (and print it to
    ``pdf``); its DOM."""
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # root here; the page is our own file and can load nothing
        f"--user-data-dir={profile}",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--window-size={width},{height}",
        f"--screenshot={png}",
        "--dump-dom",
        *([f"--print-to-pdf={pdf}", "--no-pdf-header-footer"] if pdf is not None else []),
        *(["--force-dark-mode", "--blink-settings=preferredColorScheme=0"] if dark else []),
        page.resolve().as_uri(),
    ]
    if os.geteuid() == 0 and shutil.which("unshare"):
        argv = ["unshare", "--net", *argv]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    log = err.decode(errors="replace")
    if proc.returncode != 0 or not png.exists() or (pdf is not None and not pdf.exists()):
        raise RuntimeError(f"chromium failed (rc {proc.returncode}): {log[-2000:]}")
    return Rendered(out.decode(errors="replace"), png, pdf, log)


@dataclass(frozen=True)
class Pixels:
    width: int
    height: int
    channels: int
    rows: list[bytes]

    def count(self, rgb: tuple[int, int, int]) -> int:
        """How many pixels are exactly this colour."""
        c, want, n = self.channels, bytes(rgb), 0
        for row in self.rows:
            at = row.find(want)
            while at >= 0:
                if at % c == 0:
                    n += 1
                at = row.find(want, at + 1)
        return n


def png_pixels(path: Path) -> Pixels:
    """The pixels of a non-interlaced 8-bit RGB or RGBA PNG."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"{path}: depth {depth}, colour type {colour}: not read here")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        cur = _unfilter(line[0], bytearray(line[1:]), prev, channels)
        rows.append(bytes(cur))
        prev = cur
    return Pixels(width, height, channels, rows)


def _unfilter(kind: int, cur: bytearray, prev: bytearray, bpp: int) -> bytearray:
    """One scanline unfiltered; None, Sub and Up at C speed, Average and Paeth byte by byte."""
    if kind == 0:
        return cur
    if kind == 2:  # Up: a bytewise sum with no carry between bytes, on two big integers
        n = len(cur)
        a, b = int.from_bytes(cur, "big"), int.from_bytes(prev, "big")
        low = int.from_bytes(b"\x7f" * n, "big")
        high = int.from_bytes(b"\x80" * n, "big")
        return bytearray((((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(n, "big"))
    if kind == 1:  # Sub: a running sum of each channel
        out = bytearray(len(cur))
        for c in range(bpp):
            out[c::bpp] = bytes(map((255).__and__, itertools.accumulate(cur[c::bpp])))
        return out
    n = len(cur)
    if kind == 3:
        for i in range(n):
            cur[i] = (cur[i] + (((cur[i - bpp] if i >= bpp else 0) + prev[i]) >> 1)) & 0xFF
        return cur
    for i in range(bpp):  # Paeth with nothing to the left predicts from above
        cur[i] = (cur[i] + prev[i]) & 0xFF
    for i in range(bpp, n):
        a, b, c = cur[i - bpp], prev[i], prev[i - bpp]
        pa, pb = b - c, a - c
        pc = pa + pb
        pa, pb, pc = (pa if pa >= 0 else -pa), (pb if pb >= 0 else -pb), (pc if pc >= 0 else -pc)
        cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    return cur
