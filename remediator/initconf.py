"""``remediator init [DIR]``: write the example configuration, in dry run, for pip and pipx users.

The example travels in the wheel (``<prefix>/share/remediator/config``, the data files of
pyproject.toml; ``/usr/share/remediator/config`` in the .deb) and in a checkout (``config/``).
``init`` never overwrites: when any file it would write exists, it writes nothing. The modes
are those ``remediator check`` accepts (:mod:`remediator.trust`, sshd's StrictModes): the
directory and the playbooks writable by their owner only, the main file ``0640`` (group
``adm`` when run as root, as the package installs it), and DIR itself judged before anything
is written there, so a config that ``check`` would refuse is never made.
"""

from __future__ import annotations

import grp
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from remediator import trust

MAIN = "remediator.yaml"
PLAYBOOKS = "playbooks.d"
MAIN_MODE = 0o640
FILE_MODE = 0o644
DIR_MODE = 0o755
_SHARE = Path("share") / "remediator" / "config"


class InitError(Exception):
    """Why nothing was written, one line ending with what to do."""


def example_dirs() -> list[Path]:
    """Where the example may be, most specific first: this interpreter's data directory (a
    venv, pipx, ``--user``), its prefix, the .deb's /usr/share, then the checkout."""
    found: list[Path] = []
    for base in (sysconfig.get_path("data"), sys.prefix, "/usr"):
        found.append(Path(base) / _SHARE)
    found.append(Path(__file__).resolve().parent.parent / "config")
    return list(dict.fromkeys(found))


def example_dir() -> Path:
    """The first of :func:`example_dirs` that holds the example; InitError when none does."""
    for d in example_dirs():
        if (d / MAIN).is_file() and (d / PLAYBOOKS).is_dir():
            return d
    raise InitError(
        "the example configuration is not installed (looked in "
        + ", ".join(str(d) for d in example_dirs())
        + "); reinstall remediator"
    )


def dry_run_text(text: str) -> str:
    """The example's main file with ``dry_run: true``: a new configuration starts in dry run."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip("\n") in ("dry_run: false", "dry_run: true"):
            lines[i] = "dry_run: true\n"
            return "".join(lines)
    raise InitError("the example configuration has no top-level 'dry_run:' line")


@dataclass(frozen=True)
class Planned:
    path: Path
    text: str
    mode: int


def _plan(source: Path, target: Path) -> list[Planned]:
    plan = [Planned(target / MAIN, dry_run_text((source / MAIN).read_text()), MAIN_MODE)]
    for f in sorted((source / PLAYBOOKS).glob("*.yaml")):
        plan.append(Planned(target / PLAYBOOKS / f.name, f.read_text(), FILE_MODE))
    return plan


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _judge(target: Path) -> None:
    """DIR (or, before it exists, its nearest existing parent) must be one check accepts."""
    where = _existing_ancestor(target)
    try:
        trust.trusted_dir(where, trust.trusted_uids())
    except trust.Untrusted as exc:
        raise InitError(f"{where}: remediator check would refuse a config here: {exc}") from None
    except OSError as exc:
        raise InitError(f"{where}: {exc.strerror or exc}") from None


def _mkdir(path: Path) -> None:
    if path.is_dir():
        return
    path.mkdir(mode=DIR_MODE, parents=True)
    os.chmod(path, DIR_MODE)  # noqa: PTH101 - whatever the umask


def _write(item: Planned, gid: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(item.path, flags, item.mode)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, item.mode)  # whatever the umask
        if gid >= 0 and item.mode == MAIN_MODE:
            os.fchown(fd, -1, gid)
        f.write(item.text)


def _adm_gid() -> int:
    """adm's gid when root (the group that reads logs and the main file), else -1 (unchanged)."""
    if os.geteuid() != 0:
        return -1
    try:
        return grp.getgrnam("adm").gr_gid
    except KeyError:
        return -1


def init(target: Path, out: TextIO) -> list[Path]:
    """Write the example into ``target``; the paths written. InitError when nothing was."""
    target = Path(os.path.abspath(target))  # noqa: PTH100 - as the loader sees it
    source = example_dir()
    plan = _plan(source, target)
    taken = [p.path for p in plan if p.path.exists() or p.path.is_symlink()]
    if taken:
        shown = ", ".join(str(p) for p in taken[:3]) + (" ..." if len(taken) > 3 else "")
        raise InitError(f"refusing to overwrite {shown}: nothing written")
    _judge(target)
    _mkdir(target)
    _judge(target)
    _mkdir(target / PLAYBOOKS)
    gid = _adm_gid()
    for item in plan:
        _write(item, gid)
    print(f"wrote {len(plan)} files into {target} (from {source}), in dry run", file=out)
    print(f"next: edit {target / MAIN}, then run: remediator -c {target / MAIN} check", file=out)
    return [p.path for p in plan]
