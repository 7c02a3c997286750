"""Deletion step 1, resolve: whose Amplitude IDs a deletion request names, in every configured
project (User Search, then User Activity for each exact match's merged IDs), within each
project key's search limits. Exact matches become pending entries; anything else holds the
request for review (``core.identity``). The answers are kept as the request's receipts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from dsar_scheduler.adapters.amplitude import ApiError
from dsar_scheduler.core.identity import (
    Activity,
    Found,
    SearchAnswer,
    Subject,
    judge,
    resolve,
    review_reason,
)
from dsar_scheduler.ledger.deletions import Receipt, Target
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.privacy import (
    KeyBusy,
    privacy,
    privacy_call,
    search_answer,
    search_body,
)

log = get_logger("dsar.tick")

#: Requests resolved per tick at most (each costs a search per project, and more).
RESOLVE_PER_TICK = 20


@dataclass(frozen=True)
class Searched:
    """One project's answers for one subject: the search, its exact matches, their activity."""

    project_id: int
    answer: SearchAnswer
    exact: frozenset[int]
    activities: tuple[Activity, ...]
    receipt: Receipt


def resolve_step(ctx: Context) -> None:
    """Resolve the requests waiting, oldest first. A key with no search slot left stops the
    step (every request needs every project); a failed call leaves that request for the
    next tick."""
    projects = list(ctx.settings.projects)
    for target in ctx.ledger.deletions.targets(RESOLVE_PER_TICK):
        try:
            _resolve_one(ctx, target, projects)
        except KeyBusy as busy:
            log.info("resolve.deferred", reason=str(busy))
            return
        except ApiError as err:
            log.warning("resolve.failed", request_id=target.request_id, error=str(err))
        except ValueError as err:  # the client refused to send it: no retry will help
            reason = f"held for review: the subject cannot be searched for ({err})"
            ctx.ledger.deletions.hold(target.request_id, reason, [], ctx.clock.now())


def _resolve_one(ctx: Context, target: Target, projects: Sequence[int]) -> None:
    subject = Subject(target.user_id, target.amplitude_id)
    if subject.user_id is None and subject.amplitude_id is None:
        reason = "held for review: the request names no subject (no user ID, no Amplitude ID)"
        ctx.ledger.deletions.hold(target.request_id, reason, [], ctx.clock.now())
        return
    searched = [search_subject(ctx, target.request_id, project, subject) for project in projects]
    receipts = [s.receipt for s in searched]
    resolution = resolve(
        subject,
        [s.answer for s in searched],
        {s.project_id: s.activities for s in searched},
    )
    now = ctx.clock.now()
    if resolution.needs_review:
        reason = review_reason(resolution.review)
        if ctx.ledger.deletions.hold(target.request_id, reason, receipts, now):
            log.info("resolve.held", request_id=target.request_id, projects=len(resolution.review))
        return
    ids = _sources(subject, resolution.ids, {s.project_id: s.exact for s in searched})
    if ctx.ledger.deletions.resolved(target.request_id, ids, receipts, now):
        log.info(
            "resolve.done",
            request_id=target.request_id,
            ids=sum(len(found) for found in ids.values()),
            projects=len(ids),
        )


def search_subject(ctx: Context, request_id: int, project: int, subject: Subject) -> Searched:
    """User Search in one project; User Activity for each exact match (merged IDs)."""
    api = privacy(ctx)
    term = subject.search_term()
    found = privacy_call(
        ctx, "search", project, partial(api.search_user, project, term), request_id
    )
    answer = search_answer(found)
    verdict = judge(subject, answer)
    exact = verdict.amplitude_ids if isinstance(verdict, Found) else frozenset()
    looked_up = [
        privacy_call(ctx, "search", project, partial(api.user_activity, project, a), request_id)
        for a in sorted(exact)
    ]
    activities = tuple(
        Activity(a.amplitude_id, a.canonical_amplitude_id, a.merged_amplitude_ids, a.user_id)
        for a in looked_up
    )
    receipt = Receipt(project, "search", 200, search_body(found, looked_up))
    return Searched(project, answer, exact, activities, receipt)


def _sources(
    subject: Subject, ids: Mapping[int, frozenset[int]], exact: Mapping[int, frozenset[int]]
) -> dict[int, dict[int, str]]:
    """Each ID to delete with how it was found: the request's own Amplitude ID (``queue``),
    an exact search match (``search``), or an ID merged into one (``merged``)."""
    out: dict[int, dict[int, str]] = {}
    for project, found in ids.items():
        out[project] = {
            a: "queue"
            if a == subject.amplitude_id
            else "search"
            if a in exact.get(project, frozenset())
            else "merged"
            for a in found
        }
    return out
