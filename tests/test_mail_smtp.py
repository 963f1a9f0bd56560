"""Mail submitted over SMTP to the local MTA (``smtp: 127.0.0.1:25``): what works under the
shipped unit, whose hardening stops exim4's and postfix's set-ID sendmail (docs/monitoring.md).
A real SMTP server on loopback (tests/smtpcatch.py) takes or refuses it."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from remediator.actions.base import ActionContext, Outcome
from remediator.actions.declare import NotifyArgs
from remediator.actions.notify import notify
from remediator.config import Notifier
from remediator.system import DryRunSystem, System
from tests.smtpcatch import smtp_catcher
from tests.stack import free_port
from tests.wired import load_text

INCIDENT = "20261205T100000Z-abcdef"


def _ctx(mail: Notifier, system: System | None = None) -> ActionContext:
    return ActionContext(
        system=system or System(),
        services={},
        notifiers={"ops": mail},
        playbook="fpm-down",
        incident=INCIDENT,
        summary="fpm-down: 3 x 502 in 10s on access | done: restart fpm, verified",
        report=f"/var/lib/remediator/reports/{INCIDENT}.html",
    )


def _mail(address: str, *to: str) -> Notifier:
    return Notifier(format="mail", to=to or ("ops@example.com",), smtp=address, timeout=5)


def test_the_mail_is_submitted_to_the_local_mta_with_the_summary_and_the_page() -> None:
    with smtp_catcher() as mta:
        result = notify(
            NotifyArgs(notifier="ops", message="PHP-FPM down"), _ctx(_mail(mta.address))
        )
        assert result.outcome is Outcome.OK, result.reason
        (got,) = mta.mails
    assert got.recipients == ["ops@example.com"]
    assert got.sender.startswith("remediator@")
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert msg["Subject"].endswith(f"fpm-down (incident {INCIDENT})")
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "PHP-FPM down" in text and "3 x 502 in 10s" in text
    assert f"/var/lib/remediator/reports/{INCIDENT}.html" in text
    assert result.details["smtp"] == mta.address and "argv" not in result.details


def test_a_recipient_the_mta_refuses_fails_the_notification_with_its_words() -> None:
    with smtp_catcher(refuse=("ops@example.com",)) as mta:
        result = notify(NotifyArgs(notifier="ops"), _ctx(_mail(mta.address)))
    assert result.outcome is Outcome.FAILED
    assert result.reason.endswith(
        f"the MTA at {mta.address} did not take it: "
        "refused ops@example.com: 550 5.7.1 <ops@example.com>: relay not permitted"
    ), result.reason
    assert not mta.mails


def test_no_mta_listening_fails_at_once() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = notify(NotifyArgs(notifier="ops"), _ctx(_mail(address)))
    assert result.outcome is Outcome.FAILED
    assert "Connection refused" in result.reason or "ConnectionRefused" in result.reason


def test_a_dry_run_names_the_mta_and_sends_nothing() -> None:
    with smtp_catcher() as mta:
        result = notify(NotifyArgs(notifier="ops"), _ctx(_mail(mta.address), DryRunSystem()))
        assert result.outcome is Outcome.WOULD_RUN
        assert not mta.mails
    (would,) = result.details["would"]
    assert would["smtp"] == f"smtp://{mta.address}" and would["to"] == ["ops@example.com"]


def test_smtp_is_loopback_only_and_for_mail_only(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """\
        sources: {}
        notifiers:
          far: {format: mail, to: [ops@example.com], smtp: "192.0.2.25:25"}
          hook: {url: "http://127.0.0.1:9/x", smtp: "127.0.0.1:25"}
          fine: {format: mail, to: [ops@example.com], smtp: "[::1]:25"}
        """,
    )
    errors = [str(e) for e in loaded.all_errors()]
    assert len(errors) == 2, errors
    assert any(":3:" in e and "not on this host" in e for e in errors), errors
    assert any(":4:" in e and "only for format: mail" in e for e in errors), errors
