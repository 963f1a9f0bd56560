"""notify: POST the incident to a webhook, as JSON or as a Slack-compatible message.

Every format carries the incident's summary (``ActionContext.summary``: what tripped with its
counts, what was done, the outcome): the JSON payload as its ``summary`` key, Slack's text as
its last line.

A notification never blocks remediation and never raises: refused, timed out, non-2xx, all end
as ``Outcome.FAILED`` with a ``notify_failed`` log event. The POST goes through the system seam
(:meth:`remediator.system.System.post_json`), which gives up at the notifier's ``timeout``
whatever the endpoint does.

**Dry run sends nothing.** A notification is not a host change, but an operator trying the daemon
out with ``--dry-run`` should not page the on-call team about what it *would* have done; the
result is ``WOULD_RUN`` with the exact payload in ``details["payload"]`` (and ``"would"``).

Webhook URLs often carry their secret in the path (Slack's do), and headers may carry tokens
(both may come from root-only files: ``url_file``, ``headers_file``): the logs and details name
the notifier and the URL's scheme, host and port only, and header names without their values;
an error text (an endpoint may echo the request) has every secret replaced by ``[secret]``.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import structlog

from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import NotifyArgs
from remediator.config import Notifier
from remediator.secret import redact
from remediator.system import endpoint_of

log = structlog.get_logger(__name__)

SOURCE = "remediator"


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
    if notifier.url is None:  # loading fills it from url_file; never sent without one
        return _failed(args.notifier, None, f"notifier '{args.notifier}' has no URL", {})
    body = payload(notifier, args, ctx)
    details: dict[str, Any] = {
        "notifier": args.notifier,
        "endpoint": endpoint_of(notifier.url),
        "format": notifier.format,
    }
    if notifier.headers:
        details["headers"] = sorted(notifier.headers)
    details["payload"] = body
    mark = len(ctx.system.would)
    sent = ctx.system.post_json(notifier.url, body, notifier.headers, notifier.timeout)
    if sent.dry_run:
        details["would"] = [
            {"kind": w.kind, "notifier": args.notifier, "format": notifier.format, **w.detail}
            for w in ctx.system.would[mark:]
        ]
        reason = f"would notify {args.notifier} ({details['endpoint']}): not sent in a dry run"
        return ActionResult(Outcome.WOULD_RUN, reason, args.notifier, details)
    details["duration_ms"] = round(sent.duration * 1000, 1)
    if sent.error is not None:
        if sent.status is not None:
            details["status"] = sent.status
        return _failed(args.notifier, notifier, sent.error, details)
    details["status"] = sent.status
    return ActionResult(Outcome.OK, f"sent (HTTP {sent.status})", args.notifier, details)


def _failed(
    name: str, notifier: Notifier | None, error: str, details: dict[str, Any]
) -> ActionResult:
    endpoint = endpoint_of(notifier.url) if notifier is not None and notifier.url else None
    error = redact(error, notifier)
    log.warning("notify_failed", notifier=name, endpoint=endpoint, error=error)
    details["error"] = error
    return ActionResult(Outcome.FAILED, f"notification failed: {error}", name, details)


def _slack_escape(text: str) -> str:
    """Slack's three control characters: no `<!channel>` or link injected by summary text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


ACTIONS: dict[str, ActionFn] = {"notify": notify}
