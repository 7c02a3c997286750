"""The simulator's virtual lanes: concurrency on a virtual clock, run in one thread."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import Any

import pytest

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.tools.simulate.lanes import VirtualLanes

T0 = datetime.fromisoformat("2026-01-05T09:00:00+00:00")


def takes(
    clock: FakeClock, seconds: float, seen: list[datetime] | None = None
) -> Callable[[], str]:
    """Work that starts at the clock's time and takes ``seconds`` (as the transport does)."""

    def work() -> str:
        if seen is not None:
            seen.append(clock.now())
        clock.advance(seconds)
        return f"took {seconds}"

    return work


def settle_all(
    lanes: VirtualLanes, clock: FakeClock, pending: set[Future[Any]]
) -> list[tuple[float, Any]]:
    """(seconds since T0, result) of each future in the order wait_any hands them back."""
    order = []
    while pending:
        done = lanes.wait_any(pending, timeout=1.0)
        assert done, "wait_any returned nothing with work pending"
        pending -= done
        now = (clock.now() - T0).total_seconds()
        order += sorted((now, f.result()) for f in done)
    return order


def test_two_pieces_of_work_on_two_lanes_overlap() -> None:
    clock = FakeClock(T0)
    lanes = VirtualLanes(clock, 2)
    seen: list[datetime] = []
    first = lanes.start(takes(clock, 10, seen))
    second = lanes.start(takes(clock, 10, seen))
    assert seen == [T0, T0]  # both began at once
    assert clock.now() == T0  # the caller's clock is put back after each
    assert lanes.wait_any({first, second}, timeout=1.0) == {first, second}
    assert clock.now() == T0 + timedelta(seconds=10)  # not 20: they overlapped


def test_one_lane_runs_the_work_one_after_another() -> None:
    clock = FakeClock(T0)
    lanes = VirtualLanes(clock, 1)
    seen: list[datetime] = []
    pending = {lanes.start(takes(clock, 10, seen)), lanes.start(takes(clock, 10, seen))}
    assert seen == [T0, T0 + timedelta(seconds=10)]
    assert settle_all(lanes, clock, pending) == [(10.0, "took 10"), (20.0, "took 10")]


def test_work_takes_the_lane_that_frees_first_and_finishes_in_time_order() -> None:
    clock = FakeClock(T0)
    lanes = VirtualLanes(clock, 2)
    seen: list[datetime] = []
    pending = {
        lanes.start(takes(clock, 30, seen)),  # lane A: 0-30
        lanes.start(takes(clock, 5, seen)),  # lane B: 0-5
        lanes.start(takes(clock, 7, seen)),  # lane B again (free first): 5-12
    }
    assert seen == [T0, T0, T0 + timedelta(seconds=5)]
    assert settle_all(lanes, clock, pending) == [
        (5.0, "took 5"),
        (12.0, "took 7"),
        (30.0, "took 30"),
    ]


def test_the_clock_never_moves_back() -> None:
    clock = FakeClock(T0)
    lanes = VirtualLanes(clock, 2)
    early = lanes.start(takes(clock, 5))
    clock.advance(60)  # the caller's own time moved on (a serial call, say)
    assert lanes.wait_any({early}, timeout=1.0) == {early}
    assert clock.now() == T0 + timedelta(seconds=60)
    later = lanes.start(takes(clock, 5))
    lanes.wait_any({later}, timeout=1.0)
    assert clock.now() == T0 + timedelta(seconds=65)


def test_wait_any_hands_back_everything_finished_by_then() -> None:
    clock = FakeClock(T0)
    lanes = VirtualLanes(clock, 3)
    a, b, c = (lanes.start(takes(clock, s)) for s in (4, 4, 9))
    assert lanes.wait_any({a, b, c}, timeout=1.0) == {a, b}
    assert lanes.wait_any({c}, timeout=1.0) == {c}
    assert lanes.wait_any(set(), timeout=1.0) == set()


def test_a_failure_comes_back_in_its_future_and_the_clock_is_restored() -> None:
    clock = FakeClock(T0)
    lanes = VirtualLanes(clock, 1)

    def broken() -> None:
        clock.advance(3)
        raise RuntimeError("refused")

    future = lanes.start(broken)
    assert clock.now() == T0
    assert lanes.wait_any({future}, timeout=1.0) == {future}
    with pytest.raises(RuntimeError, match="refused"):
        future.result()
    assert clock.now() == T0 + timedelta(seconds=3)


def test_width_must_be_positive() -> None:
    with pytest.raises(ValueError):
        VirtualLanes(FakeClock(T0), 0)
    assert VirtualLanes(FakeClock(T0), 8).width == 8
