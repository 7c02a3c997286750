from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from dsar_scheduler.core.deadlines import Deadline
from dsar_scheduler.core.validation import Accepted, RawQueueRow, Rejected, check, validate

TODAY = date(2026, 1, 5)
MISSING = "amplitude_id is missing (a row names its subject by amplitude_id, user_id or both)"


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
        ((None, "2025-01-01", "2025-01-02"), MISSING),
        (("", "2025-01-01", "2025-01-02"), MISSING),
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


# -- the deadline: regime and received_at (``check``) ----------------------------------------

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def timed(
    regime: str | None = None, received: str | None = None, created: str | None = None
) -> RawQueueRow:
    return RawQueueRow(1, "123", "2025-01-01", "2025-12-31", None, None, regime, received, created)


@pytest.mark.parametrize(
    ("row", "regime", "received", "due"),
    [
        # received_at given, naive UTC as the queue holds it (each database's rendering)
        (timed("gdpr", "2026-01-02 08:00:00"), "gdpr", "2026-01-02 08:00", "2026-02-02"),
        (
            timed("ccpa", "2026-01-02 08:00:00.123456"),
            "ccpa",
            "2026-01-02 08:00:00.123456",
            "2026-02-16",
        ),
        (timed("CCPA", "2026-01-02T08:00:00Z"), "ccpa", "2026-01-02 08:00", "2026-02-16"),
        (timed("gdpr", "2026-01-02T01:00:00+02:00"), "gdpr", "2026-01-01 23:00", "2026-02-01"),
        (timed("gdpr", "2025-12-31"), "gdpr", "2025-12-31 00:00", "2026-01-31"),
        # no regime: the default (gdpr here)
        (timed(None, "2026-01-02 08:00:00"), "gdpr", "2026-01-02 08:00", "2026-02-02"),
        (timed("", "2026-01-02 08:00:00"), "gdpr", "2026-01-02 08:00", "2026-02-02"),
        # no received_at: when the row was inserted
        (timed("vcdpa", None, "2026-01-04 10:00:00"), "vcdpa", "2026-01-04 10:00", "2026-02-18"),
        (timed("vcdpa", "  ", "2026-01-04 10:00:00"), "vcdpa", "2026-01-04 10:00", "2026-02-18"),
        # nor that (or it is ahead of the service's clock): admission time
        (timed("cpa"), "cpa", "2026-01-05 09:00", "2026-02-19"),
        (timed("cpa", None, "2026-12-05 23:00:00"), "cpa", "2026-01-05 09:00", "2026-02-19"),
        (timed("cpa", None, "garbage"), "cpa", "2026-01-05 09:00", "2026-02-19"),
        # a little ahead of the clock: taken as it is
        (timed("gdpr", "2026-01-05 09:04:00"), "gdpr", "2026-01-05 09:04", "2026-02-05"),
    ],
)
def test_an_accepted_row_gets_its_deadline(
    row: RawQueueRow, regime: str, received: str, due: str
) -> None:
    verdict = check(row, NOW, 731, "gdpr")
    assert isinstance(verdict, Accepted)
    assert (verdict.amplitude_id, verdict.start, verdict.end) == (
        123,
        date(2025, 1, 1),
        date(2025, 12, 31),
    )
    assert verdict.deadline == Deadline(
        regime,
        datetime.fromisoformat(received).replace(tzinfo=UTC),
        datetime.fromisoformat(f"{due} 23:59:59.999999").replace(tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (timed("lgpd"), "regime 'lgpd' is not one of: ccpa, gdpr, vcdpa, cpa, icdpa, ocpa, ucpa"),
        (timed("GDPR-UK"), "regime 'gdpr-uk' is not one of: ccpa, gdpr,"),
        (timed("gdpr", "yesterday"), "received_at is not a date and time (ISO 8601, UTC): "),
        (timed("gdpr", "2026-02-30 10:00"), "received_at is not a date and time"),
        (timed("gdpr", "0001-01-01T00:00:00+05:00"), "received_at is not a date and time"),
        (
            timed("gdpr", "2026-01-05 09:06:00"),
            "received_at 2026-01-05 09:06:00 UTC is in the future (the service's clock says "
            "2026-01-05 09:00:00 UTC)",
        ),
        (timed("gdpr", "2026-01-05T10:00:00-02:00"), "received_at 2026-01-05 12:00:00 UTC is"),
    ],
)
def test_a_bad_regime_or_received_at_rejects_the_row(row: RawQueueRow, reason: str) -> None:
    verdict = check(row, NOW, 731, "gdpr")
    assert isinstance(verdict, Rejected)
    assert verdict.reason.startswith(reason)


