"""Every error-log rule's own samples give its cause, through that rule (rules as data)."""

from __future__ import annotations

import pytest

from remediator.causes import Cause
from remediator.sources.errorlog import ERROR_FORMATS, ErrorFormat
from remediator.sources.errorrules import ERRNO_CAUSE, errno_name

CASES = [
    (fmt, rule.name, sample, cause)
    for fmt in ERROR_FORMATS.values()
    for rule in fmt.rules
    for sample, cause in rule.samples
]


def test_every_rule_has_a_sample_with_a_cause() -> None:
    for fmt in ERROR_FORMATS.values():
        for rule in fmt.rules:
            assert any(c is not None for _, c in rule.samples), f"{fmt.name}/{rule.name}"


def test_rule_names_are_unique_within_a_format() -> None:
    for fmt in ERROR_FORMATS.values():
        names = [r.name for r in fmt.rules]
        assert len(names) == len(set(names)), fmt.name


@pytest.mark.parametrize(
    ("fmt", "rule", "sample", "cause"), CASES, ids=[f"{c[0].name}/{c[1]}" for c in CASES]
)
def test_a_rules_sample_gives_its_cause_through_that_rule(
    fmt: ErrorFormat, rule: str, sample: str, cause: Cause | None
) -> None:
    verdict = fmt.verdict(sample.encode())
    assert verdict.cause is cause
    assert verdict.rule == (f"{fmt.name}/{rule}" if cause is not None else None)


@pytest.mark.parametrize(
    ("number", "text", "name"),
    [
        (b"111", b"Connection refused", "ECONNREFUSED"),
        (b"61", b"Connection refused", "ECONNREFUSED"),  # FreeBSD's number, the same text
        (b"113", b"", "EHOSTUNREACH"),
        (b"70007", b"The timeout specified has expired", "APR_TIMEUP"),
        (b"9999", b"Something else", None),
    ],
)
def test_an_errno_is_known_by_its_text_then_its_linux_number(
    number: bytes, text: bytes, name: str | None
) -> None:
    assert errno_name(number, text) == name


def test_the_new_causes_come_from_their_errnos() -> None:
    assert ERRNO_CAUSE["EACCES"] is Cause.UPSTREAM_FORBIDDEN
    assert ERRNO_CAUSE["EHOSTUNREACH"] is Cause.UPSTREAM_UNREACHABLE
    assert ERRNO_CAUSE["ENETUNREACH"] is Cause.UPSTREAM_UNREACHABLE
