"""``utc`` and ``naive_utc``: the conversions every timestamp read from or written to the
ledger goes through (done by arithmetic from the epoch, for speed) must equal the obvious
``replace``/``astimezone`` ones, to the microsecond and at the edges of the calendar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dsar_scheduler.adapters.clock import naive_utc, utc

NAIVE = [
    datetime(2026, 3, 29, 1, 30, 15, 123456),
    datetime(1970, 1, 1),
    datetime(1969, 12, 31, 23, 59, 59, 999999),
    datetime(1, 1, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
]
OFFSETS = [UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=9, minutes=30))]


@pytest.mark.parametrize("value", NAIVE)
def test_a_naive_value_is_taken_as_utc(value: datetime) -> None:
    aware = utc(value)
    assert aware == value.replace(tzinfo=UTC)
    assert aware.tzinfo is UTC and aware.replace(tzinfo=None) == value
    assert naive_utc(aware) == value
    assert naive_utc(value) is value  # already naive UTC


@pytest.mark.parametrize("offset", OFFSETS)
def test_an_aware_value_is_converted_to_utc(offset: timezone) -> None:
    value = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=offset)
    assert utc(value) == value and utc(value).tzinfo is UTC
    assert naive_utc(value) == value.astimezone(UTC).replace(tzinfo=None)
    assert naive_utc(value).tzinfo is None
