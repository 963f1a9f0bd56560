"""The one seam through which remediator touches the host.

Every side effect (a command, a signal, a file replaced, a notification POSTed) goes through a
:class:`System`. :class:`System` does it; :class:`DryRunSystem` records what it *would* have
done, with the exact argv, signal, edit or payload, and changes nothing. Observations (config
tests, state queries, reading files) run for real in both: they are evidence, not changes.

Commands are argv lists, never a shell. A child runs in its own session; on timeout its whole
process group gets SIGTERM, then SIGKILL after a grace period. The operator's own programs
(``command`` actions) run through :mod:`remediator.contain` instead: a per-command subreaper that
ends *every* descendant at the timeout, also those that left the process group or the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from remediator import contain
from remediator.state import write_atomic

Check = Callable[[int], "str | None"]
"""Why process N may not be signalled (not the service's master), or None."""

OUTPUT_LIMIT = 16 * 1024
TERM_GRACE = 2.0
KEEPER = Path(contain.__file__)
KEEPER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
KEEPER_MARGIN = 10.0  # beyond the command's timeout and grace, for the keeper itself
BODY_EXCERPT = 300  # characters of a refusing webhook's answer kept in the error


@dataclass(frozen=True)
class CommandResult:
    """What a command did: exit status (None if killed at the timeout), output, duration."""

    argv: tuple[str, ...]
    returncode: int | None
    output: str
    duration: float
    timed_out: bool = False
    dry_run: bool = False
    # run_contained only: descendants signalled at the timeout, those that outlived every KILL,
    # and those still running when the command exited on its own (pid, name) each.
    killed: tuple[tuple[int, str], ...] = ()
    survivors: tuple[tuple[int, str], ...] = ()
    left_running: tuple[tuple[int, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class PostResult:
    """What a POST got: the HTTP status (None if none came) and why it failed (None if 2xx)."""

    status: int | None
    error: str | None
    duration: float
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class WouldDo:
    """A change the dry-run system did not make."""

    kind: str  # command, signal, signal_group, write, copy, remove, notify, mail
    detail: dict[str, object]


def endpoint_of(url: str) -> str:
    """scheme://host:port of ``url``: no path, query or credentials (they may hold secrets)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def run_command(
    argv: Sequence[str],
    timeout: float,
    *,
    env: dict[str, str] | None = None,
    limit: int = OUTPUT_LIMIT,
    stdin: bytes | None = None,
) -> CommandResult:
    """Run ``argv`` in its own session (``stdin`` written to it, if given); kill its process
    group if it outlives ``timeout``."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    except OSError as exc:
        return CommandResult(
            tuple(argv), 127, f"cannot run {argv[0]}: {exc.strerror}", time.monotonic() - start
        )
    try:
        out, _ = proc.communicate(stdin, timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        out = _kill_group(proc)
    text = out[:limit].decode("utf-8", "replace") if out else ""
    return CommandResult(
        tuple(argv),
        None if timed_out else proc.returncode,
        text,
        time.monotonic() - start,
        timed_out,
    )


def run_contained(argv: Sequence[str], timeout: float, env: Mapping[str, str]) -> CommandResult:
    """Run ``argv`` with exactly ``env`` under a keeper (:mod:`remediator.contain`) that kills
    every descendant, however detached, if it outlives ``timeout``."""
    start = time.monotonic()
    request = {
        "argv": list(argv),
        "env": dict(env),
        "timeout": timeout,
        "grace": TERM_GRACE,
        "limit": OUTPUT_LIMIT,
    }
    try:
        keeper = subprocess.Popen(
            [sys.executable, "-I", "-S", str(KEEPER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=KEEPER_ENV,
        )
    except OSError as exc:
        return CommandResult(
            tuple(argv), 127, f"cannot run the keeper: {exc.strerror}", time.monotonic() - start
        )
    try:
        out, err = keeper.communicate(
            json.dumps(request).encode(), timeout=timeout + 2 * TERM_GRACE + KEEPER_MARGIN
        )
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(keeper.pid, signal.SIGKILL)
        out, err = keeper.communicate()
    try:
        answer = json.loads(out)
        error = answer.get("error")
    except ValueError:
        answer, error = {}, err.decode("utf-8", "replace").strip()[-300:] or "no answer"
    if error is not None:
        # No answer from the keeper: end what is left of its process group, say why.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(keeper.pid, signal.SIGKILL)
        return CommandResult(tuple(argv), None, f"keeper failed: {error}", time.monotonic() - start)
    return CommandResult(
        tuple(argv),
        answer.get("returncode"),
        answer.get("output", ""),
        time.monotonic() - start,
        bool(answer.get("timed_out")),
        killed=_pids(answer.get("killed", [])),
        survivors=_pids(answer.get("survivors", [])),
        left_running=_pids(answer.get("left_running", [])),
    )


def _pids(items: list[dict[str, Any]]) -> tuple[tuple[int, str], ...]:
    return tuple((int(i["pid"]), str(i["name"])) for i in items)


def _kill_group(proc: subprocess.Popen[bytes]) -> bytes:
    """TERM the child's whole process group, wait a little, then KILL it."""
    out = b""
    for sig, wait in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            more, _ = proc.communicate(timeout=wait)
            out += more or b""
            break
        except subprocess.TimeoutExpired:
            continue
    # Stragglers of the group that outlived the leader (they ignored TERM): KILL them too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return out


class System:
    """The real host."""

    dry_run = False

    def __init__(self) -> None:
        self.would: list[WouldDo] = []  # what a dry run did not do, in order

    def observe(
        self, argv: Sequence[str], timeout: float, *, limit: int = OUTPUT_LIMIT
    ) -> CommandResult:
        """A command that only looks (a config test, a state query): runs even in dry-run.
        ``limit``: bytes of output kept (a firewall's whole ruleset needs more)."""
        return run_command(argv, timeout, limit=limit)

    def change(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """A command that changes the host (restart, reload)."""
        return run_command(argv, timeout)

    def change_contained(
        self, argv: Sequence[str], timeout: float, env: Mapping[str, str]
    ) -> CommandResult:
        """The operator's own program: exactly ``env``, every descendant ended at the timeout."""
        return run_contained(argv, timeout, env)

    def send_signal(self, pid: int, sig: signal.Signals) -> None:
        os.kill(pid, sig)

    def send_signal_group(self, pgid: int, sig: signal.Signals) -> None:
        os.killpg(pgid, sig)

    def send_signal_checked(
        self, pid: int, sig: signal.Signals, check: Check, *, group: bool = False
    ) -> str | None:
        """Signal ``pid`` (``group``: the process group it leads) only when ``check`` passes
        on the very process that gets it: why not when it does not, None once sent.

        A pidfd is taken before the check, and the process is seen still alive after it, so
        it held its PID throughout: a PID that died and was reused between a check and a
        signal is never signalled (``ProcessLookupError`` instead). A group's id cannot be
        reused while its leader lives."""
        fd = os.pidfd_open(pid)
        try:
            problem = check(pid)
            if problem is not None:
                return problem
            if _exited(fd):
                raise ProcessLookupError(pid)
            if group:
                os.killpg(pid, sig)
            else:
                signal.pidfd_send_signal(fd, sig)
        finally:
            os.close(fd)
        return None

    def replace_file(self, path: Path, data: bytes) -> None:
        """Atomically replace ``path``, keeping its mode and owner."""
        st = path.stat()
        write_atomic(path, data, mode=st.st_mode & 0o7777)
        os.chown(path, st.st_uid, st.st_gid)

    def copy_file(self, src: Path, dst: Path) -> None:
        """Atomically write ``dst`` as a copy of ``src`` with its mode and owner (a backup)."""
        st = src.stat()
        write_atomic(dst, src.read_bytes(), mode=st.st_mode & 0o7777)
        os.chown(dst, st.st_uid, st.st_gid)

    def remove_file(self, path: Path) -> None:
        """Remove ``path`` (a stale pid file); already gone is fine."""
        path.unlink(missing_ok=True)

    def post_json(
        self, url: str, body: Any, headers: Mapping[str, str], timeout: float
    ) -> PostResult:
        """POST ``body`` as JSON; never raises, never takes longer than ``timeout``."""
        start = time.monotonic()
        status, error = _post(url, body, headers, timeout)
        return PostResult(status, error, time.monotonic() - start)

    def send_mail(
        self, argv: Sequence[str], message: bytes, recipients: Sequence[str], timeout: float
    ) -> CommandResult:
        """Hand ``message`` to the MTA's ``argv`` (``sendmail -t``: it reads the recipients
        from the message's headers, ``recipients`` is for the record)."""
        return run_command(argv, timeout, stdin=message)

    def submit_mail(
        self,
        server: tuple[str, int],
        message: bytes,
        sender: str,
        recipients: Sequence[str],
        timeout: float,
    ) -> CommandResult:
        """Submit ``message`` over SMTP to the local MTA at ``server``: the result is shaped
        like a command's (returncode 0 when accepted, the server's refusal as output)."""
        return submit_smtp(server, message, sender, recipients, timeout)


def _exited(pidfd: int) -> bool:
    """Whether the process a pidfd refers to has exited (its pidfd polls readable)."""
    return bool(select.select([pidfd], [], [], 0)[0])


class DryRunSystem(System):
    """Records every change it is asked for (in ``would``); changes nothing."""

    dry_run = True

    def change(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.would.append(WouldDo("command", {"argv": list(argv), "timeout_s": timeout}))
        return CommandResult(tuple(argv), 0, "", 0.0, dry_run=True)

    def change_contained(
        self, argv: Sequence[str], timeout: float, env: Mapping[str, str]
    ) -> CommandResult:
        return self.change(argv, timeout)

    def send_signal(self, pid: int, sig: signal.Signals) -> None:
        self.would.append(WouldDo("signal", {"pid": pid, "signal": sig.name}))

    def send_signal_group(self, pgid: int, sig: signal.Signals) -> None:
        self.would.append(WouldDo("signal_group", {"pgid": pgid, "signal": sig.name}))

    def send_signal_checked(
        self, pid: int, sig: signal.Signals, check: Check, *, group: bool = False
    ) -> str | None:
        """The check runs (it only reads /proc); the signal is only recorded."""
        problem = check(pid)
        if problem is None:
            (self.send_signal_group if group else self.send_signal)(pid, sig)
        return problem

    def replace_file(self, path: Path, data: bytes) -> None:
        self.would.append(WouldDo("write", {"path": str(path), "bytes": len(data)}))

    def copy_file(self, src: Path, dst: Path) -> None:
        self.would.append(WouldDo("copy", {"src": str(src), "dst": str(dst)}))

    def remove_file(self, path: Path) -> None:
        self.would.append(WouldDo("remove", {"path": str(path)}))

    def send_mail(
        self, argv: Sequence[str], message: bytes, recipients: Sequence[str], timeout: float
    ) -> CommandResult:
        self.would.append(
            WouldDo("mail", {"argv": list(argv), "to": list(recipients), "bytes": len(message)})
        )
        return CommandResult(tuple(argv), 0, "", 0.0, dry_run=True)

    def submit_mail(
        self,
        server: tuple[str, int],
        message: bytes,
        sender: str,
        recipients: Sequence[str],
        timeout: float,
    ) -> CommandResult:
        where = f"smtp://{_hostport(server)}"
        self.would.append(
            WouldDo("mail", {"smtp": where, "to": list(recipients), "bytes": len(message)})
        )
        return CommandResult(("smtp", where), 0, "", 0.0, dry_run=True)

    def post_json(
        self, url: str, body: Any, headers: Mapping[str, str], timeout: float
    ) -> PostResult:
        # The URL's path and the headers' values may be secrets: the endpoint and names only.
        detail: dict[str, object] = {"endpoint": endpoint_of(url), "payload": body}
        if headers:
            detail["headers"] = sorted(headers)
        self.would.append(WouldDo("notify", detail))
        return PostResult(None, None, 0.0, dry_run=True)


def _post(
    url: str, body: Any, headers: Mapping[str, str], timeout: float
) -> tuple[int | None, str | None]:
    """(status, None) on a 2xx answer within ``timeout``, else (status or None, why not).

    The POST runs in a daemon thread waited on for ``timeout`` at most: ``requests``' own
    timeouts are per socket operation, and the name lookup before them has none.
    """
    # Imported here: requests costs ~7 MiB of RSS, paid only once a notification is sent.
    import requests  # noqa: PLC0415

    box: list[tuple[int | None, str | None]] = []

    def send() -> None:
        try:
            resp = requests.post(
                url, json=body, headers=dict(headers), timeout=timeout, allow_redirects=False
            )
        except requests.Timeout:
            box.append((None, f"timed out after {timeout:g}s"))
        except requests.RequestException as exc:
            box.append((None, _describe(exc)))
        except Exception as exc:  # a notification must never take the daemon down
            box.append((None, f"{type(exc).__name__}: {exc}"))
        else:
            with resp:
                if 200 <= resp.status_code < 300:
                    box.append((resp.status_code, None))
                else:
                    text = resp.text[:BODY_EXCERPT].strip()
                    box.append((resp.status_code, f"HTTP {resp.status_code}: {text}".rstrip(": ")))

    thread = threading.Thread(target=send, name="notify", daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:  # still waiting: abandon it (it ends at requests' own timeouts)
        return None, f"timed out after {timeout:g}s"
    return box[0]


def _describe(exc: Exception) -> str:
    """The root cause (refused, unreachable, reset), not urllib3's nested wrappers."""
    import requests  # noqa: PLC0415

    cause: BaseException | None = exc
    while cause is not None:
        if (
            isinstance(cause, OSError)
            and cause.strerror
            and not isinstance(cause, requests.RequestException)
        ):
            return f"{type(cause).__name__}: {cause.strerror}"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def _hostport(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def submit_smtp(
    server: tuple[str, int], message: bytes, sender: str, recipients: Sequence[str], timeout: float
) -> CommandResult:
    """One SMTP submission (EHLO, MAIL, RCPT, DATA, QUIT); every socket step bounded by
    ``timeout``. Refused or unreachable: returncode 1 with the reason."""
    import smtplib  # noqa: PLC0415 - only a mail notifier pays for it

    where = ("smtp", f"smtp://{_hostport(server)}")
    started = time.monotonic()
    try:
        with smtplib.SMTP(server[0], server[1], timeout=timeout) as conn:
            refused = conn.sendmail(sender, list(recipients), message)
    except TimeoutError:
        return CommandResult(where, None, "", time.monotonic() - started, timed_out=True)
    except (smtplib.SMTPException, OSError) as exc:
        return CommandResult(where, 1, _smtp_error(exc), time.monotonic() - started)
    if refused:
        who = ", ".join(f"{rcpt} ({code})" for rcpt, (code, _) in sorted(refused.items()))
        return CommandResult(where, 1, f"refused recipients: {who}", time.monotonic() - started)
    return CommandResult(where, 0, "", time.monotonic() - started)


def _smtp_error(exc: Exception) -> str:
    refused = getattr(exc, "recipients", None)  # SMTPRecipientsRefused: every one refused
    if isinstance(refused, dict) and refused:
        return "refused " + "; ".join(
            f"{rcpt}: {code} {said.decode('utf-8', 'replace') if isinstance(said, bytes) else said}"
            for rcpt, (code, said) in sorted(refused.items())
        )
    code = getattr(exc, "smtp_code", None)
    text = getattr(exc, "smtp_error", b"")
    if code is not None:
        said = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        return f"the server said {code} {said}".strip()
    return f"{type(exc).__name__}: {exc}"
