"""scale_workers against a real PHP-FPM: the pool file, the budget, the reload, the rollback."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from remediator.actions.base import ActionContext, ActionResult, Outcome
from remediator.actions.declare import ScaleArgs
from remediator.actions.memory import fit_children, plan
from remediator.actions.pool_file import PoolError, dynamic_bounds, dynamic_raised, parse_pool
from remediator.actions.scale import actions, scale_workers
from remediator.config import Service
from remediator.system import DryRunSystem, System
from tests.stack import PHP_FPM, Nginx, PhpFpm, http_get, is_alive, wait_for

pytestmark = pytest.mark.servers

MiB = 1024 * 1024


# --- a small real service control: what the lead wires from the service actions ----------------


def fpm_config_test(service: str, ctx: ActionContext) -> ActionResult:
    """``php-fpm8.2 -t -y CONF`` through the seam (an observation: it runs in dry run too)."""
    svc = ctx.services[service]
    r = ctx.system.observe([PHP_FPM, "-t", "-y", str(svc.config_file)], 10)
    if r.ok:
        return ActionResult(Outcome.OK, "config test passed", service, {"output": r.output})
    reason = f"config test failed (rc {r.returncode})"
    return ActionResult(Outcome.REFUSED, reason, service, {"output": r.output[-1000:]})


def fpm_reload(service: str, ctx: ActionContext) -> ActionResult:
    """SIGUSR2 to the master through the seam; wait for the re-executed master (new PID)."""
    svc = ctx.services[service]
    assert svc.pid_file is not None
    old = int(svc.pid_file.read_text())
    if not is_alive(old):
        return ActionResult(Outcome.FAILED, f"master {old} is not running", service)
    ctx.system.send_signal(old, signal.SIGUSR2)
    if ctx.system.dry_run:
        return ActionResult(Outcome.WOULD_RUN, "SIGUSR2", service)

    def new_master() -> int | None:
        try:
            pid = int(svc.pid_file.read_text()) if svc.pid_file else 0
        except (OSError, ValueError):
            return None
        return pid if pid != old and is_alive(pid) else None

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = new_master()
        if pid is not None:
            return ActionResult(Outcome.OK, "reloaded", service, {"master_pid": pid})
        time.sleep(0.005)
    return ActionResult(Outcome.FAILED, "no new master within 10s", service)


def service_of(fpm: PhpFpm) -> Service:
    return Service(
        kind="php-fpm",
        pid_file=fpm.pid_file,
        start=(PHP_FPM, "-y", str(fpm.conf)),
        config_file=fpm.conf,
        pool_file=fpm.pool_file,
    )


def ctx_for(fpm: PhpFpm, system: System | None = None) -> ActionContext:
    return ActionContext(
        system=system or System(),
        services={"php-fpm": service_of(fpm)},
        notifiers={},
        playbook="php",
        incident="inc-1",
    )


def scale(args: ScaleArgs, ctx: ActionContext) -> ActionResult:
    return scale_workers(args, ctx, config_test=fpm_config_test, reload=fpm_reload)


def workers_are(fpm: PhpFpm, n: int) -> None:
    wait_for(lambda: len(fpm.worker_pids()) == n, 5, f"{n} php-fpm workers")


RAISE = ScaleArgs(service="php-fpm", max_children=4, memory_reserve=0)

# --- the pool file and the arithmetic (pure) ------------------------------------------------------


def test_edit_keeps_spacing_quotes_and_trailing_comment(tmp_path: Path) -> None:
    text = b'[www]\npm = static\n  pm.max_children="5" ; raised by ops\r\nlisten = /x\n'
    pool = parse_pool(tmp_path / "www.conf", text)
    new, changes = pool.edit({"pm.max_children": 12})
    assert new == b'[www]\npm = static\n  pm.max_children="12" ; raised by ops\r\nlisten = /x\n'
    assert changes == [
        {
            "line": 3,
            "key": "pm.max_children",
            "before": '  pm.max_children="5" ; raised by ops',
            "after": '  pm.max_children="12" ; raised by ops',
        }
    ]


def test_commented_out_lines_and_global_section_are_ignored(tmp_path: Path) -> None:
    text = (
        b"[global]\npm.max_children = 99\n[www]\n; pm.max_children = 50\npm = ondemand\n"
        b"pm.max_children = 7\n"
    )
    pool = parse_pool(tmp_path / "www.conf", text)
    assert (pool.pool, pool.pm, pool.settings["pm.max_children"].value) == ("www", "ondemand", 7)


def test_a_value_that_is_not_a_plain_number_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match=r"www.conf:3: cannot read pm.max_children value '\$\{N\}'"):
        parse_pool(tmp_path / "www.conf", b"[www]\npm = static\npm.max_children = ${N}\n")


def test_two_pools_in_one_file_are_refused(tmp_path: Path) -> None:
    text = b"[a]\npm = static\npm.max_children = 2\n[b]\npm = static\npm.max_children = 3\n"
    with pytest.raises(PoolError, match=r"more than one pool \(\[a\], \[b\]\)"):
        parse_pool(tmp_path / "www.conf", text)


def test_lowering_a_dynamic_pool_keeps_spares_and_start_within_max(tmp_path: Path) -> None:
    text = (
        b"[www]\npm = dynamic\npm.max_children = 10\npm.start_servers = 6\n"
        b"pm.min_spare_servers = 4\npm.max_spare_servers = 8\n"
    )
    values = dynamic_bounds(parse_pool(tmp_path / "www.conf", text), 3)
    assert values == {
        "pm.max_children": 3,
        "pm.max_spare_servers": 3,
        "pm.min_spare_servers": 3,
        "pm.start_servers": 3,
    }


def test_running_workers_count_on_top_of_available_memory() -> None:
    # 4 workers of 50 MiB run; 230 MiB available, 100 MiB reserved: 2 more fit.
    assert fit_children(4, 230 * MiB, 100 * MiB, 50 * MiB) == 6


def test_raising_by_more_than_memory_allows_is_capped_and_says_so() -> None:
    p = plan(4, 6, ScaleArgs(service="php-fpm", by=5))
    assert (p.target, p.notes) == (6, ("capped at 6: what memory allows",))


def test_lowering_stops_at_min_children() -> None:
    p = plan(3, 100, ScaleArgs(service="php-fpm", by=-5, min_children=2))
    assert p.target == 2


# --- on a real PHP-FPM -------------------------------------------------------------------------


def test_raise_edits_the_pool_file_keeping_mode_owner_and_a_backup(fpm: PhpFpm) -> None:
    original = fpm.pool_file.read_bytes()
    fpm.pool_file.chmod(0o640)
    os.chown(fpm.pool_file, 65534, 65534)
    r = scale(RAISE, ctx_for(fpm))
    assert r.outcome is Outcome.OK, r.reason
    assert fpm.pool_option("pm.max_children") == "4"
    st = fpm.pool_file.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 65534, 65534)
    backup = fpm.pool_file.with_name("www.conf.remediator-bak")
    assert backup.read_bytes() == original
    assert (backup.stat().st_mode & 0o7777, backup.stat().st_uid) == (0o640, 65534)


def test_raise_reloads_and_a_static_pool_then_runs_the_new_max(fpm: PhpFpm) -> None:
    before = fpm.master_pid()
    r = scale(RAISE, ctx_for(fpm))
    assert r.outcome is Outcome.OK, r.reason
    assert fpm.master_pid() != before
    workers_are(fpm, 4)
    assert r.details["before"] == 2 and r.details["after"] == 4
    budget = r.details["budget"]
    assert budget["workers"] == 2 and budget["avg_worker_rss"] > 0
    assert budget["fits"] == 2 + budget["available"] // budget["avg_worker_rss"]


def test_a_reserve_larger_than_available_memory_refuses(fpm: PhpFpm) -> None:
    original, pid = fpm.pool_file.read_bytes(), fpm.master_pid()
    huge = psutil.virtual_memory().total * 2
    r = scale(ScaleArgs(service="php-fpm", memory_reserve=huge), ctx_for(fpm))
    assert r.outcome is Outcome.REFUSED
    assert "is below the reserve" in r.reason
    assert fpm.pool_file.read_bytes() == original and fpm.master_pid() == pid


def test_raising_a_dynamic_pool_scales_its_spares_with_it(tmp_path: Path) -> None:
    # Debian's www.conf: reloaded at 5 -> 20 with start_servers 2, a saturated pool would restart
    # with 2 workers and grow about one a second while its backlog fills
    text = (
        b"[www]\npm = dynamic\npm.max_children = 5\npm.start_servers = 2\n"
        b"pm.min_spare_servers = 1\npm.max_spare_servers = 3\n"
    )
    pool = parse_pool(tmp_path / "www.conf", text)
    assert dynamic_raised(pool, 20) == {
        "pm.max_children": 20,
        "pm.min_spare_servers": 4,
        "pm.start_servers": 8,
        "pm.max_spare_servers": 12,
    }
    assert dynamic_raised(pool, 6) == {  # rounded up, never above the new maximum
        "pm.max_children": 6,
        "pm.min_spare_servers": 2,
        "pm.start_servers": 3,
        "pm.max_spare_servers": 4,
    }
    assert dynamic_raised(pool, 3) == dynamic_bounds(pool, 3)  # lowering: kept within it
    static = parse_pool(tmp_path / "www.conf", b"[www]\npm = static\npm.max_children = 5\n")
    assert dynamic_raised(static, 20) == {"pm.max_children": 20}


@pytest.mark.parametrize(
    "fpm",
    [
        {
            "pm": "dynamic",
            "max_children": 4,
            "start_servers": 3,
            "min_spare_servers": 2,
            "max_spare_servers": 3,
        }
    ],
    indirect=True,
)
def test_lowering_a_dynamic_pool_passes_the_real_config_test(fpm: PhpFpm) -> None:
    r = scale(ScaleArgs(service="php-fpm", by=-2), ctx_for(fpm))
    assert r.outcome is Outcome.OK, r.reason
    keys = ("pm.max_children", "pm.max_spare_servers", "pm.start_servers")
    assert [fpm.pool_option(k) for k in keys] == ["2", "2", "2"]
    assert r.details["config_test"]["outcome"] == "ok"


def test_a_config_failing_its_test_after_the_edit_is_restored_and_the_site_serves(
    nginx_fpm: Nginx,
) -> None:
    fpm = nginx_fpm.fpm
    assert fpm is not None
    fpm.set_pool_option("pm.max_requests", "abc")  # an operator's typo left on disk
    broken, pid = fpm.pool_file.read_bytes(), fpm.master_pid()
    r = scale(RAISE, ctx_for(fpm))
    assert r.outcome is Outcome.REFUSED
    assert "config test failed" in r.reason and "original restored" in r.reason
    assert "pm.max_requests" in r.details["config_test"]["output"]
    assert fpm.pool_file.read_bytes() == broken
    assert fpm.master_pid() == pid
    assert http_get(nginx_fpm.url())[0] == 200


def test_a_failed_reload_puts_the_original_file_back(fpm: PhpFpm) -> None:
    original = fpm.pool_file.read_bytes()

    def test_then_master_dies(service: str, ctx: ActionContext) -> ActionResult:
        result = fpm_config_test(service, ctx)
        fpm.kill_all()  # the master crashes between the config test and the reload
        return result

    r = scale_workers(RAISE, ctx_for(fpm), config_test=test_then_master_dies, reload=fpm_reload)
    assert r.outcome is Outcome.FAILED
    assert r.reason.startswith(
        "reload failed after setting pm.max_children 2 -> 4; original restored"
    )
    assert fpm.pool_file.read_bytes() == original


def test_rollback_restores_the_original_and_reloads(fpm: PhpFpm) -> None:
    original = fpm.pool_file.read_bytes()
    r = scale(RAISE, ctx_for(fpm))
    assert r.outcome is Outcome.OK and r.rollback is not None
    raised_pid = fpm.master_pid()
    undone = r.rollback()
    assert undone.outcome is Outcome.OK, undone.reason
    assert fpm.pool_file.read_bytes() == original
    assert fpm.master_pid() != raised_pid
    workers_are(fpm, 2)


def test_rollback_leaves_a_file_changed_since_the_edit_alone(fpm: PhpFpm) -> None:
    r = scale(RAISE, ctx_for(fpm))
    assert r.rollback is not None
    fpm.set_pool_option("pm.max_children", "3")  # the operator edited it meanwhile
    undone = r.rollback()
    assert undone.outcome is Outcome.REFUSED
    assert fpm.pool_option("pm.max_children") == "3"


def test_dry_run_changes_nothing_and_reports_the_new_line(fpm: PhpFpm) -> None:
    original, pid = fpm.pool_file.read_bytes(), fpm.master_pid()
    r = scale(RAISE, ctx_for(fpm, DryRunSystem()))
    assert r.outcome is Outcome.WOULD_RUN
    assert fpm.pool_file.read_bytes() == original and fpm.master_pid() == pid
    assert not fpm.pool_file.with_name("www.conf.remediator-bak").exists()
    kinds = [w["kind"] for w in r.details["would"]]
    assert kinds == ["copy", "write", "signal"]
    assert r.details["would"][0]["dst"] == str(fpm.pool_file.with_name("www.conf.remediator-bak"))
    assert r.details["file"] == str(fpm.pool_file.resolve())
    assert r.details["set"] == {"pm.max_children": 4}
    write = r.details["would"][1]
    assert write["path"] == str(fpm.pool_file.resolve())
    assert write["changes"][0]["before"] == "pm.max_children = 2"
    assert write["changes"][0]["after"] == "pm.max_children = 4"


def test_a_service_without_pool_file_is_refused(fpm: PhpFpm) -> None:
    ctx = ctx_for(fpm)
    ctx.services["php-fpm"] = Service(kind="php-fpm", pid_file=fpm.pid_file, start=("x",))
    r = scale(RAISE, ctx)
    assert r.outcome is Outcome.REFUSED and "has no pool_file" in r.reason


def test_a_pid_file_naming_another_process_cannot_act_and_edits_nothing(fpm: PhpFpm) -> None:
    original = fpm.pool_file.read_bytes()
    master = fpm.master_pid()
    fpm.pid_file.write_text("1\n")
    try:
        r = scale(RAISE, ctx_for(fpm))
    finally:
        fpm.pid_file.write_text(f"{master}\n")
    assert r.outcome is Outcome.CANNOT_ACT and "names PID 1" in r.reason, r.reason
    assert fpm.pool_file.read_bytes() == original


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="needs a host without systemd")
def test_a_unit_whose_main_pid_systemd_cannot_tell_is_refused(fpm: PhpFpm) -> None:
    ctx = ctx_for(fpm)  # PID 1 here is not systemd: `systemctl show` fails
    ctx.services["php-fpm"] = Service(
        kind="php-fpm", unit="php8.2-fpm.service", pool_file=fpm.pool_file
    )
    r = scale(RAISE, ctx)
    assert r.outcome is Outcome.REFUSED
    assert r.reason.startswith("no running master to measure (systemctl show failed: ")


@pytest.mark.parametrize(
    "fpm", [{"pm": "ondemand", "max_children": 2, "process_idle_timeout": 1}], indirect=True
)
def test_a_pool_with_no_running_worker_is_not_scaled(fpm: PhpFpm) -> None:
    # The fixture's start-up ping makes the master fork one worker (a moment later); it idles
    # out after 1 s.
    wait_for(lambda: len(fpm.worker_pids()) == 1, 5, "the ping's ondemand worker")
    workers_are(fpm, 0)
    r = scale(RAISE, ctx_for(fpm))
    assert r.outcome is Outcome.REFUSED
    assert "no worker of pool www is running" in r.reason


def test_at_max_children_already_is_refused_as_a_no_op(fpm: PhpFpm) -> None:
    r = scale(ScaleArgs(service="php-fpm", max_children=2, memory_reserve=0), ctx_for(fpm))
    assert r.outcome is Outcome.REFUSED
    assert r.reason == "pm.max_children is 2, not below max_children 2: nothing to change"


def test_registry_binds_the_service_control(fpm: PhpFpm) -> None:
    fn = actions(config_test=fpm_config_test, reload=fpm_reload)["scale_workers"]
    assert fn(RAISE, ctx_for(fpm, DryRunSystem())).outcome is Outcome.WOULD_RUN
