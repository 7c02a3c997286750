"""Requests and their audit trail: the state machine. A state change is a compare-and-set on
the current state, checked against ``states.TRANSITIONS`` and written to the audit trail with
its reason in the same transaction, chained to the request's last event (``ledger.events``)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, Unpack

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from dsar_scheduler.adapters.db import (
    Event,
    Request,
    bulk_update,
    column_in,
    write_transaction,
)
from dsar_scheduler.core.states import SUBMITTABLE, State, check_transition
from dsar_scheduler.ledger.convert import EVENT_COLUMNS, REQUEST_COLUMNS, request_row
from dsar_scheduler.ledger.deadlines import URGENCY
from dsar_scheduler.ledger.events import append_event, append_events, with_heads
from dsar_scheduler.ledger.rows import (
    EventRow,
    RequestChanges,
    RequestRow,
    Transition,
    TransitionListener,
)

#: Failed and expired requests are resubmitted before queued ones: they have waited longest.
SUBMIT_PRIORITY = case(
    {State.FAILED.value: 0, State.EXPIRED.value: 0}, value=Request.state, else_=1
)
#: The order requests are submitted in: the nearest legal deadline first (when the budget
#: binds, the most urgent go), then as before.
SUBMIT_ORDER = (URGENCY, SUBMIT_PRIORITY, Request.id)


class Requests:
    """Each request's state and bookkeeping, and the events that tell its history."""

    def __init__(self, sessions: sessionmaker[Session], notify: TransitionListener) -> None:
        self.sessions = sessions
        self._notify = notify

    def move(
        self,
        request_id: int,
        expected: Collection[State],
        new: State,
        reason: str,
        now: datetime,
        **changes: Unpack[RequestChanges],
    ) -> RequestRow | None:
        """Compare-and-set ``state`` from one of ``expected`` to ``new``, with an audit event
        (``changes``: bookkeeping set in the same write).

        Returns the updated request, or ``None`` if its state had moved on (someone else acted).
        """
        with write_transaction(self.sessions) as session:
            moved = move_in(session, request_id, expected, new, reason, now, changes)
            if moved is None:
                return None
            request, note = moved
            row = request_row(request)
        self._notify([note])
        return row

    def update(self, request_id: int, now: datetime, **changes: Unpack[RequestChanges]) -> None:
        """Change bookkeeping columns (next action time, error counts) without a transition."""
        with write_transaction(self.sessions) as session:
            session.execute(
                update(Request).where(Request.id == request_id).values(updated_at=now, **changes)
            )

    def get(self, request_id: int) -> RequestRow | None:
        with self.sessions() as session:
            row = session.execute(select(*REQUEST_COLUMNS).where(Request.id == request_id)).first()
        return None if row is None else RequestRow(*row)

    def events(self, request_id: int) -> list[EventRow]:
        with self.sessions() as session:
            rows = session.execute(
                select(*EVENT_COLUMNS).where(Event.request_id == request_id).order_by(Event.id)
            ).all()
        return [EventRow(*row) for row in rows]

    def in_state(self, *states: State) -> list[RequestRow]:
        return self._read(Request.state.in_(states), order_by=(Request.id,))

    def due_submits(self, now: datetime, limit: int) -> list[RequestRow]:
        """Requests waiting to be (re)submitted: the nearest legal deadline first, then
        failed and expired ones, then the oldest."""
        return self._read(
            Request.state.in_(SUBMITTABLE),
            or_(Request.next_action_at.is_(None), Request.next_action_at <= now),
            order_by=SUBMIT_ORDER,
            limit=limit,
        )

    def expiring(self, before: datetime) -> list[RequestRow]:
        """Finished requests whose results expire before ``before`` with files unfetched."""
        return self._read(
            Request.state.in_((State.DONE, State.FETCHING)), Request.expires_at < before
        )

    def submitted(self, ids: Sequence[int]) -> list[RequestRow]:
        """The requests among ``ids`` still ``submitted``, in the order of ``ids``."""
        if not ids:
            return []
        with self.sessions() as session:
            rows = session.execute(
                select(*REQUEST_COLUMNS).where(
                    column_in(session, Request.id, ids), Request.state == State.SUBMITTED
                )
            ).all()
        found = {row.id: row for row in (RequestRow(*r) for r in rows)}
        return [found[i] for i in ids if i in found]

    def count_in(self, states: Iterable[State]) -> int:
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Request).where(Request.state.in_(list(states)))
                )
                or 0
            )

    def start_submits(self, requests: Sequence[RequestRow], now: datetime) -> set[int]:
        """Move a chunk of waiting requests to ``submitting`` in one transaction, each by
        compare-and-set with its audit event; the ids moved (the others moved on meanwhile).
        Their ``submissions`` count the attempt, as ``move`` would."""
        ids = [r.id for r in requests]
        notes: list[Transition] = []
        with write_transaction(self.sessions) as session:
            rows = session.execute(
                select(
                    Request.id,
                    Request.state,
                    Request.submissions,
                    Request.remote_request_id,
                    Request.chain_head,
                )
                .where(column_in(session, Request.id, ids), Request.state.in_(SUBMITTABLE))
                .with_for_update()
            ).all()
            if not rows:
                return set()
            changes = []
            for row in rows:
                check_transition(State(row.state), State.SUBMITTING)
                reason = f"submitting (attempt {row.submissions + 1})"
                changes.append(
                    {
                        "id": row.id,
                        "state": State.SUBMITTING,
                        "submissions": row.submissions + 1,
                        "reason": reason,
                        "updated_at": now,
                    }
                )
                note = Transition(
                    row.id, row.state, State.SUBMITTING, reason, row.remote_request_id, now
                )
                notes.append(note)
            # the heads read with the rows' locks: each event follows its request's last one
            heads = append_events(session, notes, {row.id: row.chain_head for row in rows})
            bulk_update(session, Request, with_heads(changes, heads))
        self._notify(notes)
        return {row.id for row in rows}

    def _read(
        self,
        *where: ColumnElement[bool],
        order_by: Sequence[ColumnElement[Any] | InstrumentedAttribute[Any]] = (),
        limit: int | None = None,
    ) -> list[RequestRow]:
        query = select(*REQUEST_COLUMNS).where(*where).order_by(*order_by).limit(limit)
        with self.sessions() as session:
            return [RequestRow(*row) for row in session.execute(query)]


def move_in(
    session: Session,
    request_id: int,
    expected: Collection[State],
    new: State,
    reason: str,
    now: datetime,
    changes: RequestChanges,
) -> tuple[Request, Transition] | None:
    """``Requests.move`` inside the caller's transaction: the request (locked, changed) and
    the transition to hand to the listener once the transaction commits."""
    # populate_existing: a row the caller's session read before is read again under the
    # lock (its state and chain head as committed, not as first seen)
    request = session.scalar(
        select(Request)
        .where(Request.id == request_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if request is None or State(request.state) not in expected:
        return None
    check_transition(State(request.state), new)
    previous = request.state
    # The request's visible reason is the event's.
    request.state, request.updated_at, request.reason = new, now, reason
    for key, value in changes.items():
        setattr(request, key, value)
    note = Transition(request_id, previous, new, reason, request.remote_request_id, now)
    append_event(session, request, note)
    return request, note
