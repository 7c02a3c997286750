"""The due-date arithmetic (``core.deadlines``), by table: month ends, leap years, each regime,
the one extension, the shares of the time gone, and the regime names upstream may write."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from dsar_scheduler.core.deadlines import (
    REGIMES,
    Deadline,
    Period,
    Regime,
    add_months,
    deadline_for,
    elapsed_share,
    extend,
    extension_until,
    outcome,
    regime_named,
)


def at(text: str) -> datetime:
    """A UTC time from ``YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def end_of(day: str) -> datetime:
    return at(f"{day} 23:59:59.999999")


def regime(name: str) -> Regime:
    found = regime_named(name, "gdpr")
    assert isinstance(found, Regime), found
    return found


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2026, 1, 15), 1, date(2026, 2, 15)),
        (date(2027, 1, 31), 1, date(2027, 2, 28)),  # no 31 February: its last day
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # a leap year
        (date(2100, 1, 31), 1, date(2100, 2, 28)),  # a century, not a leap year
        (date(2000, 1, 31), 1, date(2000, 2, 29)),  # every 400 years, a leap year
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 8, 31), 1, date(2026, 9, 30)),
        (date(2026, 12, 31), 1, date(2027, 1, 31)),  # across the year
        (date(2026, 12, 15), 2, date(2027, 2, 15)),
        (date(2027, 2, 28), 1, date(2027, 3, 28)),  # never "the end of the month"
        (date(2027, 1, 31), 3, date(2027, 4, 30)),
        (date(2026, 5, 10), 0, date(2026, 5, 10)),
    ],
)
def test_calendar_months_keep_the_date_or_take_the_last_day(
    start: date, months: int, expected: date
) -> None:
    assert add_months(start, months) == expected


@pytest.mark.parametrize(
    ("name", "received", "due"),
    [
        # GDPR: one calendar month, to the end of the due day (UTC)
        ("gdpr", "2026-01-15 10:30", "2026-02-15"),
        ("gdpr", "2027-01-31 08:00", "2027-02-28"),
        ("gdpr", "2028-01-31 08:00", "2028-02-29"),
        ("gdpr", "2026-01-31 23:59:59", "2026-02-28"),  # late on the day: the same day
        ("gdpr", "2026-12-31 00:00", "2027-01-31"),
        ("gdpr", "2028-02-29 12:00", "2028-03-29"),
        # 45 calendar days: CCPA, Virginia, Colorado, Oregon, Utah
        ("ccpa", "2026-01-01 09:00", "2026-02-15"),
        ("ccpa", "2027-12-20 00:00", "2028-02-03"),
        ("ccpa", "2028-01-20 00:00", "2028-03-05"),  # through 29 February
        ("vcdpa", "2026-01-01 09:00", "2026-02-15"),
        ("cpa", "2026-01-01 09:00", "2026-02-15"),
        ("ocpa", "2026-01-01 09:00", "2026-02-15"),
        ("ucpa", "2026-01-01 09:00", "2026-02-15"),
        # Iowa: 90 days
        ("icdpa", "2026-01-01 09:00", "2026-04-01"),
    ],
)
def test_each_regimes_due_date(name: str, received: str, due: str) -> None:
    deadline = deadline_for(regime(name), at(received))
    assert deadline == Deadline(name, at(received), end_of(due))
    assert deadline.until == end_of(due)


def test_the_due_moment_is_the_last_instant_of_the_due_day_in_utc() -> None:
    # received at 23:30 in New York on 14 January: already 15 January in UTC
    received = datetime(2026, 1, 14, 23, 30, tzinfo=UTC) + timedelta(hours=5)
    due = deadline_for(regime("gdpr"), received).due_at
    assert due == datetime(2026, 2, 15, 23, 59, 59, 999999, tzinfo=UTC)
    assert due + timedelta(microseconds=1) == at("2026-02-16 00:00")


def test_every_regime_in_the_table_has_a_period_an_extension_and_a_short_name() -> None:
    assert {"ccpa", "gdpr", "vcdpa", "cpa"} <= set(REGIMES)
    for name, rule in REGIMES.items():
        assert rule.name == name == name.lower() and len(name) <= 16  # dsar_requests.regime
        assert rule.period.months or rule.period.days
        assert rule.extension.months or rule.extension.days


@pytest.mark.parametrize(
    ("name", "received", "until"),
    [
        ("ccpa", "2026-01-01 09:00", "2026-04-01"),  # 45 + 45 = 90 days
        ("vcdpa", "2026-01-01 09:00", "2026-04-01"),
        ("cpa", "2026-01-01 09:00", "2026-04-01"),
        ("icdpa", "2026-01-01 09:00", "2026-05-16"),  # 90 + 45
        ("gdpr", "2026-01-15 10:30", "2026-04-15"),  # three months from receipt
        ("gdpr", "2027-01-31 08:00", "2027-04-30"),  # not 28 April: from receipt, not 28 Feb
        ("gdpr", "2027-11-30 08:00", "2028-02-29"),
    ],
)
def test_the_one_extension(name: str, received: str, until: str) -> None:
    assert extension_until(regime(name), at(received)) == end_of(until)
    deadline = deadline_for(regime(name), at(received))
    assert extend(deadline, at(received)) == end_of(until)
    assert extend(deadline, deadline.due_at) == end_of(until)  # the last instant still counts


