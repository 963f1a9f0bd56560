"""The operator's request channel on real files, locks and processes (no daemon here; the
daemon's side end to end is in test_operator_daemon.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from remediator.daemonlock import DaemonLock, Holder, Role
from remediator.inbox import Inbox
from remediator.operator import STALE, Kind, Reply, Request, RequestError, login_name
from tests.unprivileged import NobodyPython

REPO = Path(__file__).resolve().parent.parent


def test_login_name_is_sudo_user_when_set() -> None:
    assert login_name({"SUDO_USER": "alice", "USER": "root"}, uid=0) == "alice"


def test_login_name_is_the_name_of_the_uid_without_sudo() -> None:
    assert login_name({"USER": "mallory"}, uid=0) == "root"
    assert login_name({}, uid=65534) == "nobody"


def test_a_uid_without_a_name_is_uid_n_never_a_bare_number() -> None:
    assert login_name({}, uid=54321) == "uid 54321"
    # and a process really running as that uid finds it by itself (the modules copied where it
    # can read them: a checkout under /root is 0700)
    drop = ("setpriv", "--reuid=54321", "--regid=54321", "--clear-groups")
    with NobodyPython(["remediator.operator"]) as py:
        proc = py.run(
            ["-c", "from remediator.operator import login_name; print(login_name())"], drop=drop
        )
    assert (proc.returncode, proc.stdout) == (0, "uid 54321\n"), proc.stderr


def test_a_request_survives_its_file_whole() -> None:
    req = Request(Kind.TRIGGER, "alice", "deploy 42", playbook="fpm", force=True, dry_run=True)
    assert Request.decode(req.encode(), req.id) == req


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"kind": "reboot"}, "unknown kind"),
        ({"force": "yes"}, "wrong type"),
        ({"extra": 1}, "not the expected ones"),
        ({"id": "0123456789abcdef"}, "does not match"),
        ({"reason": "a\x1b[2Jb"}, "control characters"),
        ({"playbook": "fpm"}, "pause takes no playbook"),
        ({"for_s": -5}, "bad duration"),
        ({"dry_run": True}, "takes no force or dry_run"),
    ],
)
def test_a_request_file_must_be_exactly_well_formed(change: dict[str, object], why: str) -> None:
    req = Request(Kind.PAUSE, "alice")
    doc = json.loads(req.encode()) | change
    with pytest.raises(RequestError, match=why):
        Request.decode(json.dumps(doc).encode(), req.id)


def test_the_lock_names_its_holder_and_is_free_once_let_go(tmp_path: Path) -> None:
    daemon = DaemonLock(tmp_path)
    assert daemon.holder() is None
    assert daemon.try_acquire(Role.DAEMON)
    other = DaemonLock(tmp_path)
    assert not other.try_acquire(Role.COMMAND)
    assert other.holder() == Holder(os.getpid(), "daemon")
    daemon.release()
    assert other.holder() is None
    assert other.try_acquire(Role.COMMAND)
    other.release()


def test_the_lock_of_a_process_that_died_is_free(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from remediator.daemonlock import DaemonLock, Role;"
        "assert DaemonLock(Path(sys.argv[1])).try_acquire(Role.DAEMON)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=REPO)
    assert DaemonLock(tmp_path).holder() is None


# --- the daemon's inbox, on real files ---------------------------------------------------------


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    box = Inbox(tmp_path)
    assert box.open() is None
    return box


def _put(inbox: Inbox, req: Request, *, mode: int = 0o600, uid: int = 0) -> Path:
    """A request file as a command would leave it, but with ``mode`` and owner ``uid``
    (made aside and renamed in, so the daemon never sees it half done)."""
    aside = inbox.dir.parent / f"aside-{req.id}"
    aside.write_bytes(req.encode())
    aside.chmod(mode)
    os.chown(aside, uid, uid)
    path = inbox.dir / f"{req.id}.json"
    aside.rename(path)
    return path


def test_a_well_formed_root_owned_request_is_taken_once(inbox: Inbox) -> None:
    req = Request(Kind.PAUSE, "alice", "deploy", duration=60)
    path = _put(inbox, req)
    assert inbox.take(time.monotonic()) == [req]
    assert not path.exists()
    assert inbox.take(time.monotonic()) == []


@pytest.mark.parametrize(
    ("mode", "uid", "why"),
    [
        (0o660, 0, "writable by group or others (mode 0660)"),
        (0o602, 0, "writable by group or others (mode 0602)"),
        (0o600, 65534, "owned by uid 65534, not root"),
    ],
)
def test_a_request_file_not_trusted_like_config_is_ignored_logged_and_removed(
    inbox: Inbox, mode: int, uid: int, why: str
) -> None:
    path = _put(inbox, Request(Kind.PAUSE, "mallory"), mode=mode, uid=uid)
    with structlog.testing.capture_logs() as logs:
        assert inbox.take(time.monotonic()) == []
    assert not path.exists() and list(inbox.dir.iterdir()) == []
    assert [(e["event"], e["reason"]) for e in logs] == [("operator_request_ignored", why)]


def test_a_symlink_fifo_or_oversized_request_is_ignored_without_blocking(
    inbox: Inbox, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_bytes(Request(Kind.RESUME, "mallory").encode())
    (inbox.dir / "00000000000000aa.json").symlink_to(target)
    os.mkfifo(inbox.dir / "00000000000000bb.json", 0o600)
    (inbox.dir / "00000000000000cc.json").write_bytes(b" " * 5000)
    (inbox.dir / "00000000000000cc.json").chmod(0o600)
    (inbox.dir / "notes.txt").write_text("hello")
    with structlog.testing.capture_logs() as logs:
        assert inbox.take(time.monotonic()) == []
    reasons = sorted(str(e["reason"]) for e in logs)
    assert reasons == [
        "5000 bytes, more than 4096",
        "cannot open: Too many levels of symbolic links",
        "not a regular file",
        "not a request file name",
    ]
    assert list(inbox.dir.iterdir()) == [] and target.exists()


def test_a_request_older_than_its_command_waits_is_never_applied(inbox: Inbox) -> None:
    req = Request(Kind.PAUSE, "alice", mono=time.monotonic() - STALE - 1)
    _put(inbox, req)
    with structlog.testing.capture_logs() as logs:
        assert inbox.take(time.monotonic()) == []
    assert logs[0]["reason"].startswith("stale")


def test_a_half_written_request_and_an_answer_are_left_alone(inbox: Inbox) -> None:
    (inbox.dir / ".0123456789abcdef.json.x1y2").write_bytes(b"{")
    (inbox.dir / "0123456789abcdef.ack").write_bytes(Reply(True, "ok").encode("0123456789abcdef"))
    assert inbox.take(time.monotonic()) == []
    assert len(list(inbox.dir.iterdir())) == 2


def test_the_request_directory_is_root_only(tmp_path: Path) -> None:
    (tmp_path / "requests").mkdir(mode=0o777)
    (tmp_path / "requests").chmod(0o777)
    box = Inbox(tmp_path)
    assert box.open() is None
    assert (tmp_path / "requests").stat().st_mode & 0o777 == 0o700
    box.close()


def test_a_request_directory_owned_by_someone_else_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "requests").mkdir(mode=0o700)
    os.chown(tmp_path / "requests", 65534, 65534)
    box = Inbox(tmp_path)
    with structlog.testing.capture_logs() as logs:
        assert box.open() is None
    assert logs[-1]["event"] == "operator_requests_disabled"
    _put(box, Request(Kind.PAUSE, "mallory"))
    assert box.take(time.monotonic()) == []
    box.close()


def test_a_new_daemon_drops_what_the_last_one_claimed_and_takes_what_still_waits(
    tmp_path: Path,
) -> None:
    box = tmp_path / "requests"
    box.mkdir(mode=0o700)
    (box / "00000000000000aa.taken").write_bytes(b"{}")  # the last daemon died applying it
    waiting = Request(Kind.RESUME, "alice")  # its command may still wait for an answer
    (box / f"{waiting.id}.json").write_bytes(waiting.encode())
    (box / f"{waiting.id}.json").chmod(0o600)
    inbox = Inbox(tmp_path)
    with structlog.testing.capture_logs() as logs:
        assert inbox.open() is None
    assert [e["event"] for e in logs] == ["operator_request_discarded"]
    assert inbox.take(time.monotonic()) == [waiting]
    assert list(box.iterdir()) == []
    inbox.close()
