"""The privacy APIs' limits by table: one deletion call a second and 8 at once; 360 searches
an hour and 10 at once; a stopped process's reservation stops counting as in flight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dsar_scheduler.core.privacy_limits import (
    DELETION,
    SEARCH,
    STALE_IN_FLIGHT,
    Reserved,
    fits,
    next_slot,
)

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)
S = timedelta(seconds=1)


def done(ago: timedelta) -> Reserved:
    return Reserved(NOW - ago, NOW - ago + timedelta(milliseconds=200))


def flying(ago: timedelta) -> Reserved:
    return Reserved(NOW - ago, None)


def test_deletion_one_call_a_second() -> None:
    assert fits([], NOW, DELETION)
    assert not fits([done(timedelta(milliseconds=500))], NOW, DELETION)
    assert next_slot([done(timedelta(milliseconds=500))], NOW, DELETION) == NOW + S / 2
    assert fits([done(S)], NOW, DELETION)


def test_deletion_eight_in_flight() -> None:
    eight = [flying(2 * S + i * S) for i in range(8)]
    assert not fits(eight, NOW, DELETION)
    assert fits(eight[:7], NOW, DELETION)
    # reservations a stopped process left stop counting as in flight
    stale = [flying(STALE_IN_FLIGHT + i * S) for i in range(8)]
    assert fits(stale, NOW, DELETION)


def test_search_360_an_hour() -> None:
    hour = [done(timedelta(seconds=10 * i + 5)) for i in range(360)]
    assert not fits(hour, NOW, SEARCH)
    # the oldest was made 3,595 s ago: it leaves the hour 5 s from now
    assert next_slot(hour, NOW, SEARCH) == NOW + timedelta(seconds=5)
    assert fits(hour[:359], NOW, SEARCH)
    assert fits([done(timedelta(hours=1, seconds=1))] * 400, NOW, SEARCH)


def test_search_ten_at_once() -> None:
    assert not fits([flying(S)] * 10, NOW, SEARCH)
    assert fits([flying(S)] * 9, NOW, SEARCH)
