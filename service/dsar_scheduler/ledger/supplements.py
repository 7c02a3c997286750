"""The coverage check's records: the Amplitude IDs resolved for an access request by user ID,
and the supplementary requests (one per Amplitude ID its export missed), each a request of
its own with its parent and no queue row, going through the normal pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import Request, write_transaction
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.convert import REQUEST_COLUMNS
from dsar_scheduler.ledger.events import append_event, append_events, write_heads
from dsar_scheduler.ledger.family import Member, members
from dsar_scheduler.ledger.rows import RequestRow, Transition, TransitionListener

#: Requests whose export is still to come: their user's IDs are worth resolving.
BEFORE_STORED = (
    State.QUEUED,
    State.SUBMITTING,
    State.SUBMITTED,
    State.DONE,
    State.FETCHING,
)
BY_USER_ID = ("access", "access_and_deletion")


class Supplements:
    def __init__(self, sessions: sessionmaker[Session], notify: TransitionListener) -> None:
        self.sessions = sessions
        self._notify = notify

    def to_resolve(self, limit: int) -> list[RequestRow]:
        """Access requests by user ID whose user's Amplitude IDs are not resolved yet,
        those nearest their export first (submitted longest ago)."""
        query = (
            select(*REQUEST_COLUMNS)
            .where(
                Request.user_id.is_not(None),
                Request.expected_ids.is_(None),
                Request.parent_id.is_(None),
                Request.request_type.in_(BY_USER_ID),
                Request.state.in_(BEFORE_STORED),
            )
            .order_by(Request.first_submitted_at.is_(None), Request.first_submitted_at, Request.id)
            .limit(limit)
        )
        with self.sessions() as session:
            return [RequestRow(*row) for row in session.execute(query)]

    def set_expected(self, request_id: int, ids: str) -> bool:
        """Record the resolved set once (``core.coverage.encode_ids``); ``False`` if it was
        already recorded (the first answer stands, so the coverage never changes)."""
        with write_transaction(self.sessions) as session:
            done = session.execute(
                update(Request)
                .where(Request.id == request_id, Request.expected_ids.is_(None))
                .values(expected_ids=ids)
            )
            return bool(getattr(done, "rowcount", 0))

    def children(self, parent_id: int) -> dict[int, int]:
        """A request's supplementary requests: Amplitude ID -> request id."""
        with self.sessions() as session:
            return _children(session, parent_id)

    def members(self, parent_id: int) -> list[Member]:
        """A request's supplementary requests with their states (``dsar status``, ``cancel``)."""
        with self.sessions() as session:
            return members(session, parent_id)

    def create(self, parent: RequestRow, missing: Sequence[int], now: datetime) -> list[int]:
        """One queued supplementary request per missing Amplitude ID, in the parent's date
        range and deadline, unless it exists already (a process that stopped before the
        parent's manifest was written made it): the ids, in ``missing``'s order. The parent's
        row is locked, so two ticks cannot both make one (the unique index backs it)."""
        with write_transaction(self.sessions) as session:
            locked = session.scalar(
                select(Request).where(Request.id == parent.id).with_for_update()
            )
            assert locked is not None
            have = _children(session, parent.id)
            new = [a for a in missing if a not in have]
            rows = [_child(locked, a, now) for a in new]
            session.add_all(rows)
            session.flush()
            have.update({row.amplitude_id: row.id for row in rows if row.amplitude_id})
            notes = [_admitted(row.id, parent.id, now) for row in rows]
            write_heads(session, append_events(session, notes, {}))
            if rows:
                append_event(session, locked, _noted(locked, [r.id for r in rows], now))
        self._notify(notes)
        return [have[a] for a in missing]


def _children(session: Session, parent_id: int) -> dict[int, int]:
    rows = session.execute(
        select(Request.amplitude_id, Request.id).where(Request.parent_id == parent_id)
    )
    return {amplitude_id: rid for amplitude_id, rid in rows if amplitude_id is not None}


def _child(parent: Request, amplitude_id: int, now: datetime) -> Request:
    """The supplementary request: the ID alone, the parent's range and legal deadline."""
    return Request(
        queue_id=None,
        parent_id=parent.id,
        external_ref=None,
        amplitude_id=amplitude_id,
        user_id=None,
        request_type="access",
        start_date=parent.start_date,
        end_date=parent.end_date,
        state=State.QUEUED.value,
        queued_at=now,
        updated_at=now,
        submissions=0,
        failures=0,
        expiries=0,
        errors=0,
        polls=0,
        regime=parent.regime,
        received_at=parent.received_at,
        due_at=parent.due_at,
        extended_until=parent.extended_until,
    )


def _admitted(request_id: int, parent_id: int, now: datetime) -> Transition:
    reason = (
        f"admitted: supplementary to request {parent_id}, for an Amplitude ID resolved for "
        "its user that its export by user ID did not hold"
    )
    return Transition(request_id, None, State.QUEUED, reason, None, now)


def _noted(parent: Request, children: Sequence[int], now: datetime) -> Transition:
    """The parent's audit entry (no state change): what its coverage check asked for."""
    ids = ", ".join(str(c) for c in children)
    reason = (
        f"coverage: the export missed {len(children)} Amplitude ID(s) resolved for the user; "
        f"supplementary request(s) {ids} queued"
    )
    state = parent.state
    return Transition(parent.id, state, state, reason, parent.remote_request_id, now)
