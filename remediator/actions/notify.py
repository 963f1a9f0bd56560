"""notify: POST the incident to a webhook (JSON or a Slack-compatible message), to
Alertmanager (its v2 API: :mod:`remediator.actions.alertmanager`), or mail it through the host's
MTA (``sendmail -t``: :mod:`remediator.actions.mail`).

Every format carries the incident's summary (``ActionContext.summary``: what tripped with its
counts, what was done, the outcome): the JSON payload as its ``summary`` key, Slack's text as
its last line, Alertmanager's alert as its ``summary`` annotation, the mail in its body; and,
when the daemon writes incident pages, the page's path (``report``). An
Alertmanager alert is resolved (``endsAt``) when the incident closes: :func:`resolve`.

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

from remediator.actions import alertmanager, mail
from remediator.actions.base import ActionContext, ActionFn, ActionResult, Outcome
from remediator.actions.declare import NotifyArgs
from remediator.config import Notifier, split_listen
from remediator.secret import redact
from remediator.system import endpoint_of

log = structlog.get_logger(__name__)

SOURCE = "remediator"


def payload(notifier: Notifier, args: NotifyArgs, ctx: ActionContext) -> Any:
    """What the notifier receives, in its format."""
    hostname = socket.gethostname()
    if notifier.format == "alertmanager":
        return alertmanager.alerts(notifier, ctx, args.message)
    if notifier.format == "slack":
        head = f"[{SOURCE}] {hostname}: playbook {ctx.playbook}, incident {ctx.incident}"
        page = f"page: {ctx.report}" if ctx.report else ""
        lines = [head, *(t for t in (args.message, ctx.summary, page) if t)]
        return {"text": _slack_escape("\n".join(lines))}
    return {
        "source": SOURCE,
        "playbook": ctx.playbook,
        "incident": ctx.incident,
        "message": args.message,
        "summary": ctx.summary,
        "host": hostname,
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    } | ({"report": ctx.report} if ctx.report else {})


def notify(args: NotifyArgs, ctx: ActionContext) -> ActionResult:
    """Send one notification; FAILED (logged) rather than raise or wait past the timeout."""
    notifier = ctx.notifiers.get(args.notifier)
    if notifier is None:
        return _failed(args.notifier, None, f"unknown notifier '{args.notifier}'", {})
    if notifier.format == "mail":
        return _mail(args.notifier, notifier, args, ctx)
    return _post(args.notifier, notifier, payload(notifier, args, ctx), ctx)


def resolve(names: list[str], ctx: ActionContext) -> list[tuple[str, ActionResult]]:
    """The incident closed: resolve its alert at each Alertmanager notifier it fired on."""
    out = []
    for name in names:
        notifier = ctx.notifiers.get(name)
        if notifier is None or notifier.format != "alertmanager":
            continue
        try:
            body = alertmanager.alerts(notifier, ctx, None, resolved=True)
            out.append((name, _post(name, notifier, body, ctx)))
        except Exception as exc:  # a notification must never take the daemon down
            out.append((name, ActionResult(Outcome.FAILED, f"resolve crashed: {exc}", name)))
    return out


def _post(name: str, notifier: Notifier, body: Any, ctx: ActionContext) -> ActionResult:
    if notifier.url is None:  # loading fills it from url_file; never sent without one
        return _failed(name, None, f"notifier '{name}' has no URL", {})
    url = (
        alertmanager.alerts_url(notifier.url) if notifier.format == "alertmanager" else notifier.url
    )
    details: dict[str, Any] = {
        "notifier": name,
        "endpoint": endpoint_of(notifier.url),
        "format": notifier.format,
    }
    if notifier.headers:
        details["headers"] = sorted(notifier.headers)
    details["payload"] = body
    mark = len(ctx.system.would)
    sent = ctx.system.post_json(url, body, notifier.headers, notifier.timeout)
    if sent.dry_run:
        details["would"] = [
            {"kind": w.kind, "notifier": name, "format": notifier.format, **w.detail}
            for w in ctx.system.would[mark:]
        ]
        reason = f"would notify {name} ({details['endpoint']}): not sent in a dry run"
        return ActionResult(Outcome.WOULD_RUN, reason, name, details)
    details["duration_ms"] = round(sent.duration * 1000, 1)
    if sent.error is not None:
        if sent.status is not None:
            details["status"] = sent.status
        return _failed(name, notifier, sent.error, details)
    details["status"] = sent.status
    return ActionResult(Outcome.OK, f"sent (HTTP {sent.status})", name, details)


def _mail(name: str, notifier: Notifier, args: NotifyArgs, ctx: ActionContext) -> ActionResult:
    """Hand the mail to ``sendmail -t``, or submit it over SMTP to the local MTA (``smtp``);
    FAILED with sendmail's exit status and output, or the server's refusal."""
    argv = mail.argv(notifier)
    try:
        msg = mail.message(notifier, ctx, args.message)
        data = bytes(msg)
    except (ValueError, TypeError) as exc:  # a header the email package refuses to write
        return _failed(name, notifier, f"cannot build the mail: {exc}", {"format": "mail"})
    details: dict[str, Any] = {
        "notifier": name,
        "format": "mail",
        "to": list(notifier.to),
        "subject": str(msg["Subject"]),
    }
    mark = len(ctx.system.would)
    if notifier.smtp is not None:
        server = split_listen(notifier.smtp)
        details["smtp"] = notifier.smtp
        ran = ctx.system.submit_mail(server, data, str(msg["From"]), notifier.to, notifier.timeout)
        via = f"the MTA at {notifier.smtp}"
    else:
        details["argv"] = argv
        ran = ctx.system.send_mail(argv, data, notifier.to, notifier.timeout)
        via = "sendmail"
    if ran.dry_run:
        details["would"] = [
            {"kind": w.kind, "notifier": name, **w.detail} for w in ctx.system.would[mark:]
        ]
        reason = f"would mail {', '.join(notifier.to)}: not sent in a dry run"
        return ActionResult(Outcome.WOULD_RUN, reason, name, details)
    details["duration_ms"] = round(ran.duration * 1000, 1)
    if not ran.ok:
        details["returncode"] = ran.returncode
        details["output"] = ran.output[:300]
        if ran.timed_out:
            why = f"{via} timed out after {notifier.timeout:g}s"
        elif notifier.smtp is not None:
            why = f"{via} did not take it: {ran.output.strip()[:200]}"
        else:
            why = f"sendmail exited {ran.returncode}: {ran.output.strip()[:200]}".rstrip(": ")
        return _failed(name, notifier, why, details)
    return ActionResult(Outcome.OK, f"mailed {', '.join(notifier.to)}", name, details)


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
