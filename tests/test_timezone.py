"""Naming zones, printing times with their offset, noticing a wrong zone, reading operator times."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from remediator.timezone import Span, hour_skews, parse_zone, stamp
from remediator.when import parse_when

UTC = dt.UTC
T = dt.datetime(2026, 11, 24, 9, 26, 3, tzinfo=UTC).timestamp()


# ---- --tz ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "offset_h"),
    [("+01:00", 1), ("+0100", 1), ("+1", 1), ("-05:30", -5.5), ("-0530", -5.5),
     ("UTC+02:00", 2), ("UTC", 0), ("Z", 0), ("utc", 0)],
)  # fmt: skip
def test_an_offset_names_a_fixed_zone(text: str, offset_h: float) -> None:
    assert parse_zone(text).utcoffset(None) == dt.timedelta(hours=offset_h)


def test_an_iana_name_keeps_summer_time() -> None:
    paris = parse_zone("Europe/Paris")
    assert paris.utcoffset(dt.datetime(2026, 1, 1)) == dt.timedelta(hours=1)
    assert paris.utcoffset(dt.datetime(2026, 7, 1)) == dt.timedelta(hours=2)


@pytest.mark.parametrize("text", ["Mars/Olympus", "+25:00", "+01:75", "../../etc/passwd", ""])
def test_anything_else_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r"Europe/Paris|\+01:00"):
        parse_zone(text)


# ---- printing --------------------------------------------------------------------------------
def test_a_time_is_printed_with_its_offset() -> None:
    assert stamp(T, ZoneInfo("Europe/Paris")) == "2026-11-24 10:26:03 +01:00"
    assert stamp(T, UTC) == "2026-11-24 09:26:03 +00:00"
    assert stamp(T + 0.25, UTC, millis=True, date=False) == "09:26:03.250 +00:00"


# ---- two sources apart by a zone difference ------------------------------------------------------------
def test_an_error_log_an_hour_after_its_access_log_is_reported_with_the_zone_to_use() -> None:
    access = Span("web", T, T + 600, zoned=True)
    errors = Span("web_errors", T + 3600 + 2, T + 3600 + 590, zoned=False)
    (warning,) = hour_skews([errors, access], UTC)
    assert warning.startswith("web_errors (2026-11-24 10:26:05 +00:00 to ")
    assert "is 1 h after web (" in warning
    assert warning.endswith("(here perhaps --tz +01:00)")


def test_an_error_log_hours_before_says_a_zone_west_of_the_one_used() -> None:
    access = Span("web", T, T + 600, zoned=True)
    errors = Span("errors", T - 5 * 3600, T - 5 * 3600 + 600, zoned=False)
    (warning,) = hour_skews([access, errors], ZoneInfo("Europe/Paris"))
    assert "is 5 h before web" in warning and "--tz -04:00" in warning


def test_a_sparse_error_log_outside_the_access_log_is_reported() -> None:
    access = Span("web", T, T + 1800, zoned=True)
    errors = Span("errors", T + 3600 + 900, T + 3600 + 960, zoned=False)  # 15 min in, +1 h
    (warning,) = hour_skews([access, errors], UTC)
    assert "is 1 h after web" in warning


@pytest.mark.parametrize(
    ("minutes", "said", "zone"),
    [
        (330, "5 h 30 min after", "+05:30"),
        (345, "5 h 45 min after", "+05:45"),
        (-210, "3 h 30 min before", "-03:30"),
    ],
)
def test_zones_a_half_or_three_quarter_hour_off_are_reported_too(
    minutes: int, said: str, zone: str
) -> None:
    """An error log from a host in India (+05:30), Nepal (+05:45) or Newfoundland (-03:30)."""
    access = Span("web", T, T + 600, zoned=True)
    errors = Span("errors", T + minutes * 60 + 1, T + minutes * 60 + 598, zoned=False)
    (warning,) = hour_skews([access, errors], UTC)
    assert f"is {said} web" in warning and f"--tz {zone}" in warning


def test_a_quarter_or_half_hour_between_two_logs_is_no_zone() -> None:
    access = Span("web", T, T + 600, zoned=True)
    for minutes in (15, 30, 45, 75):
        errors = Span("errors", T + minutes * 60, T + minutes * 60 + 600, zoned=False)
        assert hour_skews([access, errors], UTC) == [], minutes


def test_sources_that_agree_say_nothing() -> None:
    access = Span("web", T, T + 86400, zoned=True)
    errors = Span("errors", T + 3600 + 20, T + 7200, zoned=False)  # inside the day: fine
    assert hour_skews([access, errors], UTC) == []
    assert hour_skews([access, Span("e", T + 3, T + 86390, zoned=False)], UTC) == []


def test_two_zoned_sources_are_never_blamed_on_a_zone() -> None:
    assert hour_skews([Span("a", T, T + 60, True), Span("b", T + 3600, T + 3660, True)]) == []


# ---- log --since / --until -------------------------------------------------------------------
NOW = dt.datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("14:41", dt.datetime(2026, 11, 24, 14, 41, tzinfo=UTC)),
        ("09:05:30", dt.datetime(2026, 11, 24, 9, 5, 30, tzinfo=UTC)),
        ("yesterday 14:00", dt.datetime(2026, 11, 23, 14, 0, tzinfo=UTC)),
        ("Yesterday", dt.datetime(2026, 11, 23, tzinfo=UTC)),
        ("today", dt.datetime(2026, 11, 24, tzinfo=UTC)),
        ("2h", dt.datetime(2026, 11, 24, 13, 0, tzinfo=UTC)),
        ("30m", dt.datetime(2026, 11, 24, 14, 30, tzinfo=UTC)),
        ("1h30m ago", dt.datetime(2026, 11, 24, 13, 30, tzinfo=UTC)),
        ("2026-11-24T09:26:00Z", dt.datetime(2026, 11, 24, 9, 26, tzinfo=UTC)),
        ("2026-11-24T10:26:00+01:00", dt.datetime(2026, 11, 24, 9, 26, tzinfo=UTC)),
        ("2026-11-24 09:26", dt.datetime(2026, 11, 24, 9, 26, tzinfo=UTC)),
        ("1764000000", dt.datetime.fromtimestamp(1764000000, UTC)),
        ("now", dt.datetime(2026, 11, 24, 15, 0, tzinfo=UTC)),
    ],
)
def test_an_operator_time_is_read(text: str, want: dt.datetime) -> None:
    assert parse_when(text, NOW, UTC) == want.timestamp()


def test_a_time_of_day_is_today_in_the_zone_given() -> None:
    paris = ZoneInfo("Europe/Paris")
    want = dt.datetime(2026, 11, 24, 14, 41, tzinfo=paris).timestamp()
    assert parse_when("14:41", NOW, paris) == want


@pytest.mark.parametrize("text", ["bogus", "14", "25:00", "14:61", "last tuesday", "2h later"])
def test_anything_else_is_not_a_time(text: str) -> None:
    with pytest.raises(ValueError, match=r"use e\.g\. 14:41"):
        parse_when(text, NOW, UTC)
