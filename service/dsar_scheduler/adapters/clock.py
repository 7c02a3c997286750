"""Clocks. The core never calls ``datetime.now()``: it is handed a clock, so tests and the
simulator can move time by hand and the emulator can share the service's notion of time."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    #: Clock seconds per wall second: what is timed in wall seconds (the daemon's scheduler,
    #: early wake-ups, the lease's cover for a stuck process) converts by it.
    speed: float

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...


class SystemClock:
    speed = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that moves only when told to; safe to share between threads."""

    speed = 1.0

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


class ScaledClock:
    """Wall time sped up by ``speed`` from ``epoch`` (unix seconds): ``epoch + (wall - epoch)
    * speed``. Read from the wall clock, not a monotonic one, so every process given the same
    speed and epoch (replicas, a restart after kill -9, the emulator) reads the same time;
    never earlier than it read before in this process, so a wall clock stepped back holds it
    still instead of moving it back."""

    def __init__(self, speed: float, epoch: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = float(speed)
        self.epoch = time.time() if epoch is None else float(epoch)
        self._last = -math.inf
        self._lock = threading.Lock()

    def now(self) -> datetime:
        seconds = self.epoch + (time.time() - self.epoch) * self.speed
        with self._lock:
            self._last = max(self._last, seconds)
            seconds = self._last
        return _EPOCH_UTC + timedelta(seconds=seconds)


def clock_for(speed: float, epoch: float | None) -> Clock:
    """The process's clock from DSAR_CLOCK_SPEED and DSAR_CLOCK_EPOCH: the system clock at
    speed 1, else the scaled one (the settings refuse a speed other than 1 without an epoch)."""
    if speed == 1:
        return SystemClock()
    if epoch is None:
        raise ValueError("a clock speed other than 1 needs an epoch")
    return ScaledClock(speed, epoch)


_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def utc(dt: datetime) -> datetime:
    """Aware UTC from a naive-UTC or aware datetime (databases hand back naive ones).

    By arithmetic from the epoch, exact to the microsecond: ``replace(tzinfo=UTC)`` parses its
    keywords on every call and costs several times as much, and a tick converts every
    timestamp it reads from the ledger."""
    return _EPOCH_UTC + (dt - _EPOCH) if dt.tzinfo is None else dt.astimezone(UTC)


def naive_utc(dt: datetime) -> datetime:
    """Naive UTC (what the ledger's columns hold) from an aware or naive-UTC datetime."""
    return dt if dt.tzinfo is None else _EPOCH + (dt - _EPOCH_UTC)
