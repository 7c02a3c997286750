"""The coverage check of an access request by user ID (``core.coverage``), in two parts: a
step that resolves the user's Amplitude IDs while the export runs (User Search in every
project, User Activity for the canonical and merged IDs, on the search limits the deletions
share, after them), and the comparison made when every file is stored, just before the
manifest, which queues a supplementary request per ID the export missed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from dsar_scheduler.adapters.amplitude import ApiError
from dsar_scheduler.core.coverage import Coverage, coverage, decode_ids, encode_ids
from dsar_scheduler.core.identity import Subject, resolve
from dsar_scheduler.ledger.rows import FileRow, RequestRow
from dsar_scheduler.ledger.supplements import BY_USER_ID
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.deletion import HARD_STOPS
from dsar_scheduler.tick.privacy import KeyBusy
from dsar_scheduler.tick.report import StopTick
from dsar_scheduler.tick.resolve import search_subject

log = get_logger("dsar.tick")

#: Access requests whose user's IDs are resolved per tick at most (a search per project each,
#: and a User Activity look-up per exact match).
RESOLVE_PER_TICK = 50


def resolve_expected(ctx: Context) -> None:
    """Resolve the users of access requests by user ID, those submitted longest ago first.
    A key with no search slot left ends the step; a failed call leaves that request to the
    next tick (if it is stored first, its manifest says the check was not made)."""
    if ctx.privacy is None or not ctx.settings.projects:
        return
    if ctx.stop.is_set() or ctx.report.stopped_by in HARD_STOPS:
        return
    projects = list(ctx.settings.projects)
    try:
        for request in ctx.ledger.supplements.to_resolve(RESOLVE_PER_TICK):
            _resolve_one(ctx, request, projects)
    except KeyBusy as busy:
        log.info("coverage.resolve_deferred", reason=str(busy))
    except StopTick as stop:
        ctx.report.stopped_by = ctx.report.stopped_by or str(stop)


def _resolve_one(ctx: Context, request: RequestRow, projects: Sequence[int]) -> None:
    subject = Subject(request.user_id, None)
    try:
        searched = [search_subject(ctx, request.id, p, subject) for p in projects]
    except (ApiError, ValueError) as err:
        log.warning("coverage.resolve_failed", request_id=request.id, error=str(err))
        return
    resolution = resolve(
        subject,
        [s.answer for s in searched],
        {s.project_id: s.activities for s in searched},
    )
    expected = frozenset().union(*resolution.ids.values())
    if ctx.ledger.supplements.set_expected(request.id, encode_ids(expected)):
        log.info("coverage.resolved", request_id=request.id, ids=len(expected))


def check(
    ctx: Context, request: RequestRow, files: Sequence[FileRow], now: datetime
) -> tuple[Coverage, list[int]]:
    """The request's coverage, and its supplementary requests (made now if missing; the
    same ones when a stopped process's store is completed again)."""
    current = ctx.ledger.requests.get(request.id) or request
    result = coverage(
        _expected(current), [decode_ids(f.amplitude_ids) for f in files], _unexpected(ctx, current)
    )
    if not result.missing:
        return result, []
    children = ctx.ledger.supplements.create(current, result.missing, now)
    log.info("coverage.supplements", request_id=request.id, missing=len(result.missing))
    return result, children


def _expected(request: RequestRow) -> frozenset[int] | None:
    found = decode_ids(request.expected_ids)
    return None if found is None else found.ids


def _unexpected(ctx: Context, request: RequestRow) -> str:
    """Why a request has no resolved set to compare with."""
    if request.parent_id is not None:
        return f"a supplementary request of request {request.parent_id}, by Amplitude ID"
    if request.user_id is None:
        return "the request names its subject by Amplitude ID: the export is by that ID"
    if request.request_type not in BY_USER_ID:
        return f"a {request.request_type} request has no export to check"
    if not ctx.settings.projects:
        return "no projects configured (DSAR_PROJECTS_FILE): the user's IDs cannot be resolved"
    return "the user's Amplitude IDs were not resolved before the files were stored"
