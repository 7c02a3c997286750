"""Per-project limits of the privacy endpoints: so many accepted calls in a rolling window
(deletion: 1 a second; search and activity together: 360 an hour) and so many in flight
(8; 10). A refused call is not counted. The window runs on the injected clock; in flight
means inside the handler, including its configured latency (real time)."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Refusal:
    """Why a call was refused, and the ``Retry-After`` (whole seconds, at least 1)."""

    message: str
    retry_after: int


class Lane:
    """One kind of call for one project key. Safe to use from many threads."""

    def __init__(self, name: str, per_window: int, window_s: float, max_in_flight: int) -> None:
        self._name = name
        self._per_window = per_window
        self._window = timedelta(seconds=window_s)
        self._max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._accepted: deque[datetime] = deque()
        self._in_flight = 0

    def enter(self, now: datetime, clock_speed: float) -> Refusal | None:
        """Take a slot, or say why not; a caller that got ``None`` must ``leave``."""
        with self._lock:
            if self._in_flight >= self._max_in_flight:
                return Refusal(
                    f"{self._name}: at most {self._max_in_flight} calls in flight per project key",
                    1,
                )
            while self._accepted and now - self._accepted[0] >= self._window:
                self._accepted.popleft()
            if self._per_window > 0 and len(self._accepted) >= self._per_window:
                wait = (self._accepted[0] + self._window - now).total_seconds()
                return Refusal(
                    f"{self._name}: at most {self._per_window} calls per "
                    f"{self._window.total_seconds():g} s per project key",
                    max(1, math.ceil(wait / clock_speed)),
                )
            if self._per_window > 0:
                self._accepted.append(now)
            self._in_flight += 1
            return None

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight
