"""The tick's schedule arithmetic (``core.schedule``): the queue floor admission leaves, and
the daemon's next early wake-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dsar_scheduler.core.schedule import FloorMove, budget_share, next_floor, wake_at

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


@pytest.mark.parametrize(
    ("floor", "seen", "top", "left", "expected"),
    [
        pytest.param(0, 0, 0, [], FloorMove(0, 0, NOW + DAY), id="a full sweep of an empty queue"),
        pytest.param(0, 0, 5, [], FloorMove(0, 5, NOW + DAY),
                     id="first sweep: the floor waits a tick for late commits"),
        pytest.param(0, 5, 5, [], FloorMove(5, 5, NOW + DAY),
                     id="a sweep moves the floor to what the last tick saw"),
        pytest.param(5, 5, 5, [], None, id="nothing new: nothing to record"),
        pytest.param(5, 5, 9, [], FloorMove(5, 9, None), id="rows arrived: seen moves"),
        pytest.param(5, 9, 9, [], FloorMove(9, 9, None), id="a tick later the floor follows"),
        pytest.param(5, 9, 12, [8], FloorMove(7, 12, None),
                     id="a row left unadmitted holds the floor below it"),
        pytest.param(5, 9, 12, [3], FloorMove(5, 12, None), id="the floor never moves down"),
        pytest.param(0, 9, 12, [7, 4], FloorMove(3, 12, NOW + DAY), id="the lowest left counts"),
        pytest.param(4, 5, 5, [11], FloorMove(5, 5, None),
                     id="pages left past what was seen: up to seen"),
    ],
)  # fmt: skip
def test_the_queue_floor(
    floor: int, seen: int, top: int, left: list[int], expected: FloorMove | None
) -> None:
    assert next_floor(floor, seen, top, left, NOW, DAY) == expected


MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        pytest.param([], None, id="nothing due"),
        pytest.param([None, None], None, id="nothing known"),
        pytest.param([NOW + 5 * MINUTE], NOW + 5 * MINUTE, id="a retry in 5 minutes"),
        pytest.param([NOW + 9 * MINUTE, None, NOW + 4 * MINUTE], NOW + 4 * MINUTE,
                     id="the earliest"),
        pytest.param([NOW - MINUTE], NOW + MINUTE, id="overdue: a minute after the tick"),
        pytest.param([NOW + MINUTE / 2], NOW + MINUTE, id="not sooner than a minute"),
        pytest.param([NOW + 29 * MINUTE], NOW + 29 * MINUTE, id="just before the next tick"),
        pytest.param([NOW + 30 * MINUTE], None, id="the regular tick does"),
    ],
)  # fmt: skip
def test_the_next_wake_up(due: list[datetime | None], expected: datetime | None) -> None:
    assert wake_at(NOW, due, interval_s=1800) == expected


@pytest.mark.parametrize(("limit", "share"), [(11_520, 576), (100, 5), (19, 1), (1, 1)])
def test_a_full_window_wakes_for_a_twentieth_of_the_budget(limit: int, share: int) -> None:
    assert budget_share(limit) == share
