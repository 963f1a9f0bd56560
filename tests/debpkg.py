"""The Debian package, built once per test session with Debian's own tools (scripts/build-deb).

:func:`built` builds ``remediator_<version>_all.deb`` into a temp directory the first time it is
called and returns the same file afterwards (about 6 s); :func:`repack` makes an upgrade of it
(same files, a higher version) without building again.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "scripts" / "build-deb"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class BuildError(RuntimeError):
    """scripts/build-deb failed; the message carries its output."""


@functools.cache
def _outdir() -> Path:
    out = Path(tempfile.mkdtemp(prefix="remediator-deb-"))
    out.chmod(0o755)
    atexit.register(shutil.rmtree, out, True)
    return out


@functools.cache
def built() -> Path:
    """The .deb of this checkout (its working tree, committed or not), built once."""
    res = subprocess.run(
        [str(BUILD), str(_outdir())],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        check=False,
    )
    if res.returncode != 0:
        raise BuildError(f"scripts/build-deb failed (rc {res.returncode}): {res.stderr[-3000:]}")
    deb = Path(res.stdout.strip().splitlines()[-1])
    if not deb.is_file():
        raise BuildError(f"scripts/build-deb printed {deb}, which is not a file")
    return deb


def field(deb: Path, name: str) -> str:
    """A control field of ``deb`` (``Version``, ``Depends``...)."""
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def contents(deb: Path) -> list[str]:
    """The absolute paths ``deb`` installs (directories end without ``/``)."""
    out = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    names = subprocess.run(
        ["tar", "-tf", "-"], input=out, capture_output=True, check=True
    ).stdout.decode()
    return sorted({"/" + n.removeprefix("./").rstrip("/") for n in names.split() if n != "./"})


def repack(deb: Path, version: str, outdir: Path) -> Path:
    """``deb`` with ``version`` in its control file: an upgrade that runs the real maintainer
    scripts, made in a second instead of a build."""
    work = Path(tempfile.mkdtemp(prefix="repack-", dir=outdir))
    subprocess.run(["dpkg-deb", "-R", str(deb), str(work / "pkg")], check=True)
    control = work / "pkg" / "DEBIAN" / "control"
    lines = control.read_text().splitlines()
    control.write_text(
        "\n".join(f"Version: {version}" if ln.startswith("Version:") else ln for ln in lines) + "\n"
    )
    out = outdir / f"remediator_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "-b", str(work / "pkg"), str(out)],
        capture_output=True,
        check=True,
    )
    shutil.rmtree(work)
    return out
