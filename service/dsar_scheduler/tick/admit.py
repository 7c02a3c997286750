"""Step 1, admit: new queue rows become requests (validated; a bad row is rejected with the
reason), a page at a time, reading the queue past the floor below which every row is in."""

from __future__ import annotations

from collections.abc import Sequence

from dsar_scheduler.core import schedule
from dsar_scheduler.core.states import State
from dsar_scheduler.core.validation import Accepted, RawQueueRow, Rejected, check
from dsar_scheduler.ledger.rows import Admission, QueueFloor
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.context import Context

log = get_logger("dsar.tick")

Verdicts = list[tuple[RawQueueRow, Accepted | Rejected]]


def admit(ctx: Context) -> None:
    """Admit queue rows in pages, starting past the queue floor: the rows below it all have
    ledger rows, so a tick reads what is recent, not the service's whole history. The floor
    then moves up to the highest id the previous tick saw, or to just below the first row
    this tick leaves unadmitted, whichever is lower.

    A row that commits a tick after a later one was read (an upstream transaction held open
    that long) can sit below the floor unseen; the whole queue is read again every
    QUEUE_SWEEP_EVERY, which admits it then."""
    now = ctx.clock.now()
    start = ctx.ledger.queue.floor(now)
    top = ctx.ledger.queue.last_id()  # before reading: a row added meanwhile waits
    after = start.floor
    left: list[int] = []  # queue ids this tick leaves unadmitted
    for _ in range(limits.MAX_ADMIT_BATCHES):
        rows = ctx.ledger.queue.pending_rows(limits.ADMIT_BATCH, after)
        if not rows:
            break
        after = rows[-1].queue_id
        left += _admit_page(ctx, rows)
        if len(rows) < limits.ADMIT_BATCH:
            break
    else:  # pages left for the next tick
        left.append(after + 1)
    move = schedule.next_floor(start.floor, start.seen, top, left, now, limits.QUEUE_SWEEP_EVERY)
    if move is not None:
        ctx.ledger.queue.set_floor(QueueFloor(move.floor, move.seen), now, move.sweep_due)


def _admit_page(ctx: Context, rows: Sequence[RawQueueRow]) -> list[int]:
    """One page in one transaction (row by row if that fails); the queue ids of the rows
    that could not be written at all."""
    now, settings = ctx.clock.now(), ctx.settings
    can_delete = bool(settings.projects)
    verdicts = [
        (row, check(row, now, settings.max_range_days, settings.default_regime, can_delete))
        for row in rows
    ]
    failed: list[int] = []
    try:
        created = ctx.ledger.queue.admit(verdicts, ctx.clock.now())
    except Exception:
        log.exception("admit.batch_failed", rows=len(rows))
        created, failed = _admit_one_by_one(ctx, verdicts)
    for request in created:
        if request.state == State.REJECTED:
            ctx.report.rejected += 1
            continue
        ctx.report.admitted += 1
        if ctx.settings.log_subject_ids:  # the operator asked for subjects in logs
            log.info("request.admitted", request_id=request.id, amplitude_id=request.amplitude_id)
    return failed


def _admit_one_by_one(ctx: Context, verdicts: Verdicts) -> tuple[list[Admission], list[int]]:
    """A batch failed (a value the ledger cannot hold): admit rows alone, and reject with
    the database's complaint any row that still cannot be written. Returns what was
    written, and the queue ids of rows that could not be written at all."""
    created: list[Admission] = []
    failed: list[int] = []
    for row, verdict in verdicts:
        try:
            created += ctx.ledger.queue.admit([(row, verdict)], ctx.clock.now())
        except Exception as exc:
            reason = Rejected(f"row cannot be admitted: {type(exc).__name__}")
            bare = RawQueueRow(row.queue_id, None, None, None, None, None)
            try:
                created += ctx.ledger.queue.admit([(bare, reason)], ctx.clock.now())
            except Exception:
                log.exception("admit.row_failed", queue_id=row.queue_id)
                failed.append(row.queue_id)
    return created, failed
