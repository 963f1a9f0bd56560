"""The alert a ``format: alertmanager`` notifier POSTs to Alertmanager's v2 API.

One alert per incident, named ``RemediatorIncident`` and told apart by its labels (the host,
the playbook, the incident's id, and the notifier's own ``labels``): Alertmanager groups,
routes, silences and inhibits it like any other. It fires when a step or ``on_exhausted``
notifies, and is sent again with ``endsAt`` when the incident closes, which resolves it. The
summary and the step's message are annotations. Every value comes from the configuration and
the engine (names, counts, outcomes), never from a log line.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from remediator.actionlog import now_rfc3339
from remediator.actions.base import ActionContext
from remediator.config import Notifier

ALERTNAME = "RemediatorIncident"
API_PATH = "/api/v2/alerts"


def alerts_url(base: str) -> str:
    """Alertmanager's ``/api/v2/alerts`` under ``base`` (its address, maybe behind a path
    prefix); a URL naming that path already is kept."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    if not path.endswith(API_PATH):
        path += API_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def alerts(
    notifier: Notifier, ctx: ActionContext, message: str | None, *, resolved: bool = False
) -> list[dict[str, Any]]:
    """The body: a list of one alert, firing, or ``resolved`` (``endsAt`` now)."""
    labels = {
        **notifier.labels,
        "alertname": ALERTNAME,
        "host": socket.gethostname(),
        "playbook": ctx.playbook,
        "incident": ctx.incident,
    }
    annotations = {
        "summary": ctx.summary,
        "runbook": f"remediator log --incident {ctx.incident}; remediator report {ctx.incident}",
    }
    if ctx.report:
        annotations["report"] = ctx.report
    if message:
        annotations["description"] = message
    alert: dict[str, Any] = {"labels": labels, "annotations": annotations}
    if ctx.opened_at:
        alert["startsAt"] = ctx.opened_at
    if resolved:
        alert["endsAt"] = now_rfc3339()
    return [alert]
