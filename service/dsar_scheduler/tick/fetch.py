"""Step 3, fetch: the files of finished requests, most urgent expiry first. Each output URL is
resolved with credentials without following the redirect; the pre-signed location is
downloaded without credentials, verified while it streams, and stored."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from dsar_scheduler.adapters.amplitude import ApiError
from dsar_scheduler.adapters.storage import StorageError
from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier, VerificationError, VerifiedFile
from dsar_scheduler.core import outcomes
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.rows import CallTicket, FileRow, RequestRow
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.apply import apply
from dsar_scheduler.tick.batch import record_call, record_stored
from dsar_scheduler.tick.context import Context, guarded, keep_lease, storage_failed
from dsar_scheduler.tick.recover import UNFETCHED
from dsar_scheduler.tick.report import StopTick
from dsar_scheduler.tick.spend import call_failed, release, reserve_one, spend
from dsar_scheduler.tick.store import store_if_complete

log = get_logger("dsar.tick")


@dataclass
class _Group:
    """The pending files of one request, fetched together; ``state``: the request's state as
    this tick has moved it (``done`` until its first file is stored)."""

    request: RequestRow
    files: list[FileRow]
    state: str


def fetch(ctx: Context) -> None:
    seen: set[int] = set()
    while not ctx.storage_broken:
        page = [
            (f, r)
            for f, r in ctx.ledger.files.pending(ctx.clock.now(), limits.PAGE)
            if f.id not in seen
        ]
        if not page:
            return
        for group in _by_request(page):
            seen.update(f.id for f in group.files)
            _fetch_group(ctx, group)
            if ctx.storage_broken:
                return


def _by_request(page: list[tuple[FileRow, RequestRow]]) -> list[_Group]:
    """Consecutive files of the same request, grouped (the page is ordered by request)."""
    groups: list[_Group] = []
    for file, request in page:
        if groups and groups[-1].request.id == request.id:
            groups[-1].files.append(file)
        else:
            groups.append(_Group(request, [file], request.state))
    return groups


def _fetch_group(ctx: Context, group: _Group) -> None:
    """The pending files of one request: their calls reserved in one transaction, the
    completeness check made once, after the last."""
    request = group.request

    def fetch_one(file: FileRow, ticket: CallTicket | None) -> bool:
        guarded(ctx, request, "fetch", partial(_fetch_file, ctx, group, file, ticket), file)
        return not ctx.storage_broken

    spend(
        ctx,
        "fetch",
        group.files,
        lambda _file: request.id,
        fetch_one,
        then=lambda: guarded(ctx, request, "fetch", partial(store_if_complete, ctx, request)),
    )


def _fetch_file(ctx: Context, group: _Group, file: FileRow, ticket: CallTicket | None) -> None:
    request = group.request
    margin = timedelta(seconds=ctx.settings.expiry_margin_seconds)
    if request.expires_at is not None and request.expires_at - margin <= ctx.clock.now():
        release(ctx, [ticket] if ticket else [])
        return  # too late to start; the next tick's expire step resubmits
    try:
        ctx.client.check_output_url(file.url)
    except ApiError as err:  # refused before anything is sent
        release(ctx, [ticket] if ticket else [])
        _file_error(ctx, file, request, err)
        return
    ticket = ticket or reserve_one(ctx, "fetch", request.id)
    try:
        location = ctx.client.resolve_output(file.url)
    except ApiError as err:
        call_failed(ctx, ticket, err)
        _file_error(ctx, file, request, err)
        return
    record_call(ctx, ticket, 302)
    stored = _download(ctx, file, request, location)
    if stored is None:
        return
    now = ctx.clock.now()
    record_stored(ctx, file.id, stored, now)
    ctx.report.files_stored += 1
    ctx.metrics.files_stored.inc()
    ctx.metrics.bytes_stored.inc(stored.bytes)
    if group.state == State.DONE:
        ctx.ledger.requests.move(request.id, {State.DONE}, State.FETCHING, "first file stored", now)
        group.state = State.FETCHING


def _download(
    ctx: Context, file: FileRow, request: RequestRow, location: str
) -> VerifiedFile | None:
    """Download, verify and store one file; ``None`` if that failed (and was recorded)."""
    key = f"{request.storage_prefix}/{file.name}"
    try:
        with ctx.client.download(location) as download:
            verifier = GzipJsonLinesVerifier(expected_length=download.content_length)
            stored = ctx.storage.put_verified(key, _live(ctx, download.chunks()), verifier)
        ctx.metrics.api_calls.labels("download", "200").inc()
    except ApiError as err:
        ctx.metrics.api_calls.labels("download", str(err.status_code or "none")).inc()
        ctx.metrics.api_errors.labels("download", err.cause).inc()
        _file_error(ctx, file, request, err)
        return None
    except VerificationError as err:
        _file_error(ctx, file, request, f"download failed verification: {err}")
        return None
    except StorageError as err:
        ctx.ledger.files.record_failure(file.id, f"storage: {err}", None)
        ctx.metrics.file_failures.labels("storage").inc()
        storage_failed(ctx, request.id, err)
        return None
    return stored


def _live(ctx: Context, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pass chunks through, keeping the lease and stopping (cleanly) on shutdown."""
    for chunk in chunks:
        if ctx.stop.is_set():
            raise StopTick("shutdown")
        keep_lease(ctx)
        yield chunk


def _file_error(ctx: Context, file: FileRow, request: RequestRow, err: ApiError | str) -> None:
    """A file that could not be fetched: it waits a retry delay; the request is given up
    or resubmitted when the rules say so (``core.outcomes``)."""
    now = ctx.clock.now()
    reason = err if isinstance(err, str) else str(err)
    kind = outcomes.VERIFICATION if isinstance(err, str) else err.kind.value
    ctx.metrics.file_failures.labels(kind).inc()
    retry = outcomes.on_file_error(kind, reason, file.attempts, ctx.retry_delay)
    if isinstance(retry, outcomes.Die):
        ctx.ledger.files.record_failure(file.id, reason, None)
        apply(ctx, request.id, UNFETCHED, retry)
        return
    attempts = ctx.ledger.files.record_failure(
        file.id, retry.error, now + timedelta(seconds=retry.delay_s)
    )
    log.warning(
        "file.fetch_failed",
        request_id=request.id,
        output_index=file.output_index,
        attempts=attempts,
        error=reason,
    )
    fate = outcomes.after_file_failure(
        kind, reason, file.last_error, attempts, file.output_index, request.expiries, ctx.limits
    )
    if fate is not None:
        apply(ctx, request.id, UNFETCHED, fate)
