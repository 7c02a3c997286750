"""Legal deadlines in the ledger: the one extension (``dsar extend``), written with its audit
event; how many open requests have used half, four fifths or all of their time (metrics,
``dsar status``); and the order of urgency the submissions and the planner's reads follow.

The rules themselves (periods, extension, shares) are ``core.deadlines``'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, case, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from dsar_scheduler.adapters.db import Request, write_transaction
from dsar_scheduler.core.deadlines import ALERT_SHARES, REGIMES, Deadline, extend
from dsar_scheduler.core.states import FINAL, State
from dsar_scheduler.ledger.convert import REQUEST_COLUMNS
from dsar_scheduler.ledger.events import append_note
from dsar_scheduler.ledger.family import unanswered
from dsar_scheduler.ledger.rows import RequestRow

#: The deadline in force: the extended one, if the extension was taken.
DEADLINE_IN_FORCE: ColumnElement[datetime] = func.coalesce(Request.extended_until, Request.due_at)
#: Nearest deadline first; requests without one (admitted before deadlines) after the rest.
URGENCY = DEADLINE_IN_FORCE.asc().nulls_last()
#: Requests still to answer: every state but the final ones, and a dead request too (given
#: up by the service, not by the privacy team: its deadline still runs). By state, so the
#: reads follow the state index over the few open requests, not the whole history.
OPEN_STATES = sorted(s.value for s in State if s not in FINAL or s is State.DEAD)
#: Requests still to answer that have a deadline: open, and their export not stored (an
#: export asked with its deletion is answered only once the deletion is done too).
_OPEN_WITH_DEADLINE = (
    Request.state.in_(OPEN_STATES),
    Request.due_at.is_not(None),
    or_(Request.stored_at.is_(None), Request.request_type != "access"),
)
#: Why a request that is not open (``OPEN_STATES``, not stored) is not extended.
NOT_OPEN = {
    State.STORED: "is already stored (answered)",
    State.REJECTED: "was rejected at admission and has no deadline",
    State.CANCELLED: "was cancelled",
}


def _not_open(request: Request, owed: bool) -> str | None:
    """Why a request is not extended: it is answered or closed. A stored export by user ID
    whose supplements are ``owed`` is not answered yet."""
    state = State(request.state)
    if state is State.STORED and owed:
        return None
    answered = request.stored_at is not None and request.request_type == "access"
    if state not in OPEN_STATES or answered:
        return NOT_OPEN.get(state, f"is {state.value}: answered")
    return None


@dataclass(frozen=True)
class Extension:
    """An extension written: the new deadline and the audit event's reason."""

    until: datetime
    reason: str
    #: The supplementary requests extended with it.
    supplements: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class OpenCounts:
    """Open requests of one regime with a deadline, and how many of them have used at least
    each share of ``ALERT_SHARES`` of their time, and all of it (``missed``)."""

    regime: str
    open: int
    past: dict[float, int]
    missed: int


class Deadlines:
    """Writes and reads about deadlines, each in its own short transaction."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def extend(self, request_id: int, note: str, now: datetime) -> Extension | str:
        """Take the one extension the request's regime allows, by compare-and-set (the row
        locked: no extension yet, the first deadline not passed, still to answer), with its
        audit event, and the same for its supplements still to answer (an export by user ID
        is answered only once they are stored); or why not. The events keep the state: an
        extension is no state change, but it is part of the request's record."""
        with write_transaction(self.sessions) as session:
            request = session.scalar(
                select(Request).where(Request.id == request_id).with_for_update()
            )
            if request is None:
                return f"no request {request_id}"
            supplements = unanswered(session, request_id)
            refusal = _not_open(request, owed=bool(supplements))
            if refusal is not None:
                return f"request {request_id} {refusal}"
            deadline = deadline_of(request)
            if deadline is None:
                return f"request {request_id} has no deadline (admitted before deadlines)"
            until = extend(deadline, now)
            if isinstance(until, str):
                return f"request {request_id}: {until}"
            regime = REGIMES[deadline.regime]
            reason = (
                f"deadline extended to {until:%Y-%m-%d} ({regime.name} allows one extension, "
                f"of {regime.extension}): {note}"
            )
            for row in (request, *supplements):
                row.extended_until, row.extension_reason = until, note
                row.updated_at = now
            append_note(session, request, reason, now)
            for child in supplements:
                append_note(session, child, f"{reason} (with request {request_id})", now)
        return Extension(until, reason, [c.id for c in supplements])

    def misses(self, now: datetime) -> tuple[int, int]:
        """(requests with a deadline, those that missed it: answered late, or still open and
        past it) over the whole ledger: for a report at the end of a run (``dsar simulate``),
        not for every scrape."""
        late = or_(
            and_(Request.stored_at.is_not(None), Request.stored_at > DEADLINE_IN_FORCE),
            and_(*_OPEN_WITH_DEADLINE, now > DEADLINE_IN_FORCE),
        )
        query = select(func.count(), func.sum(case((late, 1), else_=0))).where(
            Request.due_at.is_not(None)
        )
        with self.sessions() as session:
            total, missed = session.execute(query).one()
        return int(total), int(missed or 0)

    def nearest(self, limit: int) -> list[RequestRow]:
        """The open requests nearest to their deadline (in force), the nearest first."""
        query = (
            select(*REQUEST_COLUMNS)
            .where(*_OPEN_WITH_DEADLINE)
            .order_by(URGENCY, Request.id)
            .limit(limit)
        )
        with self.sessions() as session:
            return [RequestRow(*row) for row in session.execute(query)]

    def open_counts(self, now: datetime) -> list[OpenCounts]:
        """Per regime: open requests with a deadline, those past each alert share of their
        time, and those past the deadline itself. One aggregate over the open requests."""
        now_s = now.timestamp()
        received, until = epoch_seconds(Request.received_at), epoch_seconds(DEADLINE_IN_FORCE)
        past = [
            func.sum(case((received + share * (until - received) <= now_s, 1), else_=0))
            for share in ALERT_SHARES
        ]
        missed = func.sum(case((now > DEADLINE_IN_FORCE, 1), else_=0))
        query = (
            select(Request.regime, func.count(), missed, *past)
            .where(*_OPEN_WITH_DEADLINE)
            .group_by(Request.regime)
        )
        with self.sessions() as session:
            rows = session.execute(query).all()
        return [
            OpenCounts(
                regime=str(regime),
                open=int(count),
                past={share: int(n or 0) for share, n in zip(ALERT_SHARES, shares, strict=True)},
                missed=int(late or 0),
            )
            for regime, count, late, *shares in rows
        ]


def deadline_of(request: RequestRow | Request) -> Deadline | None:
    """A request's deadline as the rules take it (``None``: it has none)."""
    if request.regime is None or request.received_at is None or request.due_at is None:
        return None
    return Deadline(request.regime, request.received_at, request.due_at, request.extended_until)


class epoch_seconds(FunctionElement[float]):
    """Seconds since 1970 of a stored (naive UTC) time, on either database: the shares of a
    request's time are a ratio of two intervals, which neither dialect's datetime arithmetic
    gives portably."""

    type = Float()
    inherit_cache = True


@compiles(epoch_seconds)
def _epoch_sqlite(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps times as ISO text; julianday() reads it (days since 4714 BC, noon)
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(epoch_seconds, "postgresql")
def _epoch_postgres(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    # a timestamp without time zone: its epoch is that of the same wall time in UTC
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"
