"""The periodic check of the audit chains (a housekeeping chore), in bounded work per run.

What it verifies each run, and why:
- the requests that got new events since the last run (events past a watermark, read by
  the events' primary key): a writer that forked a chain, or an edit of a request in
  flight, is seen within a run or two;
- a rotating sweep over every request by id, ``SWEEP`` a run, wrapping at the end: an edit
  of an old, finished request (which gets no new events) is seen within one cycle, about
  (requests / SWEEP) runs; every 15 minutes at 2,000 a run that is 8 days for a million;
- the requests already known broken, so the gauge falls once one is put right.
The work per run is bounded by ``RECENT_EVENTS`` and ``SWEEP``; a backlog of new events (a
large admission) carries over to the next tick. A commit that lands out of id order behind
the watermark is left to the sweep.
"""

from __future__ import annotations

from datetime import timedelta

from dsar_scheduler.core.chain import ChainVerdict
from dsar_scheduler.ledger.audit import MAX_BROKEN, CheckProgress
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.context import Context

log = get_logger("dsar.audit")

CHORE = "audit-chain-chore"
EVERY = timedelta(minutes=15)
#: Events read past the watermark per run (their requests are verified).
RECENT_EVENTS = 10_000
#: Requests re-verified by the sweep per run.
SWEEP = 2_000


def check_audit_chains(ctx: Context) -> None:
    """Verify a bounded batch of chains, record what is broken (the gauge reads it) and
    count the checks. A failure is logged and left for the next run: it does not fail the
    tick, whose requests are unaffected."""
    now = ctx.clock.now()
    try:
        if ctx.stop.is_set() or not ctx.ledger.lease.claim_chore(CHORE, now, EVERY):
            return
        before = ctx.ledger.audit.progress()
        recent, watermark = ctx.ledger.audit.changed_since(before.event_watermark, RECENT_EVENTS)
        sweep = ctx.ledger.audit.requests_after(before.sweep_cursor, SWEEP)
        chains = ctx.ledger.audit.chains([*recent, *sweep, *before.broken])
        verdicts = {request_id: chain.verify() for request_id, chain in chains.items()}
        broken = {rid: v.describe() for rid, v in sorted(verdicts.items()) if not v.ok}
        cursor = sweep[-1] if len(sweep) == SWEEP else 0  # the end reached: start again
        ctx.ledger.audit.save_progress(CheckProgress(watermark, cursor, broken), now)
        if watermark - before.event_watermark >= RECENT_EVENTS:
            ctx.ledger.lease.chore_due(CHORE, now)  # more new events: carry on next tick
    except Exception:
        log.exception("audit.check_failed")
        return
    _report(ctx, before, verdicts, broken)


def _report(
    ctx: Context, before: CheckProgress, verdicts: dict[int, ChainVerdict], broken: dict[int, str]
) -> None:
    found = sum(1 for v in verdicts.values() if not v.ok)
    ctx.metrics.audit_checks.labels(result="ok").inc(len(verdicts) - found)
    ctx.metrics.audit_checks.labels(result="broken").inc(found)
    for request_id, detail in broken.items():
        if request_id not in before.broken:
            log.error("audit.chain_broken", request_id=request_id, detail=detail)
    for request_id in before.broken.keys() - broken.keys():
        log.info("audit.chain_verified_again", request_id=request_id)
    if len(broken) >= MAX_BROKEN:
        log.error("audit.many_chains_broken", remembered=MAX_BROKEN)
    if verdicts:
        log.info("audit.checked", requests=len(verdicts), broken=len(broken))
