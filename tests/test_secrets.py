"""Notifier secrets: ``url_file`` and ``headers_file`` (root's alone), ``check``'s warning about
tokens in a file others can read, and secrets never printed."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from remediator.actions.base import ActionContext, Outcome
from remediator.actions.declare import NotifyArgs
from remediator.actions.notify import notify
from remediator.cli import main
from remediator.config import Notifier
from remediator.load import load
from remediator.secret import redact, url_secret
from remediator.system import System
from tests.webhook import HOOK_PATH, receiving

TOKEN = "xoxb-s3cr3t-T0KEN"  # noqa: S105 - a fake token, to be found in outputs
BASE = """\
sources:
  access: {type: access_log, path: access.log}
notifiers:
"""


def _setup(tmp_path: Path, notifier: str, *, mode: int = 0o640) -> Path:
    (tmp_path / "playbooks.d").mkdir(exist_ok=True)
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(BASE + notifier)
    cfg.chmod(mode)
    return cfg


def _secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


def test_url_file_and_headers_file_fill_the_notifier(tmp_path: Path) -> None:
    _secret_file(tmp_path / "hook.url", f"https://hooks.slack.com/services/T0/B0/{TOKEN}\n")
    _secret_file(tmp_path / "hook.headers", f"# the API's token\nAuthorization: Bearer {TOKEN}\n")
    cfg = _setup(
        tmp_path,
        "  ops: {url_file: hook.url, headers_file: hook.headers, headers: {X-Team: ops}}\n",
    )
    loaded = load(cfg)
    assert loaded.ok, loaded.all_errors()
    assert loaded.config is not None
    ops = loaded.config.notifiers["ops"]
    assert ops.url == f"https://hooks.slack.com/services/T0/B0/{TOKEN}"
    assert ops.headers == {"X-Team": "ops", "Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("mode", "gid"), [(0o644, 0), (0o640, 4), (0o604, 0), (0o660, 0)])
def test_a_secrets_file_others_can_read_is_refused_without_showing_it(
    tmp_path: Path, mode: int, gid: int
) -> None:
    hook = _secret_file(tmp_path / "hook.url", f"https://hooks.slack.com/services/{TOKEN}\n", mode)
    os.chown(hook, 0, gid)
    cfg = _setup(tmp_path, "  ops: {url_file: hook.url}\n")
    rc, out, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert f"{cfg}:4:19: notifiers.ops.url_file: refusing to use {hook}:" in err
    assert "fix with: chown root:root" in err or "chmod go-w" in err
    assert TOKEN not in out + err


def test_a_secrets_file_0640_with_group_root_is_accepted(tmp_path: Path) -> None:
    _secret_file(tmp_path / "hook.url", "https://example.com/x\n", 0o640)
    assert load(_setup(tmp_path, "  ops: {url_file: hook.url}\n")).ok


def test_a_url_file_that_is_not_a_url_is_an_error_that_never_quotes_it(tmp_path: Path) -> None:
    _secret_file(tmp_path / "hook.url", f"ftp://{TOKEN}@example.com/\n")
    rc, out, err = run("-c", str(_setup(tmp_path, "  ops: {url_file: hook.url}\n")), "check")
    assert rc == 2
    assert "notifiers.ops.url_file: must hold one http:// or https:// URL" in err
    assert TOKEN not in out + err


def test_a_bad_headers_line_is_located_by_number_only(tmp_path: Path) -> None:
    _secret_file(tmp_path / "h", f"Authorization {TOKEN}\n")
    cfg = _setup(tmp_path, "  ops: {url: 'https://example.com/', headers_file: h}\n")
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 2
    assert "notifiers.ops.headers_file: line 1 is not a 'Name: value' header" in err
    assert TOKEN not in err


def test_url_and_url_file_are_exclusive(tmp_path: Path) -> None:
    _secret_file(tmp_path / "hook.url", "https://example.com/x\n")
    cfg = _setup(tmp_path, "  ops: {url: 'https://example.com/', url_file: hook.url}\n")
    [error] = load(cfg).all_errors()
    assert error.key == "notifiers.ops.url"


def test_check_warns_about_a_tokened_url_in_a_world_readable_config(tmp_path: Path) -> None:
    cfg = _setup(
        tmp_path,
        f"  ops: {{url: 'https://hooks.slack.com/services/T0/B0/{TOKEN}', "
        f"headers: {{Authorization: 'Bearer {TOKEN}'}}}}\n",
        mode=0o644,
    )
    rc, out, err = run("-c", str(cfg), "check")
    assert rc == 0
    assert (
        f"warning: {cfg}:4:14: notifiers.ops.url: this URL carries a webhook token in its path, "
        "and this file is readable by everyone (mode 0644): move it to url_file"
    ) in err
    assert "notifiers.ops.headers.Authorization: header 'Authorization' carries a credential" in err
    assert TOKEN not in out + err


def test_no_warning_when_the_config_is_0640(tmp_path: Path) -> None:
    cfg = _setup(tmp_path, f"  ops: {{url: 'https://hooks.slack.com/services/{TOKEN}'}}\n")
    rc, _, err = run("-c", str(cfg), "check")
    assert rc == 0
    assert "carries" not in err


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("https://user:pw@example.com/hook", "a user and password"),
        ("https://example.com/hook?token=abc", "a 'token' query parameter"),
        ("https://example.com/hook?api_key=abc", "a 'api_key' query parameter"),
        ("https://hooks.slack.com/services/T/B/x", "a webhook token in its path"),
        ("https://discord.com/api/webhooks/1/x", "a webhook token in its path"),
        ("https://alerts.example.com/remediator", None),
    ],
)
def test_url_secret_spots_tokens(url: str, what: str | None) -> None:
    assert url_secret(url) == what


def test_a_failed_notification_never_shows_the_secrets(tmp_path: Path) -> None:
    """The endpoint echoes the request's token in its error answer: the reason is redacted."""
    with receiving(500) as rx:
        url = rx.url(HOOK_PATH)
        notifier = Notifier(url=url, headers={"Authorization": f"Bearer {TOKEN}"})
        error = f"HTTP 500: bad token Bearer {TOKEN} for {url}"
        assert TOKEN not in redact(error, notifier)
        assert HOOK_PATH not in redact(error, notifier)
        ctx = ActionContext(
            system=System(),
            services={},
            notifiers={"ops": notifier},
            playbook="p",
            incident="i",
        )
        result = notify(NotifyArgs(notifier="ops"), ctx)
    assert result.outcome is Outcome.FAILED
    text = repr(result)
    assert TOKEN not in text
    assert HOOK_PATH not in text
