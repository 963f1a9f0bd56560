"""Where tests/sysd.py finds cgroup2: pure (Debian 12's default), hybrid (these machines), none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import sysd
from tests.require import lacking
from tests.sysd import cgroup2_mount, cgroup_root

# /proc/self/mountinfo of a stock Debian 12 host (systemd, pure cgroup2), the lines around it.
PURE = """\
22 29 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 29 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:7 / /sys/kernel/security rw,nosuid,nodev,noexec,relatime shared:8 - securityfs securityfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
36 22 0:31 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
"""

# These machines: cgroup v1 controllers at /sys/fs/cgroup/*, cgroup2 at /sys/fs/cgroup/unified.
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# cgroup v1 only (legacy): no unified hierarchy at all.
LEGACY = """\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
33 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
"""


def test_pure_cgroup2_is_found_at_sys_fs_cgroup() -> None:
    assert cgroup2_mount(PURE) == Path("/sys/fs/cgroup")


def test_hybrid_cgroup2_is_found_at_unified() -> None:
    assert cgroup2_mount(HYBRID) == Path("/sys/fs/cgroup/unified")


def test_no_cgroup2_mount_is_none() -> None:
    assert cgroup2_mount(LEGACY) is None
    assert cgroup2_mount("") is None


def test_the_whole_hierarchy_wins_over_a_bound_sub_cgroup() -> None:
    text = "50 24 0:30 /system.slice/x.service /srv/cg rw,relatime - cgroup2 cgroup2 rw\n" + PURE
    assert cgroup2_mount(text) == Path("/sys/fs/cgroup")


def test_a_sub_cgroup_is_used_when_it_is_all_there_is() -> None:
    text = "50 24 0:30 /../.. /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"
    assert cgroup2_mount(text) == Path("/sys/fs/cgroup")


def test_optional_fields_and_escaped_mount_points_are_read() -> None:
    text = "41 31 0:38 / /mnt/my\\040cgroups rw shared:3 master:1 - cgroup2 none rw,nsdelegate\n"
    assert cgroup2_mount(text) == Path("/mnt/my cgroups")


def test_a_mount_named_like_a_cgroup2_is_not_taken_for_one() -> None:
    text = "41 31 0:38 / /cgroup2 rw - tmpfs cgroup2 rw\n"
    assert cgroup2_mount(text) is None


def test_this_host_has_a_cgroup2_where_mountinfo_says() -> None:
    root = cgroup_root()
    assert root is not None, "this machine mounts cgroup2 (hybrid or pure)"
    assert (root / "cgroup.procs").exists()


_PURE_VIEW = (
    "umount -R /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && "
    "! grep -q ' - cgroup ' /proc/self/mountinfo && "
    '"$0" -c "from tests.sysd import cgroup_root; print(\'cgroup2 at\', cgroup_root())" && '
    'exec "$0" -m pytest -q -p no:cacheprovider "$@"'
)


def test_the_systemd_tests_pass_where_cgroup2_is_the_only_hierarchy() -> None:
    """On a hybrid host (these machines), run the systemd tests again in a mount namespace whose
    /sys/fs/cgroup is the cgroup2 hierarchy alone, as on a stock Debian 12 host: sysd.py must
    find it there and boot on it (the v1 controllers stay bound to v1, so fewer are offered)."""
    root = cgroup_root()
    if root is None or sysd.available() is not None:
        lacking("systemd", sysd.available() or "no cgroup2 hierarchy")
    if root == Path("/sys/fs/cgroup"):
        pytest.skip("this host is pure cgroup2 already: the suite itself runs there")
    tests = Path(__file__).parent
    run = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _PURE_VIEW,
            sys.executable,
            str(tests / "test_sysd.py"),
            "-k",
            "boots_to_running or kill9 or alone_in_its_cgroup",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "REMEDIATOR_REQUIRE": "systemd"},
        cwd=tests.parent,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert run.stdout.startswith("cgroup2 at /sys/fs/cgroup\n")
    assert "3 passed" in run.stdout
