"""The org's cost budget: a rolling one-hour window over the injected clock.

Not thread-safe by itself; the emulator calls it under its own lock so that the check and the
charge of one call are atomic.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime, timedelta

WINDOW = timedelta(hours=1)


class CostWindow:
    """Cost charged in the last hour. An entry charged at ``t`` counts while ``now < t + 1h``."""

    def __init__(self, budget_per_hour: int) -> None:
        self.budget = budget_per_hour
        self._entries: deque[tuple[datetime, int]] = deque()

    def spent(self, now: datetime) -> int:
        self._prune(now)
        return sum(cost for _, cost in self._entries)

    def fits(self, now: datetime, cost: int) -> bool:
        return self.spent(now) + cost <= self.budget

    def charge(self, now: datetime, cost: int) -> None:
        if cost > 0:
            self._entries.append((now, cost))

    def seconds_until_fits(self, now: datetime, cost: int) -> float:
        """Clock seconds until ``cost`` would fit, as old charges leave the window."""
        need = self.spent(now) + cost - self.budget
        if need <= 0:
            return 0.0
        for at, spent in self._entries:
            need -= spent
            if need <= 0:
                return (at + WINDOW - now).total_seconds()
        return WINDOW.total_seconds()  # a cost bigger than the whole budget never fits

    def retry_after(self, now: datetime, cost: int, clock_speed: float = 1.0) -> int:
        """``Retry-After`` in whole wall seconds (at least 1)."""
        return max(1, math.ceil(self.seconds_until_fits(now, cost) / clock_speed))

    def _prune(self, now: datetime) -> None:
        horizon = now - WINDOW
        while self._entries and self._entries[0][0] <= horizon:
            self._entries.popleft()