def test_the_subject_and_dates_are_checked_first() -> None:
    row = RawQueueRow(1, "abc", "2025-01-01", "2025-12-31", None, None, "lgpd", "yesterday")
    assert check(row, NOW, 731, "gdpr") == Rejected("amplitude_id is not an integer: 'abc'")


def test_validate_alone_works_out_no_deadline() -> None:
    assert validate(timed("ccpa", "2026-01-02"), NOW.date(), 731) == Accepted(
        123, date(2025, 1, 1), date(2025, 12, 31)
    )


def kind(
    request_type: str | None,
    user_id: str | None = None,
    amplitude_id: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> RawQueueRow:
    return RawQueueRow(
        1, amplitude_id, start, end, None, None, request_type=request_type, user_id=user_id
    )


JAN = ("2025-01-01", "2025-01-31")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # the minimal insert is unchanged: an access request by Amplitude ID
        (kind(None, None, "5", *JAN), Accepted(5, date(2025, 1, 1), date(2025, 1, 31))),
        (kind("", None, "5", *JAN), Accepted(5, date(2025, 1, 1), date(2025, 1, 31))),
        # by user ID alone; the ID kept as given, case included, outer spaces dropped
        (
            kind("Access", " Alice@Example.com ", None, *JAN),
            Accepted(None, date(2025, 1, 1), date(2025, 1, 31), user_id="Alice@Example.com"),
        ),
        # both
        (
            kind("access", "alice", "5", *JAN),
            Accepted(5, date(2025, 1, 1), date(2025, 1, 31), user_id="alice"),
        ),
        # a deletion needs no dates, and bad ones are not its concern
        (
            kind("deletion", "alice"),
            Accepted(None, None, None, request_type="deletion", user_id="alice"),
        ),
        (
            kind("DELETION", None, "5", "yesterday", None),
            Accepted(5, None, None, request_type="deletion"),
        ),
        (
            kind("access_and_deletion", "alice", None, *JAN),
            Accepted(
                None,
                date(2025, 1, 1),
                date(2025, 1, 31),
                request_type="access_and_deletion",
                user_id="alice",
            ),
        ),
        # rejections, each with its reason
        (
            kind("erase", "alice"),
            Rejected("request_type 'erase' is not one of access, deletion, access_and_deletion"),
        ),
        (kind("deletion"), Rejected(MISSING)),
        (kind("deletion", "  "), Rejected(MISSING)),
        # a user ID does not excuse a bad Amplitude ID beside it
        (kind("deletion", "alice", "abc"), Rejected("amplitude_id is not an integer: 'abc'")),
        (kind("deletion", "x" * 1025), Rejected("user_id is longer than 1024 characters")),
        # access still needs its dates, whoever the subject is
        (kind("access_and_deletion", "alice"), Rejected("start_date is missing")),
    ],
)
def test_request_types_and_subjects(raw: RawQueueRow, expected: Accepted | Rejected) -> None:
    assert validate(raw, TODAY, 731) == expected


def test_a_deletion_without_project_keys_is_rejected_with_why() -> None:
    for request_type in ("deletion", "access_and_deletion"):
        verdict = check(kind(request_type, "alice", None, *JAN), NOW, 731, "gdpr", False)
        assert isinstance(verdict, Rejected) and "DSAR_PROJECTS_FILE" in verdict.reason
    assert isinstance(check(kind(None, "alice", None, *JAN), NOW, 731, "gdpr", False), Accepted)
