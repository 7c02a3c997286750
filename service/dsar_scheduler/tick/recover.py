"""Step 2, recover: what a stopped process left half done is settled before any new call (calls
without an answer, POSTs without an outcome, manifests without their move), the requests whose
files are all stored are completed, and results about to expire are resubmitted."""

from __future__ import annotations

from datetime import timedelta

from dsar_scheduler.core import outcomes
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.rows import RequestRow
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.apply import apply
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.store import store_if_complete, withdraw_manifest

log = get_logger("dsar.tick")

#: Where results expiring unfetched are found: the expire step and the fetch step (404s).
UNFETCHED = frozenset({State.DONE, State.FETCHING})


def settle_unknown_calls(ctx: Context) -> None:
    """Calls an earlier, stopped process reserved but never recorded an answer for (it
    died mid-call, or its database went away): their outcome is unknown, their cost stays
    spent. We hold the lease and have reserved nothing yet, so none of them is live."""
    unknown = ctx.ledger.budget.mark_unknown_calls(ctx.clock.now())
    for kind, _cost in unknown:
        ctx.metrics.calls_unknown.labels(kind).inc()
    if unknown:
        log.warning(
            "calls.outcome_unknown",
            count=len(unknown),
            cost=sum(cost for _, cost in unknown),
            note="reserved by a process that stopped before recording the answer; counted as spent",
        )


def recover(ctx: Context) -> None:
    resubmit_interrupted(ctx)
    settle_store_notes(ctx)
    complete_stored(ctx)
    expire(ctx)


def resubmit_interrupted(ctx: Context) -> None:
    """A request still ``submitting`` when a tick starts was left by a process that
    died between reserving and recording a POST (we hold the lease, so nobody else is
    mid-POST). The POST may have reached Amplitude; the API has no idempotency key or
    list endpoint to check, so resubmit: a duplicate remote request only costs budget."""
    for request in ctx.ledger.requests.in_state(State.SUBMITTING):
        ctx.ledger.requests.move(
            request.id,
            {State.SUBMITTING},
            State.QUEUED,
            "POST outcome unknown (the process stopped mid-submit); resubmitting",
            ctx.clock.now(),
            next_action_at=None,
        )


def settle_store_notes(ctx: Context) -> None:
    """A process that stopped between writing a manifest and recording the outcome left
    a note: a request still ``done``/``fetching`` is completed by the completion sweep
    that follows; any other state (a cancel won) must not keep a manifest."""
    for request_id, manifest_key, state in ctx.ledger.files.store_notes():
        if state in UNFETCHED:
            continue
        if ctx.storage_broken:
            return
        withdraw_manifest(ctx, request_id, manifest_key)


def complete_stored(ctx: Context) -> None:
    """Requests whose files were all stored but whose manifest was not written."""
    for request in ctx.ledger.files.completed_unrecorded():
        store_if_complete(ctx, request)


def expire(ctx: Context) -> None:
    """Results about to expire with files unfetched: resubmit, or give up at the limit."""
    now = ctx.clock.now()
    margin = timedelta(seconds=ctx.settings.expiry_margin_seconds)
    for request in ctx.ledger.requests.expiring(now + margin):
        expire_request(ctx, request, "results expired before every file was stored")


def expire_request(ctx: Context, request: RequestRow, reason: str) -> None:
    """The results are gone before every file was stored: resubmit, or give up."""
    apply(ctx, request.id, UNFETCHED, outcomes.on_expiry(reason, request.expiries, ctx.limits))
