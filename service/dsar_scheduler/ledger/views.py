"""What the metrics and ``dsar status`` show, computed from the ledger alone, and the stored
totals each tick records for processes that start later (``totals``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from dsar_scheduler.adapters.db import Base, File, QueueRow, Request, Tick, write_transaction
from dsar_scheduler.core.states import OUTSTANDING, State
from dsar_scheduler.ledger.budget import backoff_in, spent_in
from dsar_scheduler.ledger.files import FETCHING
from dsar_scheduler.ledger.queue import read_floor, unadmitted
from dsar_scheduler.ledger.rows import Snapshot
from dsar_scheduler.ledger.totals import StoredTotals

#: States counted from the running totals (``totals``), not by the state index.
_FROM_TOTALS = (State.STORED, State.PURGED)
#: Requests admitted and not finished: waiting, in flight, or waiting to be resubmitted.
_ACTIVE = [s.value for s in OUTSTANDING | {State.QUEUED, State.FAILED, State.EXPIRED}]


class Views:
    """The snapshot behind every gauge; the stored totals it reads are kept per process."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.stored_totals = StoredTotals()

    def save_stored_totals(self, now: datetime) -> None:
        """Record the stored totals up to their watermark, for processes that start later
        (``totals``); each tick does, at its end."""
        with write_transaction(self.sessions) as session:
            self.stored_totals.save(session, now)

    def snapshot(self, now: datetime, sla: timedelta) -> Snapshot:
        with self.sessions() as session:
            by_state = _by_state(session)
            stored = self.stored_totals.read(session, now)
            if stored.requests:
                by_state[State.STORED] = stored.requests  # ever stored, purged ones too
            if stored.purged:
                by_state[State.PURGED] = stored.purged
            return Snapshot(
                queue_pending=_count(
                    session, QueueRow, *unadmitted(read_floor(session, None).floor)
                ),
                by_state=by_state,
                cost_in_window=spent_in(session, now),
                earliest_unfetched_expiry=session.scalar(
                    select(func.min(Request.expires_at)).where(Request.state.in_(FETCHING))
                ),
                oldest_outstanding_since=session.scalar(
                    select(func.min(Request.first_submitted_at)).where(Request.state.in_(_ACTIVE))
                ),
                past_sla=_count(
                    session,
                    Request,
                    Request.state.in_(_ACTIVE),
                    Request.first_submitted_at < now - sla,
                ),
                pending_files=_count(session, File, File.state == "pending"),
                stored_files=stored.files,
                stored_bytes=stored.bytes,
                last_ok_tick=session.scalar(
                    select(func.max(Tick.finished_at)).where(Tick.outcome == "ok")
                ),
                rate_limited_until=backoff_in(session, now),
            )


def _by_state(session: Session) -> dict[str, int]:
    """Requests by state, every state but stored and purged (by the state index: their rows
    are few; stored and purged ones come from the running totals, they are most of the
    history)."""
    return {
        state: int(count)
        for state, count in session.execute(
            select(Request.state, func.count())
            .where(Request.state.in_([s.value for s in State if s not in _FROM_TOTALS]))
            .group_by(Request.state)
        )
    }


def _count(session: Session, model: type[Base], *where: ColumnElement[bool]) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)
