"""notify: POST the incident to a webhook, as JSON or as a Slack-compatible message.

A notification never blocks remediation and never raises: refused, timed out, non-2xx, all end
as ``Outcome.FAILED`` with a ``notify_failed`` log event. The POST runs in a daemon thread that
the caller waits on for at most the notifier's ``timeout`` (``requests``' own timeouts are per
socket operation, and the name lookup before them has none), so the step takes no longer than
that, whatever the endpoint does.

**Dry run sends nothing.** A notification is not a host change, but an operator trying the daemon
out with ``--dry-run`` should not page the on-call team about what it *would* have done; the
result is ``WOULD_RUN`` with the exact payload in ``details["would"]``.

Webhook URLs often carry their secret in the path (Slack's do), and headers may carry tokens:
the logs and details name the notifier and the URL's scheme, host and port only, and header
names without their values.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import structlog

from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import NotifyArgs
from remediator.config import Notifier

log = structlog.get_logger(__name__)

SOURCE = "remediator"
BODY_EXCERPT = 300


def payload(notifier: Notifier, args: NotifyArgs, ctx: ActionContext) -> dict[str, Any]:
    """What the notifier receives, in its format."""
    hostname = socket.gethostname()
    if notifier.format == "slack":
        head = f"[{SOURCE}] {hostname}: playbook {ctx.playbook}, incident {ctx.incident}"
        lines = [head, *(t for t in (args.message, ctx.summary) if t)]
        return {"text": _slack_escape("\n".join(lines))}
    return {
        "source": SOURCE,
        "playbook": ctx.playbook,
        "incident": ctx.incident,
        "message": args.message,
        "summary": ctx.summary,
        "host": hostname,
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def notify(args: NotifyArgs, ctx: ActionContext) -> ActionResult:
    """Send one notification; FAILED (logged) rather than raise or wait past the timeout."""
    notifier = ctx.notifiers.get(args.notifier)
    if notifier is None:
        return _failed(args.notifier, None, f"unknown notifier '{args.notifier}'", {})
    body = payload(notifier, args, ctx)
    details: dict[str, Any] = {"endpoint": _endpoint(notifier.url), "format": notifier.format}
    if notifier.headers:
        details["headers"] = sorted(notifier.headers)
    if ctx.system.dry_run:
        details["would"] = [{"kind": "notify", **details, "payload": body}]
        return ActionResult(Outcome.WOULD_RUN, "dry run: not sent", args.notifier, details)
    details["payload"] = body
    start = time.monotonic()
    status, error = _post(notifier, body)
    details["duration_ms"] = round((time.monotonic() - start) * 1000, 1)
    if error is not None:
        return _failed(args.notifier, notifier, error, details)
    details["status"] = status
    return ActionResult(Outcome.OK, f"sent (HTTP {status})", args.notifier, details)


def _post(notifier: Notifier, body: dict[str, Any]) -> tuple[int | None, str | None]:
    """(status, None) on a 2xx answer within the timeout, else (status or None, why not)."""
    # Imported here: requests costs ~7 MiB of RSS, paid only once a notification is sent.
    import requests  # noqa: PLC0415

    box: list[tuple[int | None, str | None]] = []

    def send() -> None:
        try:
            resp = requests.post(
                notifier.url,
                json=body,
                headers=notifier.headers,
                timeout=notifier.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            box.append((None, f"timed out after {notifier.timeout:g}s"))
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
    thread.join(notifier.timeout)
    if not box:  # still waiting: abandon it (it ends at requests' own timeouts)
        return None, f"timed out after {notifier.timeout:g}s"
    return box[0]


def _failed(
    name: str, notifier: Notifier | None, error: str, details: dict[str, Any]
) -> ActionResult:
    endpoint = _endpoint(notifier.url) if notifier is not None else None
    log.warning("notify_failed", notifier=name, endpoint=endpoint, error=error)
    details["error"] = error
    return ActionResult(Outcome.FAILED, f"notification failed: {error}", name, details)


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


def _endpoint(url: str) -> str:
    """scheme://host:port of ``url``: no path, query or credentials (they may hold secrets)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def _slack_escape(text: str) -> str:
    """Slack's three control characters: no `<!channel>` or link injected by summary text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


ACTIONS: dict[str, ActionFn] = {"notify": notify}
