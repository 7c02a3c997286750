"""What the planner reads from the ledger: requests in flight, how long Amplitude took lately,
how many files a month of a date range yields, and when work next falls due."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import File, Request
from dsar_scheduler.core.states import SUBMITTABLE, State
from dsar_scheduler.ledger.deadlines import DEADLINE_IN_FORCE
from dsar_scheduler.ledger.files import FETCHING, OF_CURRENT_JOB
from dsar_scheduler.ledger.requests import SUBMIT_ORDER
from dsar_scheduler.ledger.rows import CompletionSample, CompletionSamples, PollCandidate


class Facts:
    """Read-only queries, one per fact, each in its own short session."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def poll_candidates(self, due_by: datetime | None = None) -> list[PollCandidate]:
        """Submitted requests (only those due by ``due_by`` if given), as plain rows."""
        query = select(
            Request.id,
            Request.submitted_at,
            Request.last_polled_at,
            Request.next_action_at,
            Request.errors,
            Request.start_date,
            Request.end_date,
            DEADLINE_IN_FORCE,
        ).where(Request.state == State.SUBMITTED)
        if due_by is not None:
            query = query.where(
                or_(Request.next_action_at.is_(None), Request.next_action_at <= due_by)
            ).order_by(Request.next_action_at, Request.id)
        with self.sessions() as session:
            # submitted: the submission time is set (the column is nullable)
            rows: Sequence[Any] = session.execute(query).all()
        # Unpacked by position: a Row's attribute lookups cost more than the query itself.
        return [
            PollCandidate(id, submitted, polled, due, errors, months(start, end), deadline)
            for id, submitted, polled, due, errors, start, end, deadline in rows
        ]

    def completion_samples(self, since: datetime, limit: int) -> CompletionSamples:
        """Requests that Amplitude finished after ``since`` (most recent first): all of them
        up to ``limit``, else every k-th by id, k the smallest that keeps about ``limit``
        (ids are given at admission, so the thinned set is drawn alike from short and long
        jobs)."""
        finished = and_(Request.done_at > since, Request.submitted_at.is_not(None))
        with self.sessions() as session:
            count = session.scalar(select(func.count()).where(finished)) or 0
            every = max(1, math.ceil(count / max(1, limit)))
            query = select(Request.submitted_at, Request.last_polled_at, Request.done_at).where(
                finished
            )
            if every > 1:
                query = query.where(Request.id % every == 0)
            # both times are set on these rows (the columns are nullable)
            rows: Sequence[Any] = session.execute(
                query.order_by(Request.done_at.desc()).limit(limit)
            ).all()
        return CompletionSamples([_sample(*row) for row in rows], every)

    def files_seen(self, since: datetime, limit: int) -> tuple[int, int]:
        """(files, months of their date ranges) of the ``limit`` requests finished most
        recently after ``since``: what a month of a request's range yields in files. (A mean,
        so a few hundred requests tell it; counting every sample's files would cost more than
        the rest of a tick's planning.)"""
        recent = (
            select(Request.id, Request.remote_request_id, Request.start_date, Request.end_date)
            .where(Request.done_at > since, Request.submitted_at.is_not(None))
            .order_by(Request.done_at.desc())
            .limit(limit)
            .subquery()
        )
        with self.sessions() as session:
            rows = session.execute(
                select(recent.c.start_date, recent.c.end_date, func.count(File.id))
                .select_from(recent)
                .outerjoin(
                    File,
                    and_(
                        File.request_id == recent.c.id,
                        File.remote_request_id == recent.c.remote_request_id,
                    ),
                )
                .group_by(recent.c.id, recent.c.start_date, recent.c.end_date)
            ).all()
        return sum(int(n) for _, _, n in rows), sum(months(start, end) for start, end, _ in rows)

    def submit_head_months(self, now: datetime, limit: int) -> list[int]:
        """Months in the date ranges of the next requests to submit."""
        with self.sessions() as session:
            rows = session.execute(
                select(Request.start_date, Request.end_date)
                .where(
                    Request.state.in_(SUBMITTABLE),
                    or_(Request.next_action_at.is_(None), Request.next_action_at <= now),
                )
                .order_by(*SUBMIT_ORDER)
                .limit(limit)
            ).all()
        return [months(row.start_date, row.end_date) for row in rows]

    def next_due(self, now: datetime) -> datetime | None:
        """The earliest time a request or file has work scheduled after ``now``: a required
        poll, a retry of a poll, a submission or a file."""
        with self.sessions() as session:
            request_due = session.scalar(
                select(func.min(Request.next_action_at)).where(
                    Request.state.in_([State.SUBMITTED, *SUBMITTABLE]),
                    Request.next_action_at > now,
                )
            )
            file_due = session.scalar(
                select(func.min(File.next_attempt_at))
                .join(Request, OF_CURRENT_JOB)
                .where(
                    File.state == "pending",
                    File.next_attempt_at > now,
                    Request.state.in_(FETCHING),
                )
            )
        times = [t for t in (request_due, file_due) if t is not None]
        return min(times) if times else None


def months(start: date | None, end: date | None) -> int:
    """Calendar months a date range touches (Amplitude writes about one file per month and
    project)."""
    if start is None or end is None:
        return 1
    count = (end.year - start.year) * 12 + end.month - start.month + 1
    return count if count > 0 else 1


def _sample(submitted: datetime, polled: datetime | None, done: datetime) -> CompletionSample:
    """The finish placed halfway between the last poll that saw the job running and the
    one that saw it done."""
    seen = polled or submitted
    finished = seen + (done - seen) / 2
    return CompletionSample(
        seconds=max(0.0, (finished - submitted).total_seconds()),
        seen_after=max(0.0, (done - finished).total_seconds()),
    )
