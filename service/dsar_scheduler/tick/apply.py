"""Writing what a rule of ``core.outcomes`` decided for a request: each outcome's moves and
counters, by compare-and-set from the states the caller found it in."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from dsar_scheduler.core.outcomes import Die, Requeue, Resubmit, Retry
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.rows import RequestChanges
from dsar_scheduler.tick.context import Context


def apply(
    ctx: Context,
    request_id: int,
    expected: Collection[State],
    outcome: Retry | Requeue | Resubmit | Die,
) -> None:
    """Write ``outcome`` for a request found in one of ``expected``: a move is made by
    compare-and-set from those states (a request that moved on meanwhile, say cancelled, is
    not moved: someone else acted); counters and retry times are written as they are."""
    if isinstance(outcome, Retry):
        now = ctx.clock.now()
        ctx.ledger.requests.update(
            request_id,
            now,
            errors=outcome.errors,
            next_action_at=now + timedelta(seconds=outcome.delay_s),
        )
    elif isinstance(outcome, Requeue):
        _requeue(ctx, request_id, expected, outcome)
    elif isinstance(outcome, Resubmit):
        _resubmit(ctx, request_id, expected, outcome)
    else:
        _die(ctx, request_id, expected, outcome)


def _die(ctx: Context, request_id: int, expected: Collection[State], outcome: Die) -> None:
    if outcome.clear_errors:
        ctx.ledger.requests.update(request_id, ctx.clock.now(), errors=0)
    changes: RequestChanges = {"next_action_at": None}
    if outcome.expiries is not None:
        changes["expiries"] = outcome.expiries
    now = ctx.clock.now()
    if ctx.ledger.requests.move(request_id, expected, State.DEAD, outcome.reason, now, **changes):
        ctx.report.dead += 1
    if outcome.failures is not None:  # the job's failure counts even if someone else acted
        ctx.ledger.requests.update(request_id, ctx.clock.now(), failures=outcome.failures)


def _requeue(ctx: Context, request_id: int, expected: Collection[State], outcome: Requeue) -> None:
    now = ctx.clock.now()
    changes: RequestChanges = {}
    if outcome.retry is not None:
        changes["errors"] = outcome.retry.errors
        changes["next_action_at"] = now + timedelta(seconds=outcome.retry.delay_s)
    ctx.ledger.requests.move(request_id, expected, State.QUEUED, outcome.reason, now, **changes)


def _resubmit(
    ctx: Context, request_id: int, expected: Collection[State], outcome: Resubmit
) -> None:
    if outcome.clear_errors:
        ctx.ledger.requests.update(request_id, ctx.clock.now(), errors=0)
    changes: RequestChanges = {"next_action_at": None}
    if outcome.state is State.FAILED:
        assert outcome.failures is not None
        changes["failures"] = outcome.failures
        ctx.report.failed += 1  # counted as decided, moved or not (as it always was)
    else:
        assert outcome.expiries is not None
        changes["expiries"] = outcome.expiries
    now = ctx.clock.now()
    moved = ctx.ledger.requests.move(
        request_id, expected, outcome.state, outcome.reason, now, **changes
    )
    if moved is not None and outcome.state is State.EXPIRED:
        ctx.report.expired += 1
