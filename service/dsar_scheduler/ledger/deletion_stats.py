"""What the deletion gauges show, read from the ledger at scrape time (so every replica shows
the same, right after a restart): entries by state, overdue ones, re-ingested subjects, the
oldest request held for review and the oldest deletion done but not verified, and the
project keys' privacy calls in the last hour (the search budget, 429s)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from dsar_scheduler.adapters.clock import utc
from dsar_scheduler.adapters.db import DeletionEntry, PrivacyCall, Request
from dsar_scheduler.core.deletion import IN_FLIGHT, PROMISED, Entry, EntryRow, lands_after, overdue
from dsar_scheduler.core.privacy_limits import HOUR
from dsar_scheduler.core.states import State

K = TypeVar("K")


@dataclass(frozen=True)
class DeletionCounts:
    entries: dict[str, int]
    overdue_entries: int
    overdue_requests: int
    #: Requests with an Amplitude ID found re-ingested (``reingested``), as checks recorded.
    reingested_subjects: int
    #: When the request held longest for review got there; ``None``: none is held.
    oldest_review: datetime | None
    #: When the oldest entry Amplitude calls done (and User Search does not confirm) was.
    oldest_unverified: datetime | None
    #: User Search and User Activity calls per project in the last hour (360 allowed).
    search_calls: dict[int, int]
    #: Privacy calls answered 429 in the last hour, by API (``deletion``, ``search``).
    rate_limited: dict[str, int]
    #: Deletions whose latest Amplitude job would be done after their legal deadline.
    after_deadline: int = 0


class DeletionStats:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def read(self, now: datetime) -> DeletionCounts:
        with self.sessions() as session:
            late = _overdue(session, now)
            return DeletionCounts(
                entries={
                    str(state): int(count)
                    for state, count in session.execute(
                        select(DeletionEntry.state, func.count()).group_by(DeletionEntry.state)
                    )
                },
                overdue_entries=len(late),
                overdue_requests=len(set(late)),
                reingested_subjects=int(
                    session.scalar(
                        select(func.count(func.distinct(DeletionEntry.request_id))).where(
                            DeletionEntry.reingested.is_not(None),
                            DeletionEntry.reingested != "",
                        )
                    )
                    or 0
                ),
                oldest_review=session.scalar(
                    select(func.min(Request.updated_at)).where(Request.state == State.REVIEW.value)
                ),
                oldest_unverified=session.scalar(
                    select(func.min(DeletionEntry.done_at)).where(
                        DeletionEntry.state == Entry.DONE.value
                    )
                ),
                search_calls=_calls_by(session, PrivacyCall.project_id, now, api="search"),
                rate_limited=_calls_by(session, PrivacyCall.api, now, status=429),
                after_deadline=_after_deadline(session),
            )


def _after_deadline(session: Session) -> int:
    """Requests still deleting whose latest scheduled job (``core.deletion.lands_after``)
    ends after their deadline, the extended one if extended."""
    rows = session.execute(
        select(
            func.max(DeletionEntry.day),
            func.coalesce(Request.extended_until, Request.due_at),
        )
        .join(Request, Request.id == DeletionEntry.request_id)
        .where(
            Request.state == State.DELETING.value,
            Request.due_at.is_not(None),
            DeletionEntry.day.is_not(None),
            DeletionEntry.state.in_([s.value for s in (*IN_FLIGHT, Entry.DONE)]),
        )
        .group_by(Request.id, Request.extended_until, Request.due_at)
    )
    return sum(
        1
        for day, deadline in rows
        if day is not None and deadline is not None and lands_after(day, utc(deadline))
    )


def _overdue(session: Session, now: datetime) -> list[int]:
    """The request of each entry past Amplitude's 30 days (``core.deletion.overdue``); only
    entries in flight sent that long ago are read."""
    rows = session.execute(
        select(
            DeletionEntry.request_id,
            DeletionEntry.id,
            DeletionEntry.project_id,
            DeletionEntry.amplitude_id,
            DeletionEntry.state,
            DeletionEntry.submitted_at,
        ).where(
            DeletionEntry.state.in_([s.value for s in IN_FLIGHT]),
            DeletionEntry.submitted_at < now - PROMISED,
        )
    )
    return [
        r[0]
        for r in rows
        if overdue(EntryRow(r[1], r[2], r[3], Entry(r[4]), submitted_at=r[5]), now)
    ]


def _calls_by(
    session: Session,
    key: InstrumentedAttribute[K],
    now: datetime,
    api: str | None = None,
    status: int | None = None,
) -> dict[K, int]:
    query = select(key, func.count()).where(PrivacyCall.reserved_at > now - HOUR)
    if api is not None:
        query = query.where(PrivacyCall.api == api)
    if status is not None:
        query = query.where(PrivacyCall.status_code == status)
    return {k: int(n) for k, n in session.execute(query.group_by(key))}
