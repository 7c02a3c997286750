"""Deletion step 3, listing: each project with entries at Amplitude has its job listing read at
most every DSAR_DELETION_LISTING_HOURS (shared by replicas as a chore), over the window
its entries need and never the whole history. Every change it shows is recorded with the
listing as its receipt; an entry a crash left ``submitting`` that the listing does not show
goes back to pending (Amplitude never took it); then the project's done entries are verified.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial

from dsar_scheduler.adapters.amplitude import ApiError
from dsar_scheduler.core.deletion import (
    IN_FLIGHT,
    Entry,
    EntryRow,
    Job,
    listing_window,
    lost,
    reconcile,
)
from dsar_scheduler.ledger.deletions import Receipt
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.privacy import REQUESTER, KeyBusy, listed, privacy, privacy_call
from dsar_scheduler.tick.verify import verify

log = get_logger("dsar.tick")

#: Entries whose project's listing is read: in flight at Amplitude, or done and to verify.
WATCHED = IN_FLIGHT | {Entry.DONE}
#: Entries read per tick at most, over every project.
WATCHED_READ = 20_000
#: A ``submitting`` entry is taken for lost only this long after its claim: a POST whose
#: answer timed out may still be taken by Amplitude a little later, and must not go twice.
LOST_AFTER = timedelta(hours=1)


def chore(project: int) -> str:
    return f"deletion-listing-{project}"


def listing(ctx: Context) -> None:
    """Read the listing of each project whose turn it is; a project that cannot be read now
    (no slot, an error) is tried again at the next tick."""
    rows = ctx.ledger.deletions.entries(WATCHED, limit=WATCHED_READ)
    by_project: dict[int, list[EntryRow]] = {}
    for row in rows:
        by_project.setdefault(row.project_id, []).append(row)
    every = timedelta(hours=ctx.settings.deletion_listing_hours)
    for project, entries in sorted(by_project.items()):
        now = ctx.clock.now()
        if not ctx.ledger.lease.claim_chore(chore(project), now, every):
            continue
        try:
            _list_project(ctx, project, entries)
        except (KeyBusy, ApiError, ValueError) as err:
            log.info("listing.deferred", project=project, reason=str(err))
            ctx.ledger.lease.chore_due(chore(project), now)


def _list_project(ctx: Context, project: int, entries: Sequence[EntryRow]) -> None:
    flying = [e for e in entries if e.state in IN_FLIGHT]
    if flying:
        _reconcile(ctx, project, flying)
    verify(ctx, project)


def _reconcile(ctx: Context, project: int, flying: Sequence[EntryRow]) -> None:
    now = ctx.clock.now()
    window = listing_window(flying, now.date())
    assert window is not None  # entries in flight have one
    start, end = window
    api = privacy(ctx)
    answer = privacy_call(
        ctx, "deletion", project, partial(api.list_deletions, project, start, end)
    )
    jobs = [Job(j.day, j.status, listed(j.entries), j.active_scrub_done_date) for j in answer.jobs]
    now = ctx.clock.now()
    changes = reconcile(flying, jobs, REQUESTER)
    if changes:
        receipt = Receipt(project, "listing", 200, answer.body.raw)
        ctx.ledger.deletions.apply(changes, receipt, now)
    gone = lost([e for e in flying if _claimed_before(e, now - LOST_AFTER)], jobs, REQUESTER)
    if gone:
        ctx.ledger.deletions.unclaim(gone, now)
        log.warning("listing.lost", project=project, entries=len(gone))
    log.info("listing.read", project=project, jobs=len(jobs), changes=len(changes))


def _claimed_before(entry: EntryRow, when: datetime) -> bool:
    return entry.submitted_at is not None and entry.submitted_at <= when
