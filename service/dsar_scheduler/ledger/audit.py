"""Reading the audit chains back: one request's on demand, many at once for the periodic
check, and that check's progress (kept in ``dsar_service_state``, so that every replica's
metrics read the same count of broken chains).

A request's head and its events are read in one statement: on PostgreSQL each statement sees
one snapshot, so an event committed between two reads cannot make a sound chain look broken.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import Event, Request, ServiceState, column_in, write_transaction
from dsar_scheduler.core.chain import ChainVerdict, verify_chain
from dsar_scheduler.ledger.convert import EVENT_COLUMNS
from dsar_scheduler.ledger.rows import EventRow

CHECK_KEY = "audit-chain-check"
#: Requests whose chains are read in one statement.
PAGE = 500
#: Broken chains remembered by the periodic check (the gauge counts at most this many).
MAX_BROKEN = 1000


@dataclass(frozen=True)
class Chain:
    """One request's chain head and events, in id order, as read together."""

    request_id: int
    head: str | None
    events: list[EventRow]

    def verify(self) -> ChainVerdict:
        return verify_chain(self.events, self.head)


@dataclass(frozen=True)
class CheckProgress:
    """Where the periodic check is: the last event whose request it verified, the last
    request id its sweep reached, the chains found broken (request id -> what is wrong),
    and when it last ran."""

    event_watermark: int = 0
    sweep_cursor: int = 0
    broken: dict[int, str] = field(default_factory=dict)
    checked_at: datetime | None = None


class Audit:
    """The audit chains as stored, and the periodic check's progress."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def chain(self, request_id: int) -> Chain | None:
        """One request's chain; ``None`` if there is no such request."""
        return self.chains([request_id]).get(request_id)

    def chains(self, request_ids: Sequence[int]) -> dict[int, Chain]:
        """The chains of the requests among ``request_ids`` (read ``PAGE`` at a time)."""
        out: dict[int, Chain] = {}
        ids = sorted(set(request_ids))
        with self.sessions() as session:
            for start in range(0, len(ids), PAGE):
                out.update(read_chains(session, ids[start : start + PAGE]))
        return out

    def changed_since(self, event_id: int, limit: int) -> tuple[list[int], int]:
        """Requests with events past ``event_id`` (reading at most ``limit`` events, oldest
        first), and the last event id read (``event_id`` if none)."""
        with self.sessions() as session:
            rows = session.execute(
                select(Event.id, Event.request_id)
                .where(Event.id > event_id)
                .order_by(Event.id)
                .limit(limit)
            ).all()
        if not rows:
            return [], event_id
        return sorted({request_id for _, request_id in rows}), rows[-1][0]

    def requests_after(self, request_id: int, limit: int) -> list[int]:
        """The next ``limit`` request ids after ``request_id``, in order (the sweep)."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Request.id)
                    .where(Request.id > request_id)
                    .order_by(Request.id)
                    .limit(limit)
                )
            )

    def progress(self) -> CheckProgress:
        with self.sessions() as session:
            row = session.get(ServiceState, CHECK_KEY)
            return _decode(row.value if row else None, row.updated_at if row else None)

    def save_progress(self, progress: CheckProgress, now: datetime) -> None:
        value = json.dumps(
            {
                "event_watermark": progress.event_watermark,
                "sweep_cursor": progress.sweep_cursor,
                "broken": {str(k): v for k, v in sorted(progress.broken.items())[:MAX_BROKEN]},
            }
        )
        with write_transaction(self.sessions, lock=CHECK_KEY) as session:
            row = session.get(ServiceState, CHECK_KEY)
            if row is None:
                session.add(ServiceState(key=CHECK_KEY, value=value, until=None, updated_at=now))
            else:
                row.value, row.updated_at = value, now


def read_chains(session: Session, ids: Sequence[int]) -> dict[int, Chain]:
    """The chains of the requests among ``ids``, head and events in one statement, in the
    caller's session (``ledger.evidence`` reads them in its snapshot)."""
    rows = session.execute(
        select(Request.id, Request.chain_head, *EVENT_COLUMNS)
        .select_from(Request)
        .outerjoin(Event, Event.request_id == Request.id)
        .where(column_in(session, Request.id, ids))
        .order_by(Request.id, Event.id)
    ).all()
    out: dict[int, Chain] = {}
    for row in rows:
        request_id, head, event = row[0], row[1], row[2:]
        chain = out.setdefault(request_id, Chain(request_id, head, []))
        if event[0] is not None:  # the outer join's row of a request without events
            chain.events.append(EventRow(*event))
    return out


def _decode(value: str | None, updated_at: datetime | None) -> CheckProgress:
    """The stored progress; a value that is not what ``save_progress`` writes starts over."""
    try:
        data = json.loads(value) if value else {}
        return CheckProgress(
            int(data.get("event_watermark", 0)),
            int(data.get("sweep_cursor", 0)),
            {int(k): str(v) for k, v in dict(data.get("broken", {})).items()},
            updated_at,
        )
    except (ValueError, TypeError, AttributeError):
        return CheckProgress(checked_at=updated_at)
