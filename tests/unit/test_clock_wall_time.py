"""What runs on the wall clock when the service's clock is fast: the scheduler's interval
and the stuck-tick rule divide by the speed, the lease's life multiplies by it (so it still
covers a process stuck for ten wall minutes). At speed 1 both are what they always were."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from dsar_scheduler.adapters.clock import FakeClock, ScaledClock
from dsar_scheduler.runtime.app import App
from dsar_scheduler.runtime.daemon import Daemon
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.context import lease_ttl


def app_on(clock: Any, tick_interval_seconds: float) -> App:
    settings = SimpleNamespace(tick_interval_seconds=tick_interval_seconds)
    return cast(App, SimpleNamespace(settings=settings, clock=clock))


@pytest.mark.parametrize(("speed", "wall"), [(1.0, 1800.0), (60.0, 30.0), (3600.0, 0.5)])
def test_the_tick_interval_is_in_clock_seconds(speed: float, wall: float) -> None:
    clock = FakeClock() if speed == 1 else ScaledClock(speed, 0)
    daemon = Daemon(app_on(clock, 1800))
    assert (daemon.interval, daemon.wall_interval) == (1800, wall)


def test_a_stuck_tick_is_judged_in_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = Daemon(app_on(ScaledClock(3600, 0), 1800))
    monkeypatch.setattr(daemon.scheduler, "state", 1)  # running
    monkeypatch.setattr("dsar_scheduler.runtime.daemon.time.monotonic", lambda: 5000.0)
    daemon.ticking_since = 5000.0 - 3599  # an hour of wall time is the floor
    assert daemon.live()[0] is True
    daemon.ticking_since = 5000.0 - 3601
    assert daemon.live()[0] is False


@pytest.mark.parametrize("speed", [1.0, 60.0, 3600.0])
def test_the_lease_lives_ten_wall_minutes_at_any_speed(speed: float) -> None:
    clock = FakeClock() if speed == 1 else ScaledClock(speed, 0)
    assert lease_ttl(clock) == limits.LEASE_TTL * speed
    assert lease_ttl(clock).total_seconds() / speed == 600
