"""The last step of a request: its manifest written once every file is stored, then the move to
``stored``, by the protocol that lets a ``dsar cancel`` committed first win
(``Files.begin_store`` explains it)."""

from __future__ import annotations

from dsar_scheduler.adapters.storage import StorageError
from dsar_scheduler.core.coverage import section
from dsar_scheduler.core.manifest import MANIFEST_NAME, build_manifest
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.rows import RequestRow
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.context import Context, storage_failed
from dsar_scheduler.tick.coverage import check

log = get_logger("dsar.tick")


def default_prefix(request_id: int) -> str:
    """Where a request's files go when it has no storage prefix recorded yet."""
    return f"req-{request_id:08d}"


def store_if_complete(ctx: Context, request: RequestRow) -> None:
    """Every file stored: the coverage check (``tick.coverage``: supplementary requests for
    Amplitude IDs the export missed, made once), the manifest, then the move to ``stored``
    by compare-and-set. A ``dsar cancel`` that commits first wins: the manifest is deleted
    again and the request stays cancelled."""
    files = ctx.ledger.files.of(request.id, request.remote_request_id)
    if any(f.state != "stored" for f in files):
        return
    now = ctx.clock.now()
    prefix = request.storage_prefix or default_prefix(request.id)
    manifest_key = f"{prefix}/{MANIFEST_NAME}"
    current = {f"{prefix}/{f.name}" for f in files} | {manifest_key}
    if not ctx.ledger.files.begin_store(request.id, manifest_key, now):
        return  # cancelled before its manifest was written: nothing to undo
    try:
        result, supplements = check(ctx, request, files, now)
        manifest = build_manifest(request, files, now, section(result, supplements))
        ctx.storage.put_bytes(manifest_key, manifest)
        for stale in set(ctx.storage.list(prefix)) - current:
            ctx.storage.delete(stale)  # files of an earlier, superseded remote request
    except StorageError as err:  # the next tick's completion sweep writes it
        storage_failed(ctx, request.id, err)
        return
    moved = ctx.ledger.files.finish_store(
        request.id, f"{len(files)} file(s) stored and verified", now
    )
    if moved is None:
        withdraw_manifest(ctx, request.id, manifest_key)
        return
    ctx.report.requests_stored += 1
    if request.done_at is not None:
        ctx.metrics.done_to_stored.observe((now - request.done_at).total_seconds())
    ctx.metrics.queue_to_stored.observe((now - request.queued_at).total_seconds())


def withdraw_manifest(ctx: Context, request_id: int, manifest_key: str) -> None:
    """A manifest was written for a request that is not stored (it was cancelled while
    the manifest was written): delete it, keep the files, and say so in the audit trail.
    If storage refuses, the note stays and the next tick tries again."""
    request = ctx.ledger.requests.get(request_id)
    state = request.state if request is not None else "gone"
    if state == State.STORED:  # stored after all (by this very tick): the manifest stays
        ctx.ledger.files.store_withdrawn(request_id, None, ctx.clock.now())
        return
    try:
        ctx.storage.delete(manifest_key)
    except StorageError as err:
        if request is not None:
            storage_failed(ctx, request.id, err)
        return
    files = (
        ctx.ledger.files.of(request_id, request.remote_request_id) if request is not None else []
    )
    stored = sum(1 for f in files if f.state == "stored")
    reason = (
        f"{MANIFEST_NAME} withdrawn: the request is {state}, not stored (it changed while "
        f"its manifest was being written); {stored} stored file(s) stay under "
        f"{manifest_key.rsplit('/', 1)[0]}/ without a manifest"
    )
    ctx.ledger.files.store_withdrawn(request_id, reason, ctx.clock.now())
    log.info("request.manifest_withdrawn", request_id=request_id, state=state, files=stored)
