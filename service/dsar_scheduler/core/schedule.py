"""The tick's own schedule arithmetic: where admission starts reading the queue next time, and
when the daemon should wake before its next regular tick."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

#: Daemon wake-ups sooner than the tick interval: not sooner than this after a tick, and for a
#: full budget window only once this share of the limit has left it.
MIN_WAKE = timedelta(seconds=60)
WAKE_BUDGET_SHARE = 0.05


@dataclass(frozen=True)
class FloorMove:
    """The queue floor to record (``Queue.set_floor``)."""

    floor: int
    seen: int
    #: When the next full sweep of the queue is due (``None``: leave it as it is).
    sweep_due: datetime | None


def next_floor(
    floor: int,
    seen: int,
    top: int,
    left: Sequence[int],
    now: datetime,
    sweep_every: timedelta,
) -> FloorMove | None:
    """The floor after an admission that started at ``floor`` (``seen``: the highest queue id
    when the previous admission began; ``top``: when this one began) and left the queue ids
    ``left`` unadmitted. The floor moves up to ``seen``, or to just below the first row left,
    whichever is lower, and never down. A floor of 0 is a full sweep, which schedules the next
    one. ``None``: nothing to record."""
    new = max(floor, min([seen, *(queue_id - 1 for queue_id in left)]))
    sweep_due = now + sweep_every if floor == 0 else None
    if (new, top) == (floor, seen) and sweep_due is None:
        return None
    return FloorMove(new, top, sweep_due)


def budget_share(limit: int) -> int:
    """The cost that must leave a full window before waking for it is worth it."""
    return max(1, int(limit * WAKE_BUDGET_SHARE))


def wake_at(now: datetime, due: Iterable[datetime | None], interval_s: float) -> datetime | None:
    """The earliest of the moments ``due`` (work falling due), but not sooner than
    ``MIN_WAKE`` from now; ``None`` when there is none, or the next regular tick (in
    ``interval_s``) comes first."""
    times = [t for t in due if t is not None]
    if not times:
        return None
    wake = max(min(times), now + MIN_WAKE)
    return wake if wake < now + timedelta(seconds=interval_s) else None
