"""Step 4, poll: the status of what the policy picks (the planner's required and optional polls,
or the seed's fixed interval); a job found done has its files listed, to fetch at once."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from dsar_scheduler.adapters.amplitude import ApiError, RemoteStatus
from dsar_scheduler.core import outcomes
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.rows import CallTicket, RequestRow
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.apply import apply
from dsar_scheduler.tick.batch import record_call, record_running
from dsar_scheduler.tick.context import Context, guarded
from dsar_scheduler.tick.spend import call_failed, reserve_one, spend
from dsar_scheduler.tick.store import default_prefix

POLLED = frozenset({State.SUBMITTED})


def poll(ctx: Context) -> None:
    """Poll what the policy picks; calls are reserved in chunks."""
    polls = ctx.policy.polls(ctx.reads, ctx.clock.now())
    ctx.report.plan = polls.plan
    for start in range(0, len(polls.ids), limits.CHUNK):
        chunk = ctx.ledger.requests.submitted(polls.ids[start : start + limits.CHUNK])
        spend(ctx, "status", chunk, _request_id, partial(_poll_guarded, ctx))


def _request_id(request: RequestRow) -> int:
    return request.id


def _poll_guarded(ctx: Context, request: RequestRow, ticket: CallTicket | None) -> bool:
    guarded(ctx, request, "poll", partial(_poll_one, ctx, request, ticket))
    return True


def _poll_one(ctx: Context, request: RequestRow, ticket: CallTicket | None) -> None:
    assert request.remote_request_id is not None
    ticket = ticket or reserve_one(ctx, "status", request.id)
    try:
        status = ctx.client.status(request.remote_request_id)
    except ApiError as err:
        call_failed(ctx, ticket, err)
        answer = outcomes.on_poll_error(
            err, request.errors, request.failures, ctx.limits, ctx.retry_delay
        )
        apply(ctx, request.id, POLLED, answer)
        return
    record_call(ctx, ticket, 200)
    ctx.report.polled += 1
    now = ctx.clock.now()
    seen = outcomes.on_status(
        status.status, status.fail_reason, request.polls, request.failures, ctx.limits
    )
    if isinstance(seen, outcomes.Running):
        record_running(ctx, request.id, seen.polls, ctx.policy.next_poll(now), now)
    elif isinstance(seen, outcomes.Finished):
        _record_done(ctx, request, status, seen.polls, now)
    else:
        apply(ctx, request.id, POLLED, seen)


def _record_done(
    ctx: Context, request: RequestRow, status: RemoteStatus, polls: int, now: datetime
) -> None:
    """The job is done: its files listed (named for storage), to fetch."""
    assert status.expires is not None and request.remote_request_id is not None
    names = [f"{request.remote_request_id}-{n:03d}.json.gz" for n in range(len(status.urls))]
    done = ctx.ledger.files.record_done(
        request.id,
        request.remote_request_id,
        status.urls,
        status.expires,
        now,
        names,
        default_prefix(request.id),
    )
    ctx.ledger.requests.update(request.id, now, polls=polls)
    if done is not None:
        ctx.report.done += 1
        if request.submitted_at is not None:
            ctx.metrics.submit_to_done.observe((now - request.submitted_at).total_seconds())
