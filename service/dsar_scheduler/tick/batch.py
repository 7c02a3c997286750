"""Writes held back until the end of a chunk of calls, then made in one transaction
(``Ledger.record_chunk``); outside a chunk each is written at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from dsar_scheduler.adapters.verify import VerifiedFile
from dsar_scheduler.core.coverage import encode_ids
from dsar_scheduler.ledger.rows import CallTicket, Submitted
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.context import Batch, Context


@contextmanager
def batch_of_calls(ctx: Context) -> Iterator[None]:
    """Within a chunk of calls, their outcomes, polls that found a job still running and
    stored files are written in one transaction at the end of the chunk (also when the
    chunk stops early). A crash before that loses only bookkeeping that is safe to lose:
    the calls stay counted as spent, a request is polled again, a file fetched again."""
    outer = ctx.batch
    if outer is None:
        ctx.batch = Batch()
    try:
        yield
    finally:
        if outer is None:
            flush(ctx)
            ctx.batch = None


def flush(ctx: Context) -> None:
    batch = ctx.batch
    if batch:
        ctx.batch = Batch()
        ctx.ledger.record_chunk(
            ctx.clock.now(), batch.calls, batch.running, batch.stored, batch.submitted
        )


def record_call(ctx: Context, ticket: CallTicket, code: int | None, outcome: str = "ok") -> None:
    """A call answered (or failed): its outcome recorded, its cost counted from now."""
    if ctx.batch is not None:
        ctx.batch.calls.append((ticket, outcome, code))
    else:
        ctx.ledger.budget.finish_call(ticket, outcome, code, ctx.clock.now())
    ctx.metrics.api_calls.labels(ticket.kind, str(code) if code else "none").inc()


def record_running(
    ctx: Context, request_id: int, polls: int, next_poll: datetime, now: datetime
) -> None:
    """A poll found the job still running."""
    if ctx.batch is not None:
        ctx.batch.running.append((request_id, polls, next_poll))
    else:
        ctx.ledger.requests.update(
            request_id,
            now,
            polls=polls,
            errors=0,
            last_polled_at=now,
            next_action_at=next_poll,
        )


def record_stored(ctx: Context, file_id: int, stored: VerifiedFile, now: datetime) -> None:
    """A file stored and verified, with the Amplitude IDs its events carry."""
    ids = encode_ids(stored.amplitude_ids, stored.ids_capped)
    if ctx.batch is not None:
        ctx.batch.stored.append((file_id, stored.bytes, stored.sha256, stored.event_count, ids))
    else:
        ctx.ledger.files.record_stored(
            file_id, stored.bytes, stored.sha256, stored.event_count, ids, now
        )


def record_accepted(ctx: Context, accepted: Submitted) -> None:
    """A POST Amplitude accepted. In a chunk it is recorded with the chunk's other writes,
    every SUBMIT_FLUSH POSTs: a crash before that leaves these in ``submitting``,
    resubmitted by the next tick."""
    if ctx.batch is None:
        ctx.ledger.record_chunk(accepted.at, [], [], [], [accepted])
        return
    ctx.batch.submitted.append(accepted)
    if len(ctx.batch.submitted) >= limits.SUBMIT_FLUSH:
        flush(ctx)
