"""The notify action against real HTTP servers on loopback: a receiver, a hang, a drip."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from remediator.actions.base import ActionContext, Outcome
from remediator.actions.declare import NotifyArgs
from remediator.actions.notify import ACTIONS, notify
from remediator.config import Notifier
from remediator.system import DryRunSystem, System
from tests.stack import free_port
from tests.webhook import HOOK_PATH, Receiver, receiving


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    with receiving(getattr(request, "param", 200)) as server:
        yield server


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections (in the kernel's queue) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.fixture
def drip_port() -> Iterator[int]:
    """Answers one header byte every 50 ms, forever: no single read ever times out."""
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.05)

    def serve() -> None:
        conn = None
        while conn is None and not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
        if conn is None:
            return
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not stop.wait(0.05):
                try:
                    conn.sendall(b"z")
                except OSError:
                    return

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def ctx(url: str, *, fmt: str = "json", system: System | None = None, **kw: Any) -> ActionContext:
    notifier = Notifier(url=url, format=fmt, **kw)
    return ActionContext(
        system=system or System(),
        services={},
        notifiers={"ops": notifier},
        playbook="php-502",
        incident="inc-42",
        summary="502 rate 38% over 10s on /index.php",
    )


ARGS = NotifyArgs(notifier="ops", message="restarted php-fpm")


def test_json_payload_and_headers_reach_the_webhook(receiver: Receiver) -> None:
    r = notify(ARGS, ctx(receiver.url(), headers={"Authorization": "Bearer t0k"}))
    assert r.outcome is Outcome.OK and r.details["status"] == 200
    [(path, headers, body)] = receiver.received
    assert path == HOOK_PATH
    assert headers["Authorization"] == "Bearer t0k"
    assert headers["Content-Type"] == "application/json"
    assert body.pop("ts").endswith("Z")
    assert body == {
        "source": "remediator",
        "playbook": "php-502",
        "incident": "inc-42",
        "message": "restarted php-fpm",
        "summary": "502 rate 38% over 10s on /index.php",
        "host": socket.gethostname(),
    }


def test_slack_payload_is_one_escaped_text(receiver: Receiver) -> None:
    context = ctx(receiver.url(), fmt="slack")
    r = notify(NotifyArgs(notifier="ops", message="see <!channel> & co"), context)
    assert r.outcome is Outcome.OK
    [(_, _, body)] = receiver.received
    assert list(body) == ["text"]
    assert "see &lt;!channel&gt; &amp; co" in body["text"]
    assert "incident inc-42" in body["text"] and "502 rate 38%" in body["text"]


@pytest.mark.parametrize("receiver", [500], indirect=True)
def test_a_non_2xx_answer_fails_and_is_logged(receiver: Receiver) -> None:
    with structlog.testing.capture_logs() as logs:
        r = notify(ARGS, ctx(receiver.url()))
    assert r.outcome is Outcome.FAILED
    assert r.reason == "notification failed: HTTP 500: nope :("
    [event] = [e for e in logs if e["event"] == "notify_failed"]
    assert event["notifier"] == "ops" and HOOK_PATH not in json.dumps(event)


def test_a_refused_port_fails_without_raising() -> None:
    r = notify(ARGS, ctx(f"http://127.0.0.1:{free_port()}/hook"))
    assert r.outcome is Outcome.FAILED
    assert r.details["error"] == "ConnectionRefusedError: Connection refused"


def test_an_endpoint_that_never_answers_fails_at_the_timeout(silent_port: int) -> None:
    start = time.monotonic()
    r = notify(ARGS, ctx(f"http://127.0.0.1:{silent_port}/hook", timeout=0.3))
    elapsed = time.monotonic() - start
    assert r.outcome is Outcome.FAILED and r.details["error"] == "timed out after 0.3s"
    assert elapsed > 0.25  # not before its timeout (the endpoint never answers: not after it)


def test_an_endpoint_that_drips_bytes_still_fails_at_the_timeout(drip_port: int) -> None:
    # a byte every 50 ms, forever: only an overall deadline ends it
    r = notify(ARGS, ctx(f"http://127.0.0.1:{drip_port}/hook", timeout=0.3))
    assert r.outcome is Outcome.FAILED and r.details["error"] == "timed out after 0.3s"


def test_dry_run_sends_nothing_and_shows_the_payload(receiver: Receiver) -> None:
    dry = DryRunSystem()
    r = ACTIONS["notify"](ARGS, ctx(receiver.url(), system=dry))
    assert r.outcome is Outcome.WOULD_RUN
    assert r.reason == f"would notify ops ({receiver.url('')}): not sent in a dry run"
    assert r.details["notifier"] == "ops"
    assert r.details["payload"]["message"] == "restarted php-fpm"
    assert r.details["payload"]["summary"] == "502 rate 38% over 10s on /index.php"
    [would] = r.details["would"]
    assert would["kind"] == "notify" and would["notifier"] == "ops"
    assert would["endpoint"] == receiver.url("")
    assert would["payload"] == r.details["payload"]
    assert [w.kind for w in dry.would] == ["notify"]  # recorded by the seam, not sent
    # A real notification through the same receiver arrives: the dry one did not.
    assert notify(ARGS, ctx(receiver.url())).outcome is Outcome.OK
    assert [body["message"] for _, _, body in receiver.received] == ["restarted php-fpm"]


def test_dry_run_details_never_carry_the_url_path_or_header_values(receiver: Receiver) -> None:
    r = notify(ARGS, ctx(receiver.url(), headers={"X-Token": "t0k"}, system=DryRunSystem()))
    text = json.dumps(r.details)
    assert HOOK_PATH not in text and "t0k" not in text
    assert r.details["would"][0]["headers"] == ["X-Token"]


SUMMARY = (
    "tripped: 502/503 rate 38% (41 of 108 requests in 20s), 7 upstream_refused in 20s\n"
    "done: restart php-fpm (ok), verified: recovered 0.4s after the action\n"
    "outcome: resolved"
)


@pytest.mark.parametrize("fmt", ["json", "slack"])
def test_every_format_carries_the_incident_summary(receiver: Receiver, fmt: str) -> None:
    context = ActionContext(
        system=System(),
        services={},
        notifiers={"ops": Notifier(url=receiver.url(), format=fmt)},
        playbook="php-fpm-down",
        incident="inc-7",
        summary=SUMMARY,
    )
    assert notify(NotifyArgs(notifier="ops"), context).outcome is Outcome.OK
    [(_, _, body)] = receiver.received
    if fmt == "json":
        assert body["summary"] == SUMMARY
    else:
        # No message: the head line, then the summary's lines, as they are.
        assert body["text"].splitlines()[1:] == SUMMARY.splitlines()


def test_details_never_carry_the_url_path_or_header_values(receiver: Receiver) -> None:
    r = notify(ARGS, ctx(receiver.url(), headers={"Authorization": "Bearer t0k"}))
    text = json.dumps(r.details)
    assert HOOK_PATH not in text and "t0k" not in text
    assert r.details["headers"] == ["Authorization"]


def test_an_unknown_notifier_fails() -> None:
    r = notify(NotifyArgs(notifier="pager"), ctx("http://127.0.0.1:1/"))
    assert r.outcome is Outcome.FAILED and "unknown notifier 'pager'" in r.reason
