"""Legal deadlines in the planner's order of polls: who goes first when the budget binds (a
tick that runs out part way polls the head of the list, and the rest wait a tick).

* Required polls go nearest deadline first, except one overdue by more than a whole poll gap,
  which goes before them, the most overdue first: a finished result not seen for that long
  is the nearest to expiring (losing it costs a resubmission and days), and no request waits
  behind more urgent ones for ever.
* Optional polls go likeliest finished first (they spend what is left where a poll most
  likely finds a result); among equals (requests submitted together), nearest deadline first.

Submissions follow the deadline too: the ledger hands out the waiting requests nearest
deadline first (``ledger.deadlines.URGENCY``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

#: The deadline of a request without one: after every request that has one.
NO_DEADLINE = datetime.max.replace(tzinfo=UTC)

#: (due since, request id, deadline) of a request whose required poll is due.
RequiredPoll = tuple[datetime, int, datetime]
#: (probability it finished, request id, expected cost, deadline) of an optional poll.
OptionalPoll = tuple[float, int, float, datetime]


def required_order(required: Sequence[RequiredPoll], now: datetime, gap_s: float) -> list[int]:
    """The required polls' request ids in the order to poll them (the module's docstring)."""
    late = now - timedelta(seconds=gap_s)

    def key(item: RequiredPoll) -> tuple[bool, datetime, datetime, int]:
        since, rid, deadline = item
        if since < late:
            return (False, since, NO_DEADLINE, rid)
        return (True, deadline, since, rid)

    return [rid for _, rid, _ in sorted(required, key=key)]


def optional_order(optional: Sequence[OptionalPoll]) -> list[OptionalPoll]:
    """The optional polls in the order to try them (the module's docstring)."""
    return sorted(optional, key=lambda item: (-item[0], item[3], item[1]))
