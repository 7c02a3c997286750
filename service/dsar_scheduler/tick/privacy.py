"""Calling the project-key APIs (deletion, User Search, User Activity) from a tick: each call
reserved against its key's limits in the ledger before it is sent and finished after, shared
by every replica; a 429 backs the key off for all of them. Unlike the DSAR budget, a key with
no room stops only that key's work for this tick (``KeyBusy``), never the tick.

Also the answers turned into ``core``'s types, and kept as receipts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TypeVar

from dsar_scheduler.adapters.amplitude import (
    ApiError,
    DeletionEntry,
    ErrorKind,
    PrivacyApi,
    UserActivity,
    UserSearch,
)
from dsar_scheduler.core.deletion import ListedEntry
from dsar_scheduler.core.identity import Match, SearchAnswer
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.context import Context, keep_lease
from dsar_scheduler.tick.report import StopTick

log = get_logger("dsar.tick")

T = TypeVar("T")

#: The ``requester`` of every deletion we ask for. Listing entries are matched on
#: (``amplitude_id``, ``requester``) and the request day, so it must be the same for every
#: entry of every batch: a batch carries entries of several requests, so it cannot name one.
#: It names this service, so our entries stand apart from anyone else's in the org's jobs.
REQUESTER = "dsar-scheduler"
#: A 429 without ``Retry-After``: the key rests this long (clock time) for every replica.
RATE_LIMIT_PAUSE = timedelta(seconds=60)


class KeyBusy(Exception):
    """A project key cannot be called now (its limits, a 429 backoff, or its credentials
    refused): that key's work waits for a later tick."""


def privacy(ctx: Context) -> PrivacyApi:
    assert ctx.privacy is not None, "deletion steps run only with projects configured"
    return ctx.privacy


def privacy_call(
    ctx: Context, api: str, project: int, work: Callable[[], T], request_id: int | None = None
) -> T:
    """``work`` (one call of ``api``, ``deletion`` or ``search``, with ``project``'s key)
    within the key's limits. A 429 or a refused key raises ``KeyBusy``; any other
    ``ApiError`` is the caller's to judge."""
    if ctx.stop.is_set():
        raise StopTick("shutdown")
    keep_lease(ctx)
    call_id = ctx.ledger.privacy_calls.reserve(api, project, ctx.clock.now(), request_id)
    if call_id is None:
        raise KeyBusy(f"{api} limits of project {project} reached")
    status: int | None = None
    try:
        result = work()
        status = 200
        return result
    except ApiError as err:
        status = err.status_code
        _failed(ctx, api, project, err)
        raise
    finally:
        ctx.ledger.privacy_calls.finish(call_id, status, ctx.clock.now())


def _failed(ctx: Context, api: str, project: int, err: ApiError) -> None:
    ctx.metrics.api_errors.labels(api, err.cause).inc()
    log.warning("privacy.api_error", api=api, project=project, error=str(err))
    if err.kind is ErrorKind.RATE_LIMITED:
        ctx.metrics.privacy_rate_limited.labels(api).inc()  # not the DSAR budget's 429s
        now = ctx.clock.now()
        ctx.ledger.privacy_calls.back_off(api, project, now + rate_limit_pause(err), now)
        raise KeyBusy(f"{api} of project {project} rate limited") from err
    if err.kind is ErrorKind.AUTH:
        ctx.report.errors.append(f"project {project}: {api} key refused")
        raise KeyBusy(f"project {project}: credentials refused") from err


def rate_limit_pause(err: ApiError) -> timedelta:
    """How long a key rests after a 429: its ``Retry-After``, else a minute."""
    return RATE_LIMIT_PAUSE if err.retry_after is None else timedelta(seconds=err.retry_after)


def listed(entries: Iterable[DeletionEntry]) -> tuple[ListedEntry, ...]:
    """A POST answer's or a listing job's entries as ``core.deletion``'s."""
    return tuple(ListedEntry(e.amplitude_id, e.requested_on_day, e.requester) for e in entries)


def search_answer(found: UserSearch) -> SearchAnswer:
    matches = tuple(Match(m.user_id, m.amplitude_id) for m in found.matches)
    return SearchAnswer(found.project, found.type, matches)


def search_body(found: UserSearch, activities: Iterable[UserActivity] = ()) -> bytes:
    """What a search (and the User Activity look-ups it led to) answered, as the receipt's
    body: the client hands over parsed answers, so this is their canonical JSON."""
    document = {
        "type": found.type,
        "matches": [{"user_id": m.user_id, "amplitude_id": m.amplitude_id} for m in found.matches],
        "activity": [
            {
                "amplitude_id": a.amplitude_id,
                "canonical_amplitude_id": a.canonical_amplitude_id,
                "merged_amplitude_ids": list(a.merged_amplitude_ids),
                "user_id": a.user_id,
            }
            for a in activities
        ],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
