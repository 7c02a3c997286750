"""Deletion step 4, verify: an entry Amplitude calls done is verified once User Search no
longer finds its Amplitude ID in the project. A failed verification leaves it done, is
counted and written to the request's audit trail, and is tried again at the project's next
listing (``listing``), within the key's search limits."""

from __future__ import annotations

from functools import partial

from dsar_scheduler.core.deletion import Change, Entry, EntryRow, still_there
from dsar_scheduler.core.identity import Subject
from dsar_scheduler.ledger.deletions import Receipt, Target
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.privacy import privacy, privacy_call, search_body

log = get_logger("dsar.tick")

#: Requests verified per project per listing at most (one search each).
VERIFY_PER_PROJECT = 50
VERIFIED = "User Search no longer finds it in the project"


def verify(ctx: Context, project: int) -> None:
    """Verify the project's done entries, one search per request. ``KeyBusy`` (no search
    slot left) and ``ApiError`` reach the caller, which tries again at a later tick."""
    for target, entries in ctx.ledger.deletions.done(project, VERIFY_PER_PROJECT * 100)[
        :VERIFY_PER_PROJECT
    ]:
        _verify_one(ctx, project, target, entries)


def _verify_one(ctx: Context, project: int, target: Target, entries: list[EntryRow]) -> None:
    """Search for the subject as the request names it: its user ID reaches every Amplitude
    ID of the user in the project (a new one, re-ingested, is the rechecks' business)."""
    term = Subject(target.user_id, target.amplitude_id).search_term()
    api = privacy(ctx)
    found = privacy_call(
        ctx, "search", project, partial(api.search_user, project, term), target.request_id
    )
    left = still_there(
        [e.amplitude_id for e in entries], [(m.user_id, m.amplitude_id) for m in found.matches]
    )
    receipt = Receipt(project, "verify", 200, search_body(found))
    now = ctx.clock.now()
    gone = [
        Change(e.id, Entry.VERIFIED, None, None, None, VERIFIED)
        for e in entries
        if e.amplitude_id not in left
    ]
    if gone:
        ctx.ledger.deletions.apply(gone, receipt, now)
        log.info("verify.done", request_id=target.request_id, project=project, entries=len(gone))
    if not left:
        return
    ctx.metrics.deletion_verification_failures.inc()
    what = (
        f"verification failed: User Search still finds {len(left)} deleted Amplitude ID(s) "
        f"in project {project}; checked again at the next listing"
    )
    kept = None if gone else receipt  # the same answer is kept once per request
    ctx.ledger.deletions.note([e.id for e in entries if e.amplitude_id in left], what, kept, now)
    log.warning("verify.failed", request_id=target.request_id, project=project, left=len(left))
