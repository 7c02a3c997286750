"""The deletion steps of a tick, after the DSAR steps: resolve the subjects, send what is
pending, read the listings (and verify what is done), search verified ones again for
re-ingestion. They run only with projects configured (DSAR_PROJECTS_FILE), on the project
keys' own limits, so a full DSAR budget does not hold them back; a shutdown or a lost lease
does."""

from __future__ import annotations

from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.erase import erase
from dsar_scheduler.tick.listing import listing
from dsar_scheduler.tick.recheck import recheck
from dsar_scheduler.tick.report import StopTick
from dsar_scheduler.tick.resolve import resolve_step

log = get_logger("dsar.tick")

#: ``TickReport.stopped_by`` values after which no step may call anything.
HARD_STOPS = frozenset({"shutdown", "tick lease lost"})
#: Stored exports of access_and_deletion requests moved on to their deletion, per tick.
STARTS_PER_TICK = 500


def deletion_steps(ctx: Context) -> None:
    if ctx.privacy is None or not ctx.settings.projects:
        return
    if ctx.stop.is_set() or ctx.report.stopped_by in HARD_STOPS:
        return
    try:
        ctx.ledger.deletions.start_after_export(STARTS_PER_TICK, ctx.clock.now())
        resolve_step(ctx)  # a. the subjects' IDs in every project, or held for review
        erase(ctx)  # b. pending entries sent, 100 IDs a call per project
        listing(ctx)  # c. the projects' job listings read, done entries verified
        recheck(ctx)  # d. verified ones searched again at 7 and 30 days (re-ingestion)
    except StopTick as stop:
        ctx.report.stopped_by = ctx.report.stopped_by or str(stop)
        log.info("tick.stopped_early", reason=str(stop), step="deletion")
    _prune(ctx)


def _prune(ctx: Context) -> None:
    """Privacy calls older than the hour their limits read are removed; a failure waits for
    the next tick (it only lets the table grow)."""
    try:
        ctx.ledger.privacy_calls.prune(ctx.clock.now())
    except Exception:
        log.exception("privacy_calls.prune_failed")
