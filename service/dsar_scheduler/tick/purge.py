"""Step 6, after the API work: files past their retention removed from storage, each file's
row kept as the record of what was removed (``ledger.retention`` has the protocol).

A purge under way (begun by an earlier tick, or by a process killed mid-purge) carries on
every tick; new purges are looked for about once an hour (a scan of the stored requests),
sooner after ``dsar delivered`` with DSAR_PURGE_ON_DELIVERY. The work per tick is bounded,
and a storage failure stops the purge for this tick (counted, logged, retried at the next):
it does not fail the tick, whose requests are unaffected, but it raises its own alert.
"""

from __future__ import annotations

import hashlib

from dsar_scheduler.adapters.storage import StorageError
from dsar_scheduler.config import Settings
from dsar_scheduler.core.manifest import MANIFEST_NAME
from dsar_scheduler.core.retention import RetentionPolicy
from dsar_scheduler.ledger.purge_targets import PurgeTarget
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.context import Context, keep_lease
from dsar_scheduler.tick.report import StopTick
from dsar_scheduler.tick.store import default_prefix

log = get_logger("dsar.tick")


def retention_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy.from_days(
        settings.result_retention_days, settings.record_retention_days, settings.purge_on_delivery
    )


def purge(ctx: Context) -> None:
    """Purge what is due, within this tick's bounds, and record the backlog left."""
    if ctx.storage_broken or ctx.stop.is_set():
        return  # storage already failed this tick: the next one tries
    policy = retention_policy(ctx.settings)
    now = ctx.clock.now()
    retention = ctx.ledger.retention
    try:
        targets = retention.under_way(limits.PURGE_REQUESTS)
        searched = ctx.ledger.lease.claim_chore(limits.PURGE_CHORE, now, limits.PURGE_EVERY)
        if searched:
            targets = _with_new(ctx, policy, targets)
        finished = _purge_all(ctx, policy, targets)
        if searched and not finished:
            ctx.ledger.lease.chore_due(limits.PURGE_CHORE, ctx.clock.now())
        if searched or targets:
            retention.record_backlog(ctx.clock.now(), policy)
    except StopTick:
        return  # shutdown or the lease lost: whatever was begun resumes next tick
    except Exception as exc:
        _failed(ctx, None, exc)


def _with_new(
    ctx: Context, policy: RetentionPolicy, targets: list[PurgeTarget]
) -> list[PurgeTarget]:
    """The purges under way, then the stored requests due, then other requests' old files."""
    now, room = ctx.clock.now(), limits.PURGE_REQUESTS - len(targets)
    seen = {t.id for t in targets}
    for found in (ctx.ledger.retention.due, ctx.ledger.retention.leftovers):
        if room <= 0:
            break
        new = [t for t in found(now, policy, room) if t.id not in seen]
        targets = targets + new
        seen |= {t.id for t in new}
        room -= len(new)
    return targets


def _purge_all(ctx: Context, policy: RetentionPolicy, targets: list[PurgeTarget]) -> bool:
    """Purge ``targets`` in order; ``True`` if every one was finished (none left for the
    next tick because of a bound, a failure or a stop)."""
    finished = len(targets) < limits.PURGE_REQUESTS  # else there may be more than it took
    files_left = limits.PURGE_FILES
    for target in targets:
        if ctx.stop.is_set() or files_left <= 0:
            return False
        keep_lease(ctx)
        try:
            done, used = _purge_one(ctx, policy, target, files_left)
        except StorageError as err:
            _failed(ctx, target, err)
            return False  # storage trouble is rarely one request's: stop until next tick
        except Exception as exc:  # one request's trouble (a bug, a value) spares the others
            _failed(ctx, target, exc)
            finished = False
            continue
        files_left -= used
        finished = finished and done
    return finished


def _purge_one(
    ctx: Context, policy: RetentionPolicy, target: PurgeTarget, room: int
) -> tuple[bool, int]:
    """Begin (if not yet), remove up to ``room`` files, then the rest of the folder and the
    manifest, and finish. ``(finished, files deleted)``."""
    retention = ctx.ledger.retention
    prefix = target.storage_prefix or default_prefix(target.id)
    manifest_key = f"{prefix}/{MANIFEST_NAME}"
    if not target.begun:
        digest = _digest(ctx, manifest_key) if target.whole_folder else None
        if not retention.begin(target, policy, ctx.clock.now(), digest):
            return True, 0  # moved on, or no longer due: nothing to do
    files = retention.unpurged_files(target, ctx.clock.now(), policy)
    for file in files[:room]:
        ctx.storage.delete(f"{prefix}/{file.name}")  # gone already (a resumed purge): fine
        retention.file_purged(target.id, file.id, ctx.clock.now())
        ctx.metrics.files_purged.inc()
        ctx.metrics.bytes_purged.inc(file.bytes or 0)
    if len(files) > room:
        return False, room
    if target.whole_folder:
        for key in ctx.storage.list(prefix):  # objects no row names: superseded jobs' files
            if key != manifest_key:
                ctx.storage.delete(key)
        ctx.storage.delete(manifest_key)  # last: a stored request has its manifest until now
    if retention.finish(target, policy, ctx.clock.now(), target.whole_folder):
        ctx.report.purged += 1
        log.info("request.purged", request_id=target.id, state=target.state, removed=len(files))
    return True, len(files)


def _digest(ctx: Context, manifest_key: str) -> str | None:
    """The manifest's sha256, kept in the audit trail after the manifest is gone (it names
    the subject, so it goes with the files); ``None`` if it is not in storage."""
    try:
        return hashlib.sha256(ctx.storage.read_bytes(manifest_key)).hexdigest()
    except FileNotFoundError:
        return None


def _failed(ctx: Context, target: PurgeTarget | None, exc: Exception) -> None:
    ctx.metrics.purge_failures.inc()
    ctx.report.purge_failures += 1
    request_id = None if target is None else target.id
    if isinstance(exc, StorageError):
        log.error("purge.failed", request_id=request_id, error=str(exc))
    else:
        log.exception("purge.failed", request_id=request_id, error=type(exc).__name__)
