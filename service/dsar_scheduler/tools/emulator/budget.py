"""The org's cost budget: a rolling one-hour window over the injected clock.

Not thread-safe by itself; the emulator calls it under its own lock so that the check and the
charge of one call are atomic.
"""

from __future__ import annotations

import bisect
import math
from datetime import datetime, timedelta

WINDOW = timedelta(hours=1)


class CostWindow:
    """Cost charged in the last hour: a charge at ``t`` counts while ``t <= now < t + 1h``.

    Queries never forget anything (a test may ask about any moment); only ``charge`` drops
    entries, those more than two hours older than the newest charge. Running totals beside
    the entries make ``spent`` two bisections, however many calls the hour holds.
    """

    def __init__(self, budget_per_hour: int) -> None:
        self.budget = budget_per_hour
        self._entries: list[tuple[datetime, int]] = []  # sorted by time
        self._totals: list[int] = []  # _totals[i]: cost of every entry up to i, inclusive
        self._dropped = 0  # cost of the entries dropped from the front
        #: Charges made out of time order (a simulator's lanes run work one after another
        #: though it overlaps in time) that put a later call's hour over the budget: a 429
        #: the real order would have answered, so reports count it as one.
        self.late_overruns = 0

    def spent(self, now: datetime) -> int:
        lo, hi = self._bounds(now)
        if hi <= lo:
            return 0
        before = self._totals[lo - 1] if lo > 0 else self._dropped
        return self._totals[hi - 1] - before

    def fits(self, now: datetime, cost: int) -> bool:
        return self.spent(now) + cost <= self.budget

    def charge(self, now: datetime, cost: int) -> None:
        if cost <= 0:
            return
        at = bisect.bisect_right(self._entries, now, key=_time)
        self._entries.insert(at, (now, cost))
        previous = self._totals[at - 1] if at > 0 else self._dropped
        self._totals[at:] = [previous + cost] + [t + cost for t in self._totals[at:]]
        if at < len(self._entries) - 1 and self._overruns_later(at, now):
            self.late_overruns += 1
        stale = bisect.bisect_left(self._entries, self._entries[-1][0] - 2 * WINDOW, key=_time)
        if stale:
            self._dropped = self._totals[stale - 1]
            del self._entries[:stale]
            del self._totals[:stale]

    def _overruns_later(self, at: int, now: datetime) -> bool:
        """Whether the hour of any charge already made after ``now`` is now over budget."""
        end = bisect.bisect_left(self._entries, now + WINDOW, key=_time)
        return any(self.spent(self._entries[i][0]) > self.budget for i in range(at + 1, end))

    def seconds_until_fits(self, now: datetime, cost: int) -> float:
        """Clock seconds until ``cost`` would fit, as old charges leave the window."""
        need = self.spent(now) + cost - self.budget
        if need <= 0:
            return 0.0
        for at, spent in self._in_window(now):
            need -= spent
            if need <= 0:
                return (at + WINDOW - now).total_seconds()
        return WINDOW.total_seconds()  # a cost bigger than the whole budget never fits

    def retry_after(self, now: datetime, cost: int, clock_speed: float = 1.0) -> int:
        """``Retry-After`` in whole wall seconds (at least 1)."""
        return max(1, math.ceil(self.seconds_until_fits(now, cost) / clock_speed))

    def _bounds(self, now: datetime) -> tuple[int, int]:
        lo = bisect.bisect_right(self._entries, now - WINDOW, key=_time)
        hi = bisect.bisect_right(self._entries, now, key=_time)
        return lo, hi

    def _in_window(self, now: datetime) -> list[tuple[datetime, int]]:
        lo, hi = self._bounds(now)
        return self._entries[lo:hi]


def _time(entry: tuple[datetime, int]) -> datetime:
    return entry[0]
