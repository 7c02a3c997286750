"""Step 4, poll: the status of what the policy picks (the planner's required and optional polls,
or the seed's fixed interval), up to DSAR_CONCURRENCY at once; a job found done has its files
listed, to fetch at once."""

from __future__ import annotations

from concurrent.futures import Future
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
from dsar_scheduler.tick.fanout import FanOut, api_answer, fan_out
from dsar_scheduler.tick.spend import call_failed, reserve_one, spend
from dsar_scheduler.tick.store import default_prefix

POLLED = frozenset({State.SUBMITTED})


def poll(ctx: Context) -> None:
    """Poll what the policy picks: calls reserved in chunks, sent on the lanes, answers
    settled here as they come."""
    polls = ctx.policy.polls(ctx.reads, ctx.clock.now())
    ctx.report.plan = polls.plan
    with fan_out(ctx) as fan:
        for start in range(0, len(polls.ids), limits.CHUNK):
            chunk = ctx.ledger.requests.submitted(polls.ids[start : start + limits.CHUNK])
            send = partial(_send_guarded, ctx, fan)
            spend(ctx, "status", chunk, _request_id, send, lane=fan.lane)


def _request_id(request: RequestRow) -> int:
    return request.id


def _send_guarded(
    ctx: Context, fan: FanOut, request: RequestRow, ticket: CallTicket | None
) -> bool:
    guarded(ctx, request, "poll", partial(_send, ctx, fan, request, ticket))
    return True


def _send(ctx: Context, fan: FanOut, request: RequestRow, ticket: CallTicket | None) -> None:
    remote_id = request.remote_request_id
    assert remote_id is not None
    ticket = ticket or reserve_one(ctx, "status", request.id)
    fan.start(
        partial(api_answer, partial(ctx.client.status, remote_id)),
        partial(_settle_guarded, ctx, request, ticket),
    )


def _settle_guarded(
    ctx: Context, request: RequestRow, ticket: CallTicket, answer: Future[RemoteStatus | ApiError]
) -> None:
    guarded(ctx, request, "poll", partial(_settle, ctx, request, ticket, answer))


def _settle(
    ctx: Context, request: RequestRow, ticket: CallTicket, answer: Future[RemoteStatus | ApiError]
) -> None:
    status = answer.result()
    if isinstance(status, ApiError):
        call_failed(ctx, ticket, status)
        failure = outcomes.on_poll_error(
            status, request.errors, request.failures, ctx.limits, ctx.retry_delay
        )
        apply(ctx, request.id, POLLED, failure)
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
