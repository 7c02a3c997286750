"""The writes a chunk of calls leaves behind, in one transaction at the end of the chunk:
each call's outcome, the polls that found a job still running, the files stored, and the POSTs
Amplitude accepted. A crash before it loses only bookkeeping that is safe to lose (the calls
stay counted as spent; a request is polled again, a file fetched again, a POST left in
``submitting`` is resubmitted)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import (
    ApiCall,
    File,
    Request,
    bulk_update,
    column_in,
    write_transaction,
)
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.events import append_events, with_heads
from dsar_scheduler.ledger.files import stored_values
from dsar_scheduler.ledger.rows import (
    CallOutcome,
    StillRunning,
    StoredFile,
    Submitted,
    Transition,
    TransitionListener,
)


def record_chunk(
    sessions: sessionmaker[Session],
    notify: TransitionListener,
    now: datetime,
    calls: Sequence[CallOutcome],
    running: Sequence[StillRunning],
    stored: Sequence[StoredFile],
    submitted: Sequence[Submitted] = (),
) -> None:
    """One transaction for a chunk of calls (``Ledger.record_chunk``)."""
    with write_transaction(sessions) as session:
        notes = _accepted_posts(session, submitted)
        _call_outcomes(session, calls, now)
        _still_running(session, running, now)
        _stored_files(session, stored, now)
    notify(notes)


def _accepted_posts(session: Session, submitted: Sequence[Submitted]) -> list[Transition]:
    """Each POST Amplitude accepted moves its request from ``submitting`` to ``submitted``,
    by compare-and-set with its audit event: the rows still ``submitting`` are locked (an
    operator may have cancelled one meanwhile), with their chain heads, then updated by id.
    The transitions made."""
    if not submitted:
        return []
    still: dict[int, str | None] = dict(
        session.execute(
            select(Request.id, Request.chain_head)
            .where(
                column_in(session, Request.id, [x.request_id for x in submitted]),
                Request.state == State.SUBMITTING,
            )
            .with_for_update()
        ).all()
    )
    moved = [x for x in submitted if x.request_id in still]
    if not moved:
        return []
    notes = [
        Transition(
            x.request_id,
            State.SUBMITTING,
            State.SUBMITTED,
            f"submitted as Amplitude request {x.remote_id}",
            x.remote_id,
            x.at,
        )
        for x in moved
    ]
    heads = append_events(session, notes, still)
    bulk_update(
        session,
        Request,
        with_heads(
            [_submitted_values(x, note.reason) for x, note in zip(moved, notes, strict=True)],
            heads,
        ),
    )
    return notes


def _submitted_values(x: Submitted, reason: str) -> dict[str, object]:
    """A request Amplitude accepted: its remote id, and the bookkeeping of a new remote job."""
    return {
        "id": x.request_id,
        "state": State.SUBMITTED,
        "reason": reason,
        "remote_request_id": x.remote_id,
        "submitted_at": x.at,
        "first_submitted_at": x.first_at,
        "next_action_at": x.next_poll,
        "errors": 0,
        "polls": 0,
        "last_polled_at": None,
        "done_at": None,
        "expires_at": None,
        "updated_at": x.at,
    }


def _call_outcomes(session: Session, calls: Sequence[CallOutcome], now: datetime) -> None:
    """Each call's outcome and HTTP status; its cost counts for an hour from ``now``."""
    bulk_update(
        session,
        ApiCall,
        [
            {
                "id": ticket.id,
                "outcome": outcome,
                "status_code": code,
                "finished_at": now,
                "counted_at": now,
            }
            for ticket, outcome, code in calls
        ],
    )


def _still_running(session: Session, running: Sequence[StillRunning], now: datetime) -> None:
    """Polls that found the job still running: counted, errors reset, the next one set."""
    bulk_update(
        session,
        Request,
        [
            {
                "id": request_id,
                "polls": polls,
                "errors": 0,
                "last_polled_at": now,
                "next_action_at": next_at,
                "updated_at": now,
            }
            for request_id, polls, next_at in running
        ],
    )


def _stored_files(session: Session, stored: Sequence[StoredFile], now: datetime) -> None:
    """Files stored and verified."""
    bulk_update(
        session,
        File,
        [
            {"id": file_id, **stored_values(size, sha256, events, ids, now)}
            for file_id, size, sha256, events, ids in stored
        ],
    )
