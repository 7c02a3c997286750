"""Step 5, submit: as many waiting requests as the policy says the budget carries, each moved
to ``submitting`` (the crash marker) before its POST."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from dsar_scheduler.adapters.amplitude import ApiError
from dsar_scheduler.core import outcomes
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.rows import CallTicket, RequestRow, Submitted
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.apply import apply
from dsar_scheduler.tick.batch import record_accepted, record_call
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.spend import call_failed, reserve_one, spend

log = get_logger("dsar.tick")

SUBMITTING = frozenset({State.SUBMITTING})


def submit(ctx: Context) -> None:
    """Submit what the policy allows now. The planner's calls are reserved in chunks and
    recorded in batches; the seed's baseline reserves, sends and records each on its own."""
    now = ctx.clock.now()
    allowed = ctx.policy.submits(ctx.reads, now)
    if allowed.count == 0:
        if allowed.deferred is not None:
            log.info("submit.deferred", **allowed.deferred)
        return
    requests = ctx.ledger.requests.due_submits(now, allowed.count)
    batched = ctx.policy.batch_submits
    size = limits.CHUNK if batched else 1
    for start in range(0, len(requests), size):
        spend(
            ctx,
            "submit",
            requests[start : start + size],
            _request_id,
            partial(_submit_one, ctx),
            sendable=partial(_start, ctx),
            batched=batched,
        )


def _request_id(request: RequestRow) -> int:
    return request.id


def _start(ctx: Context, requests: Sequence[RequestRow]) -> set[int]:
    """Move the requests that got a reservation to ``submitting``; those that moved on
    meanwhile are not sent."""
    return ctx.ledger.requests.start_submits(requests, ctx.clock.now())


def _submit_one(ctx: Context, request: RequestRow, ticket: CallTicket | None) -> bool:
    """POST one request, already moved to ``submitting``."""
    assert request.amplitude_id is not None or request.user_id is not None
    assert request.start_date is not None and request.end_date is not None
    ticket = ticket or reserve_one(ctx, "submit", request.id)
    try:
        remote_id = ctx.client.submit(
            request.amplitude_id, request.start_date, request.end_date, request.user_id
        )
    except ApiError as err:
        failure = outcomes.on_submit_error(err, request.errors, ctx.limits, ctx.retry_delay)
        apply(ctx, request.id, SUBMITTING, failure)
        call_failed(ctx, ticket, err)
        return True
    record_call(ctx, ticket, 202)
    now = ctx.clock.now()
    first = request.first_submitted_at or now
    ctx.report.submitted += 1
    record_accepted(ctx, Submitted(request.id, remote_id, now, first, ctx.policy.next_poll(now)))
    return True
