"""``remediator init [DIR]``: the example configuration, in dry run, with modes check accepts."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediator import initconf
from remediator.cli import main

REPO = Path(__file__).resolve().parent.parent


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def safe_dir() -> Iterator[Path]:
    """A directory StrictModes accepts: not under /tmp (sticky, world-writable), owned by us."""
    base = Path.home() if os.geteuid() != 0 else Path("/root")
    with tempfile.TemporaryDirectory(prefix=".remediator-init-", dir=base) as d:
        path = Path(d)
        path.chmod(0o755)
        yield path


def test_init_writes_the_example_in_dry_run_and_check_accepts_it(safe_dir: Path) -> None:
    target = safe_dir / "etc"
    rc, out, err = run("init", str(target))
    assert (rc, err) == (0, "")
    assert f"into {target}" in out
    main_file = target / "remediator.yaml"
    text = main_file.read_text()
    assert "\ndry_run: true\n" in text
    shipped = (REPO / "config" / "remediator.yaml").read_text()
    assert text == shipped.replace("\ndry_run: false\n", "\ndry_run: true\n")
    playbooks = sorted(p.name for p in (target / "playbooks.d").iterdir())
    assert playbooks == sorted(p.name for p in (REPO / "config" / "playbooks.d").glob("*.yaml"))
    rc, out, err = run("-c", str(main_file), "check")
    assert rc == 0, err
    assert out.splitlines()[-1].startswith("ok: ")


def test_init_gives_the_modes_strict_modes_wants(safe_dir: Path) -> None:
    target = safe_dir / "etc"
    old = os.umask(0o002)  # a permissive umask must not make group-writable files
    try:
        assert run("init", str(target))[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "playbooks.d").stat().st_mode) == 0o755
    main_st = (target / "remediator.yaml").stat()
    assert stat.S_IMODE(main_st.st_mode) == 0o640
    if os.geteuid() == 0:
        assert main_st.st_gid == 4  # adm, as the package installs it
    for f in (target / "playbooks.d").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644


def test_init_refuses_to_overwrite_and_writes_nothing(safe_dir: Path) -> None:
    target = safe_dir / "etc"
    (target / "playbooks.d").mkdir(parents=True)
    mine = target / "playbooks.d" / "10-php-fpm-down.yaml"
    mine.write_text("# mine\n")
    rc, out, err = run("init", str(target))
    assert rc == 2
    assert out == ""
    assert err.startswith(f"remediator init: refusing to overwrite {mine}")
    assert mine.read_text() == "# mine\n"
    assert not (target / "remediator.yaml").exists()
    assert [p.name for p in (target / "playbooks.d").iterdir()] == [mine.name]


def test_init_refuses_a_directory_check_would_refuse() -> None:
    with tempfile.TemporaryDirectory(prefix="remediator-init-") as d:  # under sticky /tmp
        target = Path(d) / "etc"
        Path(d).chmod(0o777)
        rc, _, err = run("init", str(target))
        assert rc == 2
        assert "remediator check would refuse a config here" in err
        assert "writable by group and others" in err
        assert not target.exists()


def test_the_example_is_found_where_the_wheel_puts_it() -> None:
    wheel_share = Path(sys.prefix) / "share" / "remediator" / "config"
    assert wheel_share in initconf.example_dirs()
    assert Path("/usr/share/remediator/config") in initconf.example_dirs()
    assert initconf.example_dir().joinpath("remediator.yaml").is_file()


def test_the_wheel_carries_the_example_and_the_unit(tmp_path: Path) -> None:
    """Built as pybuild builds it (Debian's python3 and setuptools, no isolation), from a copy:
    the checkout gets no build/ or egg-info from a test."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "remediator", "config", "systemd"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    res = subprocess.run(
        ["/usr/bin/python3", "-m", "build", "--no-isolation", "--skip-dependency-check",
         "--wheel", "--outdir", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300, cwd=src, check=False,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("remediator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = "remediator-0.1.0.data/data/share/remediator/"
    assert f"{data}config/remediator.yaml" in names
    assert f"{data}config/playbooks.d/10-php-fpm-down.yaml" in names
    for f in ("remediator.service", "remediator.tmpfiles", "remediator.logrotate"):
        assert f"{data}systemd/{f}" in names
