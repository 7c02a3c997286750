"""After the API work: old call rows pruned, and the stored totals recorded for the metrics."""

from __future__ import annotations

from datetime import timedelta

from dsar_scheduler.ledger.budget import CALL_HISTORY_NEEDED
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.audit import check_audit_chains
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.records import remove_old_records

log = get_logger("dsar.tick")


def housekeeping(ctx: Context) -> None:
    prune_calls(ctx)
    remove_old_records(ctx)  # records past DSAR_RECORD_RETENTION_DAYS
    check_audit_chains(ctx)
    ctx.ledger.views.save_stored_totals(ctx.clock.now())


def prune_calls(ctx: Context) -> None:
    """Delete call rows older than DSAR_CALL_RETENTION_DAYS, about once an hour, in short
    transactions (the budget reads only the last hour, through an index, so it is correct
    with or without them; they only make the table grow). A failure is logged and left for
    the next hour: it does not fail the tick, whose requests are unaffected."""
    now = ctx.clock.now()
    retention = max(timedelta(days=ctx.settings.call_retention_days), CALL_HISTORY_NEEDED)
    try:
        if not ctx.ledger.lease.claim_chore(limits.PRUNE_CHORE, now, limits.PRUNE_EVERY):
            return
        removed, left = 0, True
        for _ in range(limits.PRUNE_BATCHES):
            if ctx.stop.is_set():
                break
            count = ctx.ledger.budget.prune_calls(now - retention, limits.PRUNE_BATCH)
            removed += count
            if count < limits.PRUNE_BATCH:
                left = False
                break
        if left:  # a backlog (or a shutdown): carry on at the next tick
            ctx.ledger.lease.chore_due(limits.PRUNE_CHORE, now)
    except Exception:
        log.exception("calls.prune_failed")
        return
    if removed:
        log.info("calls.pruned", count=removed, older_than=(now - retention).isoformat())
