"""regops.times: ISO text as GitLab, the registry's notifications and regops's records write it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from regops.errors import ValidationError
from regops.times import utc_now, utc_time

UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00.000Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),  # GitLab's API
        ("2024-05-01T12:00:00.123456+00:00", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),  # no offset: UTC
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_text_is_read_as_an_aware_time(text: str, expected: datetime):
    got = utc_time(text)
    assert got == expected and got.utcoffset() is not None


def test_a_datetime_without_offset_is_utc_and_an_aware_one_is_kept():
    assert utc_time(datetime(2024, 5, 1, 12)) == datetime(2024, 5, 1, 12, tzinfo=UTC)
    berlin = timezone(timedelta(hours=2))
    aware = datetime(2024, 5, 1, 14, tzinfo=berlin)
    assert utc_time(aware) is aware


@pytest.mark.parametrize("bad", ["yesterday", "", "2024-13-01T00:00:00Z"])
def test_unreadable_text_names_the_field(bad: str):
    with pytest.raises(ValidationError) as info:
        utc_time(bad, "next_run_at")
    assert info.value.field == "next_run_at"
    assert str(info.value) == f"next_run_at: not an ISO 8601 time: {bad!r}"


def test_now_is_aware_utc():
    before = datetime.now(UTC)
    now = utc_now()
    assert now.utcoffset() == timedelta(0) and before <= now <= datetime.now(UTC)
