"""The queue (``dsar_queue``, written upstream, never changed here) and admission: each queue
row gets one ledger row, queued or rejected, with its first audit event."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import String, cast, exists, func, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from dsar_scheduler.adapters.db import (
    QueueRow,
    Request,
    ServiceState,
    bulk_insert,
    column_in,
    write_transaction,
)
from dsar_scheduler.core.deadlines import Deadline
from dsar_scheduler.core.states import State
from dsar_scheduler.core.validation import Accepted, RawQueueRow, Rejected
from dsar_scheduler.ledger.events import append_events, write_heads
from dsar_scheduler.ledger.rows import Admission, QueueFloor, Transition, TransitionListener

QUEUE_FLOOR_KEY = "queue-floor"
ADMIT_LOCK = "dsar-admit"

Verdict = tuple[RawQueueRow, Accepted | Rejected]
#: A deletion skips the DSAR queue: it starts by finding its subject in every project.
ADMITTED_DELETION = "admitted: a deletion, its subject's Amplitude IDs to find in every project"


@dataclass(frozen=True)
class NewRequest:
    """A ledger row to write for one queue row, and the reason of its first event."""

    queue_id: int
    external_ref: str | None
    state: State
    event_reason: str
    #: The request's visible reason: a rejection's, none for a queued request.
    reason: str | None = None
    amplitude_id: int | None = None
    start_date: date | None = None
    end_date: date | None = None
    #: The legal deadline of a queued request (a rejected row has none: its corrected row,
    #: inserted anew with the same ``received_at``, keeps the same deadline).
    deadline: Deadline | None = None
    request_type: str = "access"
    user_id: str | None = None

    def values(self, now: datetime) -> dict[str, Any]:
        """The ``dsar_requests`` row."""
        deadline = self.deadline
        return {
            "regime": None if deadline is None else deadline.regime,
            "received_at": None if deadline is None else deadline.received_at,
            "due_at": None if deadline is None else deadline.due_at,
            "queue_id": self.queue_id,
            "external_ref": self.external_ref,
            "queued_at": now,
            "updated_at": now,
            "submissions": 0,
            "failures": 0,
            "expiries": 0,
            "errors": 0,
            "polls": 0,
            "amplitude_id": self.amplitude_id,
            "start_date": self.start_date,
            "end_date": self.end_date,
            "reason": self.reason,
            "state": self.state,
            "request_type": self.request_type,
            "user_id": self.user_id,
        }


def new_requests(verdicts: Sequence[Verdict], taken: dict[str, int]) -> list[NewRequest]:
    """One new ledger row per verdict. ``taken``: the queue row that already carries each
    ``external_ref`` (of a request not rejected); a later accepted row with the same ref, in
    the ledger or earlier in ``verdicts``, is rejected as a duplicate."""
    taken = dict(taken)
    out: list[NewRequest] = []
    for row, verdict in verdicts:
        ref = row.external_ref
        if isinstance(verdict, Accepted) and ref in taken:
            verdict = Rejected(f"duplicate external_ref: queue row {taken[ref]} already carries it")
        if isinstance(verdict, Rejected):
            out.append(
                NewRequest(row.queue_id, ref, State.REJECTED, verdict.reason, verdict.reason)
            )
            continue
        if ref:
            taken[ref] = row.queue_id
        deletion = verdict.request_type == "deletion"
        out.append(
            NewRequest(
                row.queue_id,
                ref,
                State.RESOLVING if deletion else State.QUEUED,
                ADMITTED_DELETION if deletion else "admitted",
                amplitude_id=verdict.amplitude_id,
                start_date=verdict.start,
                end_date=verdict.end,
                deadline=verdict.deadline,
                request_type=verdict.request_type,
                user_id=verdict.user_id,
            )
        )
    return out


class Queue:
    """Reading the queue past its floor, and admitting what is read."""

    def __init__(self, sessions: sessionmaker[Session], notify: TransitionListener) -> None:
        self.sessions = sessions
        self._notify = notify

    def floor(self, now: datetime) -> QueueFloor:
        """Where admission starts reading the queue (``QueueFloor``); a floor of 0 when none
        is known or a full sweep is due (``set_floor``)."""
        with self.sessions() as session:
            return read_floor(session, now)

    def set_floor(self, floor: QueueFloor, now: datetime, sweep_due: datetime | None) -> None:
        """Record ``floor``; ``sweep_due``: when the floor stops being trusted and admission
        reads the whole queue again (``None``: keep the date set by the last sweep)."""
        with write_transaction(self.sessions) as session:
            row = session.get(ServiceState, QUEUE_FLOOR_KEY)
            if row is None:
                row = ServiceState(key=QUEUE_FLOOR_KEY, until=sweep_due or now)
                session.add(row)
            elif sweep_due is not None:
                row.until = sweep_due
            row.value, row.updated_at = f"{floor.floor} {floor.seen}", now

    def last_id(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.max(QueueRow.id))) or 0)

    def pending_rows(self, limit: int, after: int = 0) -> list[RawQueueRow]:
        """Queue rows with no ledger entry yet, oldest first, every column read as text.
        ``after``: the last queue id already looked at this tick (each page starts past the
        previous one: fewer rows to skip, and a row that could not be admitted at all is not
        read again until the next tick)."""
        with self.sessions() as session:
            rows = session.execute(
                select(
                    QueueRow.id,
                    cast(QueueRow.amplitude_id, String),
                    cast(QueueRow.start_date, String),
                    cast(QueueRow.end_date, String),
                    cast(QueueRow.external_ref, String),
                    cast(QueueRow.requested_by, String),
                    cast(QueueRow.regime, String),
                    cast(QueueRow.received_at, String),
                    cast(QueueRow.created_at, String),
                    cast(QueueRow.request_type, String),
                    cast(QueueRow.user_id, String),
                )
                .where(*unadmitted(after))
                .order_by(QueueRow.id)
                .limit(limit)
            ).all()
        return [RawQueueRow(*row) for row in rows]

    def admit(self, verdicts: Sequence[Verdict], now: datetime) -> list[Admission]:
        """Write one ledger row (queued or rejected) per queue row; duplicates of an earlier
        ``external_ref`` are rejected here, inside the same transaction that checks them."""
        with write_transaction(self.sessions, lock=ADMIT_LOCK) as session:
            refs = {row.external_ref for row, _ in verdicts if row.external_ref}
            new = new_requests(verdicts, _refs_taken(session, refs))
            ids = _insert(session, new, now)
        self._notify(
            [
                Transition(i, None, r.state, r.event_reason, None, now)
                for i, r in zip(ids, new, strict=True)
            ]
        )
        return [
            Admission(i, r.state, r.reason, r.amplitude_id) for i, r in zip(ids, new, strict=True)
        ]


def _refs_taken(session: Session, refs: Collection[str]) -> dict[str, int]:
    """The queue row of each ledger row, not rejected, that carries one of ``refs``."""
    if not refs:
        return {}
    rows = session.execute(
        select(Request.external_ref, Request.queue_id).where(
            column_in(session, Request.external_ref, refs), Request.state != State.REJECTED
        )
    )
    # (a supplementary request has no queue row, nor a ref of its own)
    return {ref: q for ref, q in rows if ref is not None and q is not None}


def _insert(session: Session, new: Sequence[NewRequest], now: datetime) -> list[int]:
    """Bulk inserts (a COPY on PostgreSQL) of the requests and their first events; the new
    requests' ids, in order, read back by queue row."""
    if not new:
        return []
    bulk_insert(session, Request, [r.values(now) for r in new])
    # by range, not a list of one parameter per row; the range may hold older rows too
    queue_ids = [r.queue_id for r in new]
    by_queue_id = dict(
        session.execute(
            select(Request.queue_id, Request.id).where(
                Request.queue_id.between(min(queue_ids), max(queue_ids))
            )
        ).all()
    )
    ids = [by_queue_id[queue_id] for queue_id in queue_ids]
    # each new request's chain starts with its first event
    firsts = [
        Transition(request_id, None, r.state, r.event_reason, None, now)
        for request_id, r in zip(ids, new, strict=True)
    ]
    write_heads(session, append_events(session, firsts, {}))
    return ids


def unadmitted(after: int) -> tuple[ColumnElement[bool], ...]:
    """Queue rows past ``after`` with no ledger row. The bound on both sides lets PostgreSQL
    merge the two unique indexes from ``after`` on, instead of hashing the whole ledger."""
    return (
        QueueRow.id > after,
        ~exists().where(Request.queue_id == QueueRow.id, Request.queue_id > after),
    )


def read_floor(session: Session, now: datetime | None) -> QueueFloor:
    """The recorded floor; with ``now``, a floor of 0 once the full sweep is due (admission
    then reads the whole queue; a gauge keeps counting from the recorded floor)."""
    row = session.get(ServiceState, QUEUE_FLOOR_KEY)
    if row is None or not row.value:
        return QueueFloor(0, 0)
    try:
        floor, seen = (int(part) for part in row.value.split())
    except ValueError:  # not what set_floor writes (edited by hand?): read it all again
        return QueueFloor(0, 0)
    sweep_due = now is not None and (row.until is None or row.until <= now)
    return QueueFloor(0 if sweep_due else floor, seen)
