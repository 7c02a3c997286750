"""Deletion step 2, erase: pending entries sent to Amplitude's User Privacy API, at most 100
IDs of one project a call, within the key's limits (one call a second, 8 at once).

Each batch is claimed (``submitting``) before its POST, so that a crash during it leaves the
entries to the listing, which shows whether Amplitude took them: nothing is sent twice by
accident. A refusal before Amplitude took anything (400, 401, 404, 429) returns them to
pending; an answer that never came (a timeout, a reset, a 5xx) leaves them ``submitting``."""

from __future__ import annotations

from functools import partial

from dsar_scheduler.adapters.amplitude import ApiError, DeletionReceipt, ErrorKind
from dsar_scheduler.core.deletion import Batch, Entry, Job, after_post, batches
from dsar_scheduler.ledger.deletions import Receipt
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.privacy import REQUESTER, KeyBusy, listed, privacy, privacy_call

log = get_logger("dsar.tick")

#: Deletion calls per tick at most, over every project; pending entries read per tick.
BATCHES_PER_TICK = 16
PENDING_READ = BATCHES_PER_TICK * 100
#: Errors that mean Amplitude took nothing: the entries may be sent again.
REFUSED = frozenset(
    {ErrorKind.REJECTED, ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.RATE_LIMITED}
)


def erase(ctx: Context) -> None:
    """Send the pending entries; a key without room (or refusing) waits for a later tick,
    the other projects go on."""
    pending = ctx.ledger.deletions.entries([Entry.PENDING], limit=PENDING_READ)
    waiting: set[int] = set()
    for batch in batches(pending)[:BATCHES_PER_TICK]:
        if batch.project_id in waiting:
            continue
        try:
            privacy_call(ctx, "deletion", batch.project_id, partial(_post, ctx, batch))
        except KeyBusy as busy:
            log.info("erase.deferred", project=batch.project_id, reason=str(busy))
            waiting.add(batch.project_id)
        except (ApiError, ValueError) as err:
            log.warning("erase.failed", project=batch.project_id, error=str(err))
            waiting.add(batch.project_id)


def _post(ctx: Context, batch: Batch) -> None:
    """Claim the batch's entries, then POST those claimed (another replica's claim wins)."""
    claimed = set(ctx.ledger.deletions.claim(batch.entry_ids, ctx.clock.now()))
    if not claimed:
        return
    pairs = [
        (e, a) for e, a in zip(batch.entry_ids, batch.amplitude_ids, strict=True) if e in claimed
    ]
    batch = Batch(batch.project_id, tuple(e for e, _ in pairs), tuple(a for _, a in pairs))
    try:
        answer = privacy(ctx).delete_users(batch.project_id, batch.amplitude_ids, (), REQUESTER)
    except ApiError as err:
        if err.kind in REFUSED:
            _refused(ctx, batch, str(err), note=err.kind is not ErrorKind.RATE_LIMITED)
        raise
    except ValueError as err:  # refused by the client before anything was sent
        _refused(ctx, batch, str(err))
        raise
    _record(ctx, batch, answer)


def _refused(ctx: Context, batch: Batch, why: str, note: bool = True) -> None:
    """Amplitude (or the client) took nothing: the entries are pending again, and (but for
    a 429, which only says when) their requests' audit trails say why."""
    now = ctx.clock.now()
    ctx.ledger.deletions.unclaim(batch.entry_ids, now)
    if not note:
        return
    what = f"deletion call refused, sent again at a later tick: {why}"
    ctx.ledger.deletions.note(batch.entry_ids, what, None, now)


def _record(ctx: Context, batch: Batch, answer: DeletionReceipt) -> None:
    """The POST answer applied to the entries and kept as their first receipt; entries it
    does not mention stay ``submitting`` for the listing to settle."""
    now = ctx.clock.now()
    job = Job(answer.day or now.date(), answer.status or "", listed(answer.entries))
    invalid = [int(i) for i in answer.invalid_ids if i.isdigit()]
    changes, missing = after_post(batch, job, invalid, REQUESTER)
    receipt = Receipt(batch.project_id, "post", 200, answer.body.raw)
    ctx.ledger.deletions.apply(changes, receipt, now)
    log.info(
        "erase.sent",
        project=batch.project_id,
        entries=len(batch.entry_ids),
        invalid=len(invalid),
        unconfirmed=len(missing),
    )
