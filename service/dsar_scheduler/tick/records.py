"""Record retention: a finished request's record (its history and file rows) removed
DSAR_RECORD_RETENTION_DAYS after it ended, its ledger row kept as a tombstone with no
identifier (``ledger.records`` says why the row stays). About once an hour, in short
transactions, a bounded number per tick; a failure is logged and left for the next hour."""

from __future__ import annotations

from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.purge import retention_policy

log = get_logger("dsar.tick")


def remove_old_records(ctx: Context) -> None:
    policy = retention_policy(ctx.settings)
    if policy.record_after is None:
        return  # DSAR_RECORD_RETENTION_DAYS=0: records are kept
    now = ctx.clock.now()
    removed: list[int] = []
    try:
        if not ctx.ledger.lease.claim_chore(limits.RECORD_CHORE, now, limits.RECORD_EVERY):
            return
        left = True
        for _ in range(limits.RECORD_BATCHES):
            if ctx.stop.is_set():
                break
            ids = ctx.ledger.records.removable(now, policy, limits.RECORD_BATCH)
            removed += ctx.ledger.records.remove(ids, policy, now)
            if len(ids) < limits.RECORD_BATCH:
                left = False
                break
        if left:  # a backlog (or a shutdown): carry on at the next tick
            ctx.ledger.lease.chore_due(limits.RECORD_CHORE, now)
    except Exception:
        log.exception("records.remove_failed")
    if removed:
        ctx.report.records_removed += len(removed)
        ctx.metrics.records_removed.inc(len(removed))
        log.info(
            "records.removed",
            count=len(removed),
            first_request_id=min(removed),
            last_request_id=max(removed),
        )
