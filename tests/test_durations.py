"""parse_duration: the ChronicDuration strings GitLab accepts, and garbage refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from regops.durations import parse_duration
from regops.errors import ValidationError

DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # GitLab's allowed older_than and cadence values (container_expiration_policy.rb)
        ("7d", 7 * DAY),
        ("14d", 14 * DAY),
        ("30d", 30 * DAY),
        ("90d", 90 * DAY),
        ("1d", DAY),
        ("1month", 30 * DAY),  # ChronicDuration: a month is 30 days
        ("3month", 90 * DAY),
        # what the bulk delete API and GitLab's specs use
        ("1 day", DAY),
        ("1h", timedelta(hours=1)),
        ("1 hour", timedelta(hours=1)),
        ("2w", 14 * DAY),
        ("2 weeks", 14 * DAY),
        ("30m", timedelta(minutes=30)),
        ("30 min", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("1y", timedelta(seconds=31_557_600)),  # 365.25 days, as ChronicDuration
        ("2 months", 60 * DAY),
        # combinations and ChronicDuration's forms
        ("1 day 2 hours", DAY + timedelta(hours=2)),
        ("1d2h", DAY + timedelta(hours=2)),
        ("1 day, 2 hours", DAY + timedelta(hours=2)),
        ("1 day and 2 hours", DAY + timedelta(hours=2)),
        ("1.5h", timedelta(minutes=90)),
        ("day", DAY),
        ("1:30", timedelta(minutes=1, seconds=30)),
        ("1:00:00", timedelta(hours=1)),
        ("90", timedelta(seconds=90)),
        ("  7D  ", 7 * DAY),
    ],
)
def test_parses_what_gitlab_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "soon", "7 fortnights", "-7d", "0d", "d d", "1 2 days", "7d ago", "x" * 101],
)
def test_garbage_raises_validation_error_naming_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_duration(text, field="cadence")
    assert caught.value.field == "cadence"
    assert str(caught.value).startswith("cadence: ")


def test_default_field_is_older_than() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_duration("never")
    assert caught.value.field == "older_than"
    assert "never" in str(caught.value)


@pytest.mark.parametrize("value", [None, 7, 7.0, ["7d"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        parse_duration(value)  # type: ignore[arg-type]


def test_timedelta_passes_through_when_positive() -> None:
    assert parse_duration(timedelta(hours=3)) == timedelta(hours=3)
    with pytest.raises(ValidationError):
        parse_duration(timedelta(0))
