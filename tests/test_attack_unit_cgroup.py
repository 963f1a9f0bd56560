"""Issue 9, item 1, under a real systemd: a unit's main PID outside the unit's cgroup is no
master of it, and nothing is done to the unit (which would signal that process).

systemd takes a ``PIDFile=`` naming a process outside the unit when root owns the file ("we'll
accept it since PID file is owned by root"): a root-owned pid file of another service moved
into place is enough. Here ``rem-outside.service`` (``Type=forking``) finds the PID of
``rem-decoy.service`` in its pid file. The action runs inside the namespace as the daemon would
(tests/test_service_systemd.py's runner).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sysd import BootedSystemd
from tests.test_service_systemd import _act

pytestmark = pytest.mark.systemd

DECOY = "rem-decoy.service"
OUTSIDE = "rem-outside.service"
PID_FILE = "/run/rem-outside.pid"


@pytest.fixture
def units(systemd_host: BootedSystemd) -> Iterator[BootedSystemd]:
    host = systemd_host
    host.install_unit(DECOY, "[Service]\nExecStart=/bin/sleep infinity\n", reload=False)
    host.install_unit(
        OUTSIDE,
        "[Service]\nType=forking\n"
        f"PIDFile={PID_FILE}\n"
        "ExecStart=/bin/sh -c '/bin/sleep infinity &'\n",
    )
    try:
        yield host
    finally:
        host.systemctl("stop", OUTSIDE, DECOY)
        for unit in (OUTSIDE, DECOY):
            (host.root / f"run/systemd/system/{unit}").unlink(missing_ok=True)
        host.systemctl("daemon-reload")
        host.systemctl("reset-failed")


def test_a_main_pid_outside_the_units_cgroup_is_not_acted_on(units: BootedSystemd) -> None:
    units.systemctl("start", DECOY, check=True)
    decoy = units.main_pid(DECOY)
    units.write(PID_FILE, f"{decoy}\n")  # root's: systemd accepts it
    units.systemctl("start", OUTSIDE, check=True)
    assert units.main_pid(OUTSIDE) == decoy  # systemd took it
    for action in ("restart", "reload"):
        out = _act(units, action, unit=OUTSIDE, kind="nginx", config_test=["/bin/true"])
        assert out["outcome"] == "cannot_act", out
        assert f"main pid {decoy} is outside the unit's cgroup" in out["reason"]
        assert not [s for s in out["details"]["steps"] if s["kind"] == "change"]
    assert units.main_pid(DECOY) == decoy
    assert units.show(DECOY, "ActiveState")["ActiveState"] == "active"
