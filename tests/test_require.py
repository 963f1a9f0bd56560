"""A host that lacks what a test needs: a skip, or a failure when the run requires it."""

from __future__ import annotations

import pytest

from tests.require import ENV, lacking, required


def test_lacking_skips_with_the_reason_when_not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no systemd here: needs root"):
        lacking("systemd", "needs root")


def test_lacking_fails_with_the_reason_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "userns, systemd")
    with pytest.raises(pytest.fail.Exception, match=r"includes systemd, .*: needs root"):
        lacking("systemd", "needs root")


def test_only_what_is_named_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "systemd")
    assert required() == {"systemd"}
    with pytest.raises(pytest.skip.Exception):
        lacking("userns", "max_user_namespaces is 0")


def test_a_misspelt_requirement_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "sytemd")
    with pytest.raises(ValueError, match=r"unknown \['sytemd'\]; known: systemd, userns"):
        required()
