"""The mail a ``format: mail`` notifier hands to the host's MTA (``sendmail -t -oi``).

Built with :mod:`email.message` (headers are checked: a line break in one is refused, not
sent), addressed to the notifier's ``to`` from the configuration alone, and written to the
program's standard input: an argv, never a shell.
"""

from __future__ import annotations

import socket
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from remediator.actions.base import ActionContext
from remediator.config import Notifier

SENDMAIL_ARGS = ("-t", "-oi")  # recipients from the headers; a lone "." does not end it


def argv(notifier: Notifier) -> list[str]:
    return [str(notifier.sendmail), *SENDMAIL_ARGS]


def message(notifier: Notifier, ctx: ActionContext, text: str | None) -> EmailMessage:
    """The mail: the step's message and the incident's summary, and how to read more."""
    host = socket.gethostname()
    msg = EmailMessage()
    msg["From"] = notifier.mail_from or f"remediator@{host}"
    msg["To"] = ", ".join(notifier.to)
    msg["Subject"] = f"[remediator] {host}: {ctx.playbook} (incident {ctx.incident})"
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid("remediator")
    msg["X-Remediator-Incident"] = ctx.incident
    msg["X-Remediator-Playbook"] = ctx.playbook
    body = [
        *([text, ""] if text else []),
        ctx.summary,
        "",
        f"host: {host}",
        f"playbook: {ctx.playbook}",
        f"incident: {ctx.incident}" + (f" (opened {ctx.opened_at})" if ctx.opened_at else ""),
        "",
        f"Every step, with its reason and evidence: remediator log --incident {ctx.incident}",
        f"The incident as a page (chart, steps, evidence): remediator report {ctx.incident}",
        *([f"  written when it closes: {ctx.report}"] if ctx.report else []),
    ]
    msg.set_content("\n".join(body) + "\n")
    return msg
