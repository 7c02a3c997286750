"""Clocks. The core never calls ``datetime.now()``: it is handed a clock, so tests and the
simulator can move time by hand and the emulator can share the service's notion of time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that moves only when told to; safe to share between threads."""

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
    """Wall time sped up by ``speed`` from ``start``: the demo lives a day in minutes."""

    def __init__(self, speed: float, start: datetime | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = start or datetime.now(UTC)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)


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
