"""``utc`` and ``naive_utc``: the conversions every timestamp read from or written to the
ledger goes through (done by arithmetic from the epoch, for speed) must equal the obvious
``replace``/``astimezone`` ones, to the microsecond and at the edges of the calendar. And the
scaled clock (DSAR_CLOCK_SPEED, DSAR_CLOCK_EPOCH): one formula every process agrees on, never
running backwards."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dsar_scheduler.adapters.clock import (
    FakeClock,
    ScaledClock,
    SystemClock,
    clock_for,
    naive_utc,
    utc,
)

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


class WallClock:
    """``time.time`` as the test sets it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: float) -> None:
        self.value = start
        monkeypatch.setattr("dsar_scheduler.adapters.clock.time.time", lambda: self.value)


EPOCH = 1_800_000_000.0


def at(seconds: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def test_a_scaled_clock_reads_epoch_plus_wall_since_epoch_times_speed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wall = WallClock(monkeypatch, EPOCH)
    clock = ScaledClock(3600, EPOCH)
    assert clock.speed == 3600
    assert clock.now() == at(EPOCH)
    wall.value = EPOCH + 2.5
    assert clock.now() == at(EPOCH + 2.5 * 3600)  # 2.5 wall seconds: 2.5 clock hours
    assert clock.now().tzinfo is UTC


def test_a_scaled_clock_never_runs_backwards(monkeypatch: pytest.MonkeyPatch) -> None:
    wall = WallClock(monkeypatch, EPOCH + 10)
    clock = ScaledClock(60, EPOCH)
    before = clock.now()
    assert before == at(EPOCH + 600)
    wall.value = EPOCH + 4  # the wall clock stepped back (NTP)
    assert clock.now() == before  # held, not moved back
    wall.value = EPOCH + 11
    assert clock.now() == at(EPOCH + 660)  # and on again once the wall passes where it was


def test_two_scaled_clocks_with_one_epoch_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    wall = WallClock(monkeypatch, EPOCH + 3)
    first = ScaledClock(3600, EPOCH)
    wall.value = EPOCH + 7  # a replica, or a process restarted after kill -9, starts later
    second = ScaledClock(3600, EPOCH)
    assert first.now() == second.now() == at(EPOCH + 7 * 3600)


def test_scaled_clocks_in_real_time_agree_and_run_at_their_speed() -> None:
    epoch = time.time() - 1
    first, second = ScaledClock(1000, epoch), ScaledClock(1000, epoch)
    a, b, c = first.now(), second.now(), first.now()
    assert a <= b <= c
    assert (c - a) < timedelta(seconds=60)  # a few ms of wall between the reads
    assert abs((a - at(epoch)).total_seconds() - 1000) < 60  # one wall second since the epoch


@pytest.mark.parametrize("speed", [0, -1])
def test_a_scaled_clock_needs_a_positive_speed(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        ScaledClock(speed, EPOCH)


def test_the_clock_from_the_settings() -> None:
    system = clock_for(1, None)
    assert isinstance(system, SystemClock) and system.speed == 1
    assert FakeClock().speed == 1
    scaled = clock_for(3600, EPOCH)
    assert isinstance(scaled, ScaledClock) and (scaled.speed, scaled.epoch) == (3600, EPOCH)
    with pytest.raises(ValueError, match="epoch"):
        clock_for(3600, None)
