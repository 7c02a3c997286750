"""Spending the budget: every call's cost is reserved in the ledger before it is sent, a chunk
of calls at a time; what was reserved and not sent is released; a tick that finds the budget
full (or a 429 backoff) stops its API work there."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import TypeVar

from dsar_scheduler.adapters.amplitude import ApiError, ErrorKind
from dsar_scheduler.core.backoff import backoff_delay
from dsar_scheduler.core.costs import COST, CallKind
from dsar_scheduler.ledger.budget import RATE_LIMIT_HISTORY
from dsar_scheduler.ledger.rows import CallTicket
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.batch import batch_of_calls, record_call
from dsar_scheduler.tick.context import Context, keep_lease
from dsar_scheduler.tick.report import StopTick

log = get_logger("dsar.tick")

T = TypeVar("T")

#: ``TickReport.stopped_by`` when the rolling hour has no room left.
BUDGET_FULL = "budget window full"


def spend(
    ctx: Context,
    kind: CallKind,
    items: Sequence[T],
    request_id: Callable[[T], int],
    call: Callable[[T, CallTicket | None], bool],
    *,
    sendable: Callable[[Sequence[T]], Collection[int]] | None = None,
    then: Callable[[], None] | None = None,
    batched: bool = True,
    lane: Callable[[], None] | None = None,
) -> None:
    """One call of ``kind`` for each of ``items``: reserve them in one transaction (as many
    as fit; none: the tick stops), make them (``batched``: their writes in one transaction at
    the end), release the reservations not used, run ``then``, and stop the tick if not every
    item fitted.

    ``call`` gets its ticket (``None``: it waited too long and was released; reserve anew)
    and returns whether to go on. ``sendable``: which of the items that got a reservation
    may be sent (by request id); the others' reservations are released at their turn.
    ``lane``: waited on before each item (``FanOut.lane``); if it stops the tick, this
    item's reservation is released with the rest."""
    tickets = reserve(ctx, kind, [request_id(item) for item in items])
    allowed = sendable(items[: len(tickets)]) if sendable is not None else None
    writes: AbstractContextManager[None] = batch_of_calls(ctx) if batched else nullcontext()
    used = 0
    try:
        with writes:
            for item, ticket in zip(items, tickets, strict=False):
                if lane is not None:
                    lane()
                used += 1
                if allowed is not None and request_id(item) not in allowed:
                    release(ctx, [ticket])  # moved on meanwhile: not sent
                    continue
                if not call(item, fresh(ctx, ticket)):
                    return
    finally:
        release(ctx, tickets[used:])
    if then is not None:
        then()
    if len(tickets) < len(items):
        stop_on_full_budget(ctx)


def reserve(ctx: Context, kind: CallKind, request_ids: Sequence[int]) -> list[CallTicket]:
    """Reserve a call for each request in one transaction: as many as fit, at least one
    (else the tick stops)."""
    if not request_ids:
        return []
    if ctx.stop.is_set():
        raise StopTick("shutdown")
    keep_lease(ctx)
    tickets = ctx.ledger.budget.reserve_many(
        kind, COST[kind], ctx.clock.now(), list[int | None](request_ids)
    )
    if not tickets:
        stop_on_full_budget(ctx)
    return tickets


def reserve_one(ctx: Context, kind: CallKind, request_id: int) -> CallTicket:
    return reserve(ctx, kind, [request_id])[0]


def stop_on_full_budget(ctx: Context) -> None:
    if ctx.ledger.budget.backoff_until(ctx.clock.now()) is not None:
        raise StopTick("rate limited (backing off)")
    ctx.metrics.budget_deferrals.inc()
    raise StopTick(BUDGET_FULL)


def fresh(ctx: Context, ticket: CallTicket) -> CallTicket | None:
    """The ticket, or ``None`` (released; the call reserves anew) if it waited so long
    that its cost would soon leave the rolling hour before the call is made."""
    if (
        ticket.reserved_at is None
        or ctx.clock.now() - ticket.reserved_at < limits.STALE_RESERVATION
    ):
        return ticket
    release(ctx, [ticket])
    return None


def release(ctx: Context, tickets: Sequence[CallTicket]) -> None:
    """Reservations not sent after all: they cost nothing."""
    if tickets:
        ctx.ledger.budget.release_calls(tickets, ctx.clock.now())


def call_failed(ctx: Context, ticket: CallTicket, err: ApiError) -> None:
    """Record a failed call; stop the tick for what concerns every call (429, auth)."""
    record_call(ctx, ticket, err.status_code, err.kind.value)
    ctx.metrics.api_errors.labels(ticket.kind, err.cause).inc()
    log.warning("api.error", kind=ticket.kind, error=str(err), body=err.body)
    if err.kind is ErrorKind.RATE_LIMITED:
        ctx.metrics.rate_limited.inc()
        now = ctx.clock.now()
        wait = err.retry_after
        if wait is None:
            recent = ctx.ledger.budget.count_calls("rate_limited", now - RATE_LIMIT_HISTORY)
            wait = backoff_delay(
                recent,
                base=limits.RATE_LIMIT_BACKOFF_BASE_S,
                cap=limits.RATE_LIMIT_BACKOFF_CAP_S,
                rng=ctx.rng,
            )
        ctx.ledger.budget.set_backoff(now + timedelta(seconds=wait), now, "429 from Amplitude")
        raise StopTick("rate limited")
    if err.kind is ErrorKind.AUTH:
        raise StopTick("credentials refused")
