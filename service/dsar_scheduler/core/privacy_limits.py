"""The limits of Amplitude's privacy APIs, per project key, as a rule over the calls already
reserved: User Privacy (deletion) takes one call a second and 8 at once; User Search and User
Activity together take 360 calls an hour and 10 at once. Neither shares the DSAR cost budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

HOUR = timedelta(hours=1)
#: A reservation with no answer this old is a call a stopped process left: it no longer
#: counts as in flight (an HTTP call is long over by then), only in the hourly count.
STALE_IN_FLIGHT = timedelta(minutes=5)


@dataclass(frozen=True)
class Limits:
    per_hour: int | None
    in_flight: int
    min_gap: timedelta = timedelta(0)


DELETION = Limits(per_hour=None, in_flight=8, min_gap=timedelta(seconds=1))
SEARCH = Limits(per_hour=360, in_flight=10)
LIMITS = {"deletion": DELETION, "search": SEARCH}


@dataclass(frozen=True)
class Reserved:
    """A call already reserved against a project key."""

    reserved_at: datetime
    finished_at: datetime | None


def next_slot(calls: Iterable[Reserved], now: datetime, limits: Limits) -> datetime:
    """The earliest moment (``now`` or later) a new call fits the limits. A full hour frees a
    slot when its oldest call leaves the hour; a full set of calls in flight, when one
    answers (``now`` plus a second is a guess the caller re-checks)."""
    recent = [c for c in calls if c.reserved_at > now - HOUR]
    at = now
    if limits.min_gap and recent:
        at = max(at, max(c.reserved_at for c in recent) + limits.min_gap)
    flying = [c for c in recent if c.finished_at is None and c.reserved_at > now - STALE_IN_FLIGHT]
    if len(flying) >= limits.in_flight:
        at = max(at, now + timedelta(seconds=1))
    if limits.per_hour is not None and len(recent) >= limits.per_hour:
        oldest = sorted(c.reserved_at for c in recent)[len(recent) - limits.per_hour]
        at = max(at, oldest + HOUR)
    return at


def fits(calls: Iterable[Reserved], now: datetime, limits: Limits) -> bool:
    return next_slot(calls, now, limits) <= now
