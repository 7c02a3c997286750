"""What a purge works on: the requests due (the SQL twin of ``core.retention.is_purge_due``),
the purges under way (their notes), and the files each removes. Shared by the purge's steps
(``retention``) and the record retention (``records``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dsar_scheduler.adapters.db import File, Request, ServiceState
from dsar_scheduler.core.retention import ACCESS, RetentionPolicy
from dsar_scheduler.core.states import State

#: ``dsar_service_state`` key prefix of a purge under way; its value is the manifest's sha256.
PURGE_NOTE = "purging:"


def legal_deadline() -> ColumnElement[datetime | None]:
    """A request's legal deadline, extended or not."""
    return func.coalesce(Request.extended_until, Request.due_at)


#: States the purge leaves alone: its own (a stored access request goes through them), and
#: those whose files are being fetched right now (the request ends stored or expired first).
NOT_LEFTOVER = frozenset({State.STORED, State.PURGING, State.PURGED, State.DONE, State.FETCHING})
#: Every other state: a request there may hold files its purge removes without moving it.
LEFTOVER_STATES = [s.value for s in State if s not in NOT_LEFTOVER]


@dataclass(frozen=True, slots=True)
class PurgeTarget:
    """A request whose files are due for purging, or whose purge is under way."""

    id: int
    state: str
    storage_prefix: str | None
    stored_at: datetime | None
    delivered_at: datetime | None
    deadline: datetime | None
    #: A purge note exists: the purge began (and the manifest's digest was taken).
    begun: bool = False

    @property
    def moves(self) -> bool:
        """A stored access request goes to ``purging`` and ``purged``; a request in any
        other state keeps its state, and the audit trail says what was removed."""
        return self.state in (State.STORED, State.PURGING)

    @property
    def whole_folder(self) -> bool:
        """Its export was complete (stored at some time, no fetch can add to it): the whole
        folder goes, manifest last; otherwise only the files past their retention."""
        return self.stored_at is not None


@dataclass(frozen=True, slots=True)
class PurgeFile:
    id: int
    name: str
    bytes: int | None


TARGET_COLUMNS = (
    Request.id,
    Request.state,
    Request.storage_prefix,
    Request.stored_at,
    Request.delivered_at,
    legal_deadline(),
)


STORED_ACCESS = and_(Request.state == State.STORED, Request.request_type == ACCESS)


def stored_due(now: datetime, policy: RetentionPolicy) -> ColumnElement[bool] | None:
    """``core.retention.is_purge_due`` in SQL, for stored requests."""
    due: list[ColumnElement[bool]] = []
    cutoff = policy.result_cutoff(now)
    if cutoff is not None:
        past_deadline = or_(
            Request.delivered_at.is_not(None), legal_deadline().is_(None), legal_deadline() <= now
        )
        due.append(and_(Request.stored_at <= cutoff, past_deadline))
    if policy.purge_on_delivery:
        due.append(Request.delivered_at <= now)
    return or_(*due) if due else None


def leftover(cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    """Requests outside the stored path holding stored files from before ``cutoff`` (only a
    request that finished at Amplitude once can hold any)."""
    return (
        Request.state.in_(LEFTOVER_STATES),
        Request.done_at.is_not(None),
        exists().where(unpurged(cutoff), File.request_id == Request.id),
    )


def unpurged(cutoff: datetime | None) -> ColumnElement[bool]:
    """Stored files still in storage (stored before ``cutoff``, if given)."""
    where = and_(File.state == "stored", File.purged_at.is_(None))
    return where if cutoff is None else and_(where, File.stored_at <= cutoff)


def targets(
    session: Session, *where: ColumnElement[bool], limit: int | None = None
) -> list[PurgeTarget]:
    rows = session.execute(
        select(*TARGET_COLUMNS).where(*where).order_by(Request.stored_at, Request.id).limit(limit)
    ).all()
    return [PurgeTarget(*row) for row in rows]


def noted(session: Session) -> list[int]:
    keys = session.scalars(
        select(ServiceState.key)
        .where(ServiceState.key.startswith(PURGE_NOTE, autoescape=True))
        .order_by(ServiceState.until)
    )
    return [int(key.removeprefix(PURGE_NOTE)) for key in keys]


def note_key(request_id: int) -> str:
    return f"{PURGE_NOTE}{request_id}"
