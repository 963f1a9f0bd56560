"""StrictModes for config, playbooks, secrets and programs: one rule per test.

The files live under ``tmp_path``, which tests/conftest.py keeps in a directory the loader
trusts (root's home, not /tmp); each test makes one thing in it untrusted and checks the refusal
says what and how to fix it.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from remediator import trust
from remediator.load import load
from remediator.trust import Untrusted
from tests.attacker import UID, give_to_www_data

ROOT = frozenset({0})
CONFIG = """\
sources:
  access: {type: access_log, path: access.log}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service}
"""
PLAYBOOK = """\
name: {name}
when: {{status_rate: {{source: access, status: 502, at_least: 5}}}}
steps: [restart: fpm]
"""


def _config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "playbooks.d").mkdir(exist_ok=True)
    cfg = directory / "remediator.yaml"
    cfg.write_text(CONFIG)
    return cfg


def _errors(cfg: Path) -> list[str]:
    return [str(e) for e in load(cfg, uids=ROOT).all_errors()]


def test_a_config_in_trusted_directories_loads(tmp_path: Path) -> None:
    assert load(_config(tmp_path / "etc"), uids=ROOT).ok


def test_a_parent_directory_writable_by_others_refuses_the_config(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "etc")
    (tmp_path / "etc").chmod(0o777)
    [error] = _errors(cfg)
    assert error.startswith(f"{cfg}:1:1: refusing to use it: its directory {tmp_path / 'etc'}")
    assert "writable by group and others (mode 0777)" in error
    assert error.endswith(
        f"fix with: chown root: {tmp_path / 'etc'} && chmod go-w {tmp_path / 'etc'}"
    )


def test_a_grandparent_writable_by_group_refuses_the_config(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "a" / "b")
    (tmp_path / "a").chmod(0o775)
    [error] = _errors(cfg)
    assert f"its directory {tmp_path / 'a'} is writable by group (mode 0775)" in error


def test_a_parent_owned_by_www_data_refuses_the_config(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "etc")
    give_to_www_data(tmp_path / "etc")
    [error] = _errors(cfg)
    assert f"its directory {tmp_path / 'etc'} is owned by uid {UID} (www-data), not root" in error


def test_a_sticky_world_writable_parent_like_tmp_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "tmp" / "conf")
    (tmp_path / "tmp").chmod(0o1777)
    [error] = _errors(cfg)
    assert "(mode 1777, sticky): another user may create the name before root does" in error
    assert "move it to a directory only root can write" in error


def test_real_tmp_is_refused_for_config() -> None:
    with pytest.raises(Untrusted, match=r"its directory /tmp is writable by group and others"):
        trust.resolve(Path("/tmp/remediator.yaml"), ROOT)


def test_a_symlinked_config_in_trusted_directories_is_followed(tmp_path: Path) -> None:
    real = _config(tmp_path / "srv")
    (tmp_path / "etc").mkdir()
    link = tmp_path / "etc" / "remediator.yaml"
    link.symlink_to(real)
    assert trust.resolve(link, ROOT).path == real
    (tmp_path / "etc" / "playbooks.d").symlink_to(tmp_path / "srv" / "playbooks.d")
    assert load(link, uids=ROOT).ok


def test_a_symlink_into_a_www_data_directory_is_refused_and_named(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "etc")
    www = tmp_path / "www"
    www.mkdir()
    (www / "evil.yaml").write_text(PLAYBOOK.format(name="evil"))
    give_to_www_data(www)
    link = tmp_path / "etc" / "playbooks.d" / "evil.yaml"
    link.symlink_to(www / "evil.yaml")
    [error] = _errors(cfg)
    assert error.startswith(f"{link}:1:1: refusing to use it: its directory {www} is owned by")
    assert f"(through the symlink {link} -> {www / 'evil.yaml'})" in error


def test_a_symlink_sitting_in_a_www_data_directory_is_refused(tmp_path: Path) -> None:
    """www-data may not choose which root file is read (its link could name /etc/shadow)."""
    cfg = _config(tmp_path / "etc")
    www = tmp_path / "www"
    www.mkdir()
    (www / "hop.yaml").symlink_to(cfg)
    give_to_www_data(www)
    with pytest.raises(Untrusted, match=f"its directory {www} is owned by uid {UID}"):
        trust.resolve(tmp_path / "etc" / ".." / "www" / "hop.yaml", ROOT)


def test_a_fifo_config_is_refused_without_blocking(tmp_path: Path) -> None:
    cfg = tmp_path / "remediator.yaml"
    os.mkfifo(cfg, 0o644)
    result: list[list[str]] = []
    reader = threading.Thread(target=lambda: result.append(_errors(cfg)), daemon=True)
    reader.start()
    reader.join(30)
    if not result:  # unblock the reader if it hung on open(), and fail
        with open(cfg, "wb"):  # noqa: PTH123
            pass
        pytest.fail("loading a FIFO config blocked")
    assert result[0] == [
        f"{cfg}:1:1: refusing to use it: not a regular file; fix with: make {cfg} a plain file"
    ]


def test_a_config_symlinked_to_dev_zero_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "remediator.yaml"
    cfg.symlink_to("/dev/zero")
    [error] = _errors(cfg)
    assert "refusing to use it: not a regular file (through the symlink" in error


def test_a_file_over_one_mib_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text("# padding\n" * 110_000)
    [error] = _errors(cfg)
    assert "larger than 1 MiB" in error


def test_a_playbooks_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "etc")
    (tmp_path / "etc" / "playbooks.d").chmod(0o777)
    [error] = _errors(cfg)
    assert error.startswith(f"{tmp_path / 'etc' / 'playbooks.d'}:1:1: refusing to use it: writable")
    assert error.endswith("&& chmod go-w " + str(tmp_path / "etc" / "playbooks.d"))


def test_read_judged_reads_the_descriptor_it_judged(tmp_path: Path) -> None:
    f = tmp_path / "f.yaml"
    f.write_text("a: 1\n")
    data, st = trust.read_judged(f, ROOT, max_bytes=100)
    assert data == b"a: 1\n"
    assert stat.S_ISREG(st.st_mode)
    os.chown(f, UID, -1)
    with pytest.raises(Untrusted, match="owned by uid"):
        trust.read_judged(f, ROOT, max_bytes=100)


# --- programs of command actions ---------------------------------------------------------------


def test_a_program_name_is_found_in_the_fixed_path_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = tmp_path / "bin"
    shadow.mkdir()
    (shadow / "true").write_text("#!/bin/sh\n")
    (shadow / "true").chmod(0o755)
    monkeypatch.setenv("PATH", str(shadow))
    found = trust.program("true", tmp_path, ROOT)
    assert found.is_absolute()
    assert str(found.parent) in trust.PROGRAM_PATH


def test_a_program_in_a_www_data_directory_is_refused(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy("/bin/true", www / "flush")
    give_to_www_data(www)
    with pytest.raises(Untrusted, match=f"its directory {www} is owned by uid {UID}"):
        trust.program(str(www / "flush"), tmp_path, ROOT)


def test_a_program_writable_by_group_is_refused(tmp_path: Path) -> None:
    shutil.copy("/bin/true", tmp_path / "flush")
    (tmp_path / "flush").chmod(0o775)
    with pytest.raises(Untrusted, match=r"program .*flush: writable by group \(mode 0775\)"):
        trust.program("./flush", tmp_path, ROOT)


def test_a_command_program_is_resolved_at_load_time(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "etc")
    (tmp_path / "etc" / "playbooks.d" / "a.yaml").write_text(
        "name: a\nwhen: {status_rate: {source: access, status: 502, at_least: 5}}\n"
        "steps:\n  - command: {argv: [echo, x]}\n"
    )
    loaded = load(cfg, uids=ROOT)
    assert loaded.ok
    argv = loaded.playbooks[0].steps[0].args.argv
    assert Path(argv[0]).is_absolute()
    assert argv[0].endswith("/echo")
    assert argv[1:] == ("x",)


def test_a_services_own_programs_are_found_and_judged_like_a_commands(tmp_path: Path) -> None:
    # start, reload and config_test run as root too: a script www-data can rewrite is refused
    cfg = _config(tmp_path / "etc")
    www = tmp_path / "www"
    www.mkdir()
    give_to_www_data(www)
    shutil.copy("/bin/true", www / "start")
    cfg.write_text(
        CONFIG.replace(
            "fpm: {kind: php-fpm, unit: php8.2-fpm.service}",
            f"fpm: {{kind: php-fpm, pid_file: fpm.pid, start: [{www / 'start'}], "
            "reload: [kill, -USR2, x], config_test: [php-fpm8.2, -t]}",
        )
    )
    [error] = _errors(cfg)
    assert error.startswith(
        f"{cfg}:4:51: services.fpm.start[0]: refusing to run it: its directory {www} is "
        f"owned by uid {UID}"
    ), error
    cfg.write_text(cfg.read_text().replace(str(www / "start"), "echo"))
    loaded = load(cfg, uids=ROOT)
    assert loaded.ok, loaded.all_errors()
    assert loaded.config is not None
    fpm = loaded.config.services["fpm"]
    # what runs is what was judged: the absolute path found in the fixed PATH
    assert [fpm.start, fpm.reload, fpm.config_test] == [
        (shutil.which("echo", path=":".join(trust.PROGRAM_PATH)),),
        (shutil.which("kill", path=":".join(trust.PROGRAM_PATH)), "-USR2", "x"),
        (shutil.which("php-fpm8.2", path=":".join(trust.PROGRAM_PATH)), "-t"),
    ]


def test_a_command_program_in_a_writable_directory_is_a_located_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "etc")
    www = tmp_path / "www"
    www.mkdir(mode=0o777)
    www.chmod(0o777)
    shutil.copy("/bin/true", www / "flush")
    (tmp_path / "etc" / "playbooks.d" / "a.yaml").write_text(
        "name: a\nwhen: {status_rate: {source: access, status: 502, at_least: 5}}\n"
        f"steps:\n  - command: {{argv: [{www / 'flush'}]}}\n"
    )
    [error] = _errors(cfg)
    assert error.startswith(
        f"{tmp_path / 'etc' / 'playbooks.d' / 'a.yaml'}:4:22: steps[0].command.argv[0]: "
        f"refusing to run it: its directory {www} is writable by group and others"
    )
