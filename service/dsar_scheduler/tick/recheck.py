"""Deletion step 4, the re-ingestion watch: 7 and 30 days after an entry was verified, its
subject's user ID is searched again in that project. Deleting a user does not stop its app
(or a warehouse import) from sending its events, and Amplitude files them under a new
Amplitude ID: one found is recorded on the entries, kept as a receipt, written to the
request's audit trail with what to do, counted and alerted on. A check that finds nothing is
kept too: it shows the data stayed deleted (CCPA §7022(e) allows that record).

It comes last in the project keys' search budget: a few checks a tick, and a project with no
search slot left waits for a later tick."""

from __future__ import annotations

from functools import partial

from dsar_scheduler.adapters.amplitude import ApiError
from dsar_scheduler.core.deletion import RECHECKS, came_back, checks_passed
from dsar_scheduler.ledger.deletions import Receipt
from dsar_scheduler.ledger.rechecks import Watched
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.privacy import KeyBusy, privacy, privacy_call, search_body

log = get_logger("dsar.tick")

#: Subjects (request, project) checked per tick at most: one search each.
RECHECKS_PER_TICK = 20


def recheck(ctx: Context) -> None:
    """The checks that are due, the longest verified first."""
    waiting: set[int] = set()
    for watched in ctx.ledger.rechecks.due(ctx.clock.now(), RECHECKS_PER_TICK):
        project = watched.project_id
        if project in waiting:
            continue
        try:
            _recheck_one(ctx, watched)
        except KeyBusy as busy:
            log.info("recheck.deferred", project=project, reason=str(busy))
            waiting.add(project)
        except (ApiError, ValueError) as err:
            log.warning(
                "recheck.failed",
                request_id=watched.target.request_id,
                project=project,
                error=str(err),
            )
            waiting.add(project)


def _recheck_one(ctx: Context, watched: Watched) -> None:
    target, project = watched.target, watched.project_id
    if target.user_id is None:
        _cannot_watch(ctx, watched)
        return
    api = privacy(ctx)
    found = privacy_call(
        ctx, "search", project, partial(api.search_user, project, target.user_id), target.request_id
    )
    back = came_back(
        target.user_id, watched.deleted, [(m.user_id, m.amplitude_id) for m in found.matches]
    )
    passed = max(checks_passed(e.verified_at, ctx.clock.now()) for e in watched.due)
    when = f"{RECHECKS[max(passed, 1) - 1].days} days after verification"
    if back:
        what = (
            f"re-ingested: the user ID came back under {len(back)} new Amplitude ID(s) in "
            f"project {project} ({when}): the app or a warehouse import still sends this "
            "user's events; set the SDK's opt-out / stop the import, then file a new deletion"
        )
    else:
        what = f"re-ingestion check ({when}) in project {project}: not found again, still deleted"
    receipt = Receipt(project, "recheck", 200, search_body(found))
    if not ctx.ledger.rechecks.record(watched, back, what, receipt, ctx.clock.now()):
        return
    ctx.metrics.deletion_rechecks.labels("reingested" if back else "clear").inc()
    if back:
        log.warning(
            "recheck.reingested", request_id=target.request_id, project=project, ids=len(back)
        )
    else:
        log.info("recheck.clear", request_id=target.request_id, project=project)


def _cannot_watch(ctx: Context, watched: Watched) -> None:
    """A subject named only by its Amplitude ID: a returning user gets a new Amplitude ID
    that nothing ties to the old one, so there is nothing to search for. Said once, and
    the checks counted as done."""
    what = (
        f"re-ingestion watch in project {watched.project_id}: not possible, the request names "
        "the subject only by Amplitude ID and a returning user would get a new one that "
        "nothing ties to it; no check made"
    )
    if ctx.ledger.rechecks.record(watched, frozenset(), what, None, ctx.clock.now(), no_more=True):
        ctx.metrics.deletion_rechecks.labels("skipped").inc()
