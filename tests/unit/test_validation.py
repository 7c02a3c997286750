from __future__ import annotations

from datetime import date

import pytest

from dsar_scheduler.core.validation import Accepted, RawQueueRow, Rejected, validate

TODAY = date(2026, 1, 5)


def row(
    amplitude_id: str | None = "123",
    start: str | None = "2025-01-01",
    end: str | None = "2025-12-31",
) -> RawQueueRow:
    return RawQueueRow(1, amplitude_id, start, end, None, None)


def test_a_good_row_is_accepted() -> None:
    assert validate(row(), TODAY, 731) == Accepted(123, date(2025, 1, 1), date(2025, 12, 31))


def test_integral_real_and_time_suffix_are_accepted() -> None:
    verdict = validate(row("123.0", "2025-01-01 00:00:00", "2025-02-01T00:00"), TODAY, 731)
    assert verdict == Accepted(123, date(2025, 1, 1), date(2025, 2, 1))


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ((None, "2025-01-01", "2025-01-02"), "amplitude_id is missing"),
        (("", "2025-01-01", "2025-01-02"), "amplitude_id is missing"),
        (("0", "2025-01-01", "2025-01-02"), "amplitude_id must be positive"),
        (("-5", "2025-01-01", "2025-01-02"), "amplitude_id must be positive"),
        (("abc", "2025-01-01", "2025-01-02"), "amplitude_id is not an integer"),
        (("1.5", "2025-01-01", "2025-01-02"), "amplitude_id is not an integer"),
        (("99999999999999999999", "2025-01-01", "2025-01-02"), "larger than a 64-bit"),
        (("1", None, "2025-01-02"), "start_date is missing"),
        (("1", "yesterday", "2025-01-02"), "start_date is not a date"),
        (("1", "2025-02-30", "2025-03-02"), "start_date is not a valid calendar date"),
        (("1", "2025-01-01 12:00", "2025-03-02"), "start_date is not a date"),
        (("1", "2025-01-01", "soon"), "end_date is not a date"),
        (("1", "2025-03-01", "2025-01-01"), "end_date 2025-01-01 is before start_date"),
        (("1", "2026-02-01", "2026-03-01"), "start_date 2026-02-01 is in the future"),
        (("1", "2020-01-01", "2025-01-01"), "longer than the 731 days allowed"),
    ],
)
def test_bad_rows_are_rejected_with_a_reason(values: tuple[str | None, ...], reason: str) -> None:
    verdict = validate(row(*values), TODAY, 731)
    assert isinstance(verdict, Rejected)
    assert reason in verdict.reason


def test_end_in_the_future_is_allowed() -> None:
    assert isinstance(validate(row("1", "2025-06-01", "2026-06-01"), TODAY, 731), Accepted)
