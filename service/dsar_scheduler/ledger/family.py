"""A request by user ID and its supplementary requests (one per Amplitude ID its export
missed, ``supplements``) answer one subject together. What an operator does to the parent
(extend its deadline, mark its export delivered) reaches the supplements in the parent's
transaction, each with an audit entry of its own naming the parent; ``dsar status`` and
``dsar cancel`` name them."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from dsar_scheduler.adapters.db import Request
from dsar_scheduler.core.states import State

#: A supplement still to answer: not stored, and neither cancelled nor rejected (a failed or
#: dead one is still owed to the subject).
_UNANSWERED: tuple[ColumnElement[bool], ...] = (
    Request.stored_at.is_(None),
    Request.state.not_in([State.CANCELLED.value, State.REJECTED.value]),
)
_STORED_UNDELIVERED: tuple[ColumnElement[bool], ...] = (
    Request.state == State.STORED.value,
    Request.delivered_at.is_(None),
)


class Member(NamedTuple):
    """A supplementary request, as ``dsar status`` of its parent lists it."""

    id: int
    state: str
    stored_at: datetime | None
    delivered_at: datetime | None

    @property
    def unanswered(self) -> bool:
        """Still to answer (as ``unanswered`` selects)."""
        closed = (State.CANCELLED.value, State.REJECTED.value)
        return self.stored_at is None and self.state not in closed


def members(session: Session, parent_id: int) -> list[Member]:
    """The request's supplementary requests, oldest first (none for most requests)."""
    query = (
        select(Request.id, Request.state, Request.stored_at, Request.delivered_at)
        .where(Request.parent_id == parent_id)
        .order_by(Request.id)
    )
    return [Member(*row) for row in session.execute(query)]


def unanswered(session: Session, parent_id: int) -> list[Request]:
    """The parent's supplements still to answer, locked in the caller's transaction."""
    return _locked(session, parent_id, _UNANSWERED)


def stored_undelivered(session: Session, parent_id: int) -> list[Request]:
    """The parent's stored supplements not yet marked delivered, locked."""
    return _locked(session, parent_id, _STORED_UNDELIVERED)


def _locked(
    session: Session, parent_id: int, where: tuple[ColumnElement[bool], ...]
) -> list[Request]:
    query = (
        select(Request)
        .where(Request.parent_id == parent_id, *where)
        .order_by(Request.id)
        .with_for_update()
    )
    return list(session.scalars(query))