def test_a_second_extension_is_refused() -> None:
    first = deadline_for(regime("ccpa"), at("2026-01-01 09:00"))
    until = extend(first, at("2026-01-20 00:00"))
    assert isinstance(until, datetime)
    extended = Deadline(first.regime, first.received_at, first.due_at, until)
    refusal = extend(extended, at("2026-01-21 00:00"))
    assert (
        refusal
        == "already extended once, to 2026-04-01 (CCPA/CPRA (California) allows one extension)"
    )


@pytest.mark.parametrize("name", ["ccpa", "gdpr"])
def test_an_extension_after_the_first_deadline_is_refused(name: str) -> None:
    deadline = deadline_for(regime(name), at("2026-01-15 10:00"))
    refusal = extend(deadline, deadline.due_at + timedelta(microseconds=1))
    assert isinstance(refusal, str)
    assert refusal.startswith(f"the deadline passed on {deadline.due_at:%Y-%m-%d}")
    assert "only with notice given before it" in refusal


def test_an_extension_of_an_unknown_regime_is_refused() -> None:
    deadline = Deadline("lgpd", at("2026-01-15 10:00"), end_of("2026-01-30"))
    assert extend(deadline, at("2026-01-16 00:00")) == (
        "regime 'lgpd' is not one of: ccpa, gdpr, vcdpa, cpa, icdpa, ocpa, ucpa"
    )


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [
        ("ccpa", "gdpr", "ccpa"),
        ("GDPR", "ccpa", "gdpr"),  # any case
        ("  Vcdpa ", "gdpr", "vcdpa"),  # blanks around it
        ("CPRA", "gdpr", "ccpa"),  # the amended law's name
        (None, "gdpr", "gdpr"),  # none given: the default
        ("", "ccpa", "ccpa"),
        ("   ", "cpa", "cpa"),
    ],
)
def test_regime_names(raw: str | None, default: str, expected: str) -> None:
    found = regime_named(raw, default)
    assert isinstance(found, Regime) and found.name == expected


@pytest.mark.parametrize("raw", ["lgpd", "gdpr2", "ccpa;drop table", "x" * 100])
def test_an_unknown_regime_is_refused_with_the_known_ones(raw: str) -> None:
    found = regime_named(raw, "gdpr")
    assert isinstance(found, str)
    assert found.startswith(f"regime {raw.lower()[:40]!r} is not one of: ccpa, gdpr, vcdpa, cpa")


@pytest.mark.parametrize(
    ("now", "share"),
    [
        ("2026-01-01 00:00", 0.0),
        ("2025-12-31 23:58", 0.0),  # received a little ahead of the clock: none gone
        ("2026-01-02 00:00", 0.5),
        ("2026-01-02 14:24", 0.8),
        ("2026-01-03 00:00", 1.0),
        ("2026-01-04 00:00", 1.5),
    ],
)
def test_the_share_of_the_time_gone(now: str, share: float) -> None:
    deadline = Deadline("ccpa", at("2026-01-01 00:00"), at("2026-01-03 00:00"))
    assert elapsed_share(deadline, at(now)) == pytest.approx(share)


def test_the_share_counts_to_the_extended_deadline() -> None:
    deadline = Deadline("ccpa", at("2026-01-01"), at("2026-01-03"), at("2026-01-05"))
    assert elapsed_share(deadline, at("2026-01-03")) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("answered", "now", "expected"),
    [
        (None, "2026-02-15 12:00", "open"),
        (None, "2026-02-16 00:00", "missed"),  # not answered, past the due day
        ("2026-02-15 23:59:59.999999", "2026-03-01 00:00", "met"),
        ("2026-02-16 00:00", "2026-03-01 00:00", "missed"),
    ],
)
def test_met_missed_or_open(answered: str | None, now: str, expected: str) -> None:
    deadline = deadline_for(regime("ccpa"), at("2026-01-01 09:00"))
    assert outcome(deadline, None if answered is None else at(answered), at(now)) == expected


def test_an_extension_moves_what_counts_as_met() -> None:
    deadline = deadline_for(regime("ccpa"), at("2026-01-01 09:00"))
    extended = Deadline("ccpa", deadline.received_at, deadline.due_at, end_of("2026-04-01"))
    assert outcome(extended, at("2026-03-01 00:00"), at("2026-03-02 00:00")) == "met"
    assert outcome(deadline, at("2026-03-01 00:00"), at("2026-03-02 00:00")) == "missed"


@pytest.mark.parametrize(
    ("period", "text"),
    [
        (Period(days=45), "45 days"),
        (Period(months=1), "1 month"),
        (Period(months=2), "2 months"),
        (Period(months=1, days=1), "1 month and 1 day"),
    ],
)
def test_periods_read_as_they_are_written(period: Period, text: str) -> None:
    assert str(period) == text
