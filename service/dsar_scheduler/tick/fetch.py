"""Step 3, fetch: the files of finished requests, most urgent expiry first, up to
DSAR_CONCURRENCY at once across the requests of a page. Each output URL is resolved with
credentials without following the redirect; the pre-signed location is downloaded without
credentials, verified while it streams, and stored."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from dsar_scheduler.adapters.amplitude import AmplitudeClient, ApiError
from dsar_scheduler.adapters.storage import Storage, StorageError
from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier, VerificationError, VerifiedFile
from dsar_scheduler.core import outcomes
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.rows import CallTicket, FileRow, RequestRow
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.apply import apply
from dsar_scheduler.tick.batch import flush, record_call, record_stored
from dsar_scheduler.tick.context import Context, guarded, storage_failed
from dsar_scheduler.tick.fanout import FanOut, fan_out
from dsar_scheduler.tick.recover import UNFETCHED
from dsar_scheduler.tick.spend import call_failed, release, reserve_one, spend
from dsar_scheduler.tick.store import store_if_complete

log = get_logger("dsar.tick")


@dataclass
class _Group:
    """The pending files of one request in a page; ``state``: the request's state as this
    tick has moved it (``done`` until its first file is stored); ``in_flight``: its files
    sent and not yet settled; ``sent_all``: every file of the group handed out; ``checked``:
    its completeness check made."""

    request: RequestRow
    files: list[FileRow]
    state: str
    in_flight: int = 0
    sent_all: bool = False
    checked: bool = False


class _Stopped(Exception):
    """The download stopped mid-stream: the service is shutting down."""


#: What a lane brings back from a download: the stored file, or why not.
Outcome = VerifiedFile | ApiError | VerificationError | StorageError | _Stopped


@dataclass(frozen=True)
class _Transfer:
    """One file's work on a lane: the redirect's refusal (``None``: it answered), and what
    became of the download."""

    refused: ApiError | None
    outcome: Outcome | None = None


def fetch(ctx: Context) -> None:
    """Page by page, the files of several requests sent on the lanes together."""
    seen: set[int] = set()
    while not ctx.storage_broken:
        page = [
            (f, r)
            for f, r in ctx.ledger.files.pending(ctx.clock.now(), limits.PAGE)
            if f.id not in seen
        ]
        if not page:
            return
        with fan_out(ctx) as fan:
            for group in _by_request(page):
                seen.update(f.id for f in group.files)
                _fetch_group(ctx, fan, group)
                if ctx.storage_broken:
                    break


def _by_request(page: list[tuple[FileRow, RequestRow]]) -> list[_Group]:
    """Consecutive files of the same request, grouped (the page is ordered by request)."""
    groups: list[_Group] = []
    for file, request in page:
        if groups and groups[-1].request.id == request.id:
            groups[-1].files.append(file)
        else:
            groups.append(_Group(request, [file], request.state))
    return groups


def _fetch_group(ctx: Context, fan: FanOut, group: _Group) -> None:
    """The pending files of one request: their calls reserved in one transaction and sent
    on the lanes; the completeness check made once the last is settled."""
    request = group.request

    def send(file: FileRow, ticket: CallTicket | None) -> bool:
        if ctx.storage_broken:  # broke while this file waited for a lane
            release(ctx, [ticket] if ticket else [])
            return False
        guarded(ctx, request, "fetch", partial(_send, ctx, fan, group, file, ticket), file)
        return not ctx.storage_broken

    spend(ctx, "fetch", group.files, lambda _file: request.id, send, lane=fan.lane)
    group.sent_all = True
    _complete_if_settled(ctx, group)


def _send(
    ctx: Context, fan: FanOut, group: _Group, file: FileRow, ticket: CallTicket | None
) -> None:
    """Checked here, sent on a lane: the redirect, then the download, verified and stored."""
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
    key = f"{request.storage_prefix}/{file.name}"
    group.in_flight += 1
    fan.start(
        partial(_transfer, ctx.client, ctx.storage, ctx.stop, file.url, key),
        partial(_settle_guarded, ctx, group, file, ticket),
    )


def _transfer(
    client: AmplitudeClient, storage: Storage, stop: threading.Event, url: str, key: str
) -> _Transfer:
    """On a lane: resolve the output URL, download, verify and store (no ledger here)."""
    try:
        location = client.resolve_output(url)
    except ApiError as err:
        return _Transfer(err)
    try:
        with client.download(location) as download:
            verifier = GzipJsonLinesVerifier(expected_length=download.content_length)
            return _Transfer(
                None, storage.put_verified(key, _live(stop, download.chunks()), verifier)
            )
    except (ApiError, VerificationError, StorageError, _Stopped) as err:
        return _Transfer(None, err)


def _live(stop: threading.Event, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pass chunks through, stopping (cleanly: no temporary left) on shutdown."""
    for chunk in chunks:
        if stop.is_set():
            raise _Stopped
        yield chunk


def _settle_guarded(
    ctx: Context, group: _Group, file: FileRow, ticket: CallTicket, done: Future[_Transfer]
) -> None:
    try:
        work = partial(_settle, ctx, group, file, ticket, done)
        guarded(ctx, group.request, "fetch", work, file)
    finally:
        group.in_flight -= 1
    _complete_if_settled(ctx, group)


def _settle(
    ctx: Context, group: _Group, file: FileRow, ticket: CallTicket, done: Future[_Transfer]
) -> None:
    request = group.request
    transfer = done.result()
    if transfer.refused is not None:
        call_failed(ctx, ticket, transfer.refused)
        _file_error(ctx, file, request, transfer.refused)
        return
    record_call(ctx, ticket, 302)
    outcome = transfer.outcome
    if isinstance(outcome, VerifiedFile):
        _stored(ctx, group, file, outcome)
    elif isinstance(outcome, ApiError):
        ctx.metrics.api_calls.labels("download", str(outcome.status_code or "none")).inc()
        ctx.metrics.api_errors.labels("download", outcome.cause).inc()
        _file_error(ctx, file, request, outcome)
    elif isinstance(outcome, VerificationError):
        _file_error(ctx, file, request, f"download failed verification: {outcome}")
    elif isinstance(outcome, StorageError):
        ctx.ledger.files.record_failure(file.id, f"storage: {outcome}", None)
        ctx.metrics.file_failures.labels("storage").inc()
        storage_failed(ctx, request.id, outcome)
    # _Stopped: the file stays pending for the next tick


def _stored(ctx: Context, group: _Group, file: FileRow, stored: VerifiedFile) -> None:
    request = group.request
    now = ctx.clock.now()
    ctx.metrics.api_calls.labels("download", "200").inc()
    record_stored(ctx, file.id, stored, now)
    ctx.report.files_stored += 1
    ctx.metrics.files_stored.inc()
    ctx.metrics.bytes_stored.inc(stored.bytes)
    if group.state == State.DONE:
        ctx.ledger.requests.move(request.id, {State.DONE}, State.FETCHING, "first file stored", now)
        group.state = State.FETCHING


def _complete_if_settled(ctx: Context, group: _Group) -> None:
    """Every file of the group sent and settled: the request's completeness check, once,
    with its stored files written first."""
    if group.sent_all and group.in_flight == 0 and not group.checked and not ctx.storage_broken:
        group.checked = True
        flush(ctx)
        guarded(ctx, group.request, "fetch", partial(store_if_complete, ctx, group.request))


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
