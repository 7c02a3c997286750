"""Record retention: a finished request's record removed DSAR_RECORD_RETENTION_DAYS after it
ended (its files purged, or rejected, dead or cancelled without files left in storage).

Its audit events and file rows are deleted, and its ``dsar_requests`` row is cut down to a
tombstone holding no identifier: id, queue row, state, kind and a few times, with a reason
saying when and why the rest went. The row itself must stay: upstream's ``dsar_queue`` row
(which this service never changes) still exists, and admission takes every queue row without
a ledger row as new, so deleting it would export the subject again at the next full sweep of
the queue. The tombstone also keeps the stored totals the metrics count from. A deletion's
entries and receipts go with its record (CCPA §7101's 24 months of records cover them; the
re-ingestion checks end 30 days after the erasure). Rows of ``dsar_api_calls`` hold no
personal data and go with DSAR_CALL_RETENTION_DAYS.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from dsar_scheduler.adapters.db import (
    DeletionEntry,
    DeletionReceipt,
    Event,
    File,
    Request,
    ServiceState,
    write_transaction,
)
from dsar_scheduler.core.retention import RetentionPolicy, record_removed_reason
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.purge_targets import note_key

#: Requests that ended without an export kept in storage (their files, if any, purged first):
#: a deletion's end is its verified erasure (its receipts and entries go with the record).
_ENDED = [State.REJECTED, State.DEAD, State.CANCELLED, State.DELETED]
#: Every column of a tombstone that could say who or what the request was about.
_FORGOTTEN: dict[str, Any] = dict.fromkeys(
    (
        "external_ref",
        "amplitude_id",
        "user_id",
        "start_date",
        "end_date",
        "remote_request_id",
        "storage_prefix",
        "submitted_at",
        "first_submitted_at",
        "done_at",
        "expires_at",
        "last_polled_at",
        "next_action_at",
        "regime",
        "received_at",
        "due_at",
        "extended_until",
        "extension_reason",
        "delivered_at",
        "purged_at",
        "chain_head",
        "expected_ids",
    )
)


class Records:
    """Finding and removing the records past DSAR_RECORD_RETENTION_DAYS."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def removable(self, now: datetime, policy: RetentionPolicy, limit: int) -> list[int]:
        """Ids of requests whose record is due for removal, oldest first."""
        where = _removable(now, policy)
        if where is None:
            return []
        with self.sessions() as session:
            return list(
                session.scalars(select(Request.id).where(where).order_by(Request.id).limit(limit))
            )

    def remove(self, ids: Sequence[int], policy: RetentionPolicy, now: datetime) -> list[int]:
        """Remove the records of ``ids`` still due (checked again under the row locks), in
        one transaction: events and file rows deleted, the request row made a tombstone.
        The ids removed."""
        where = _removable(now, policy)
        if where is None or not ids:
            return []
        with write_transaction(self.sessions) as session:
            due = list(
                session.scalars(
                    select(Request.id)
                    .where(Request.id.in_(list(ids)), where)
                    .order_by(Request.id)
                    .with_for_update()
                )
            )
            due = [i for i in due if session.get(ServiceState, note_key(i)) is None]
            if not due:
                return []
            for model in (Event, File, DeletionEntry, DeletionReceipt):
                session.execute(delete(model).where(model.request_id.in_(due)))
            session.execute(
                update(Request)
                .where(Request.id.in_(due))
                .values(**_FORGOTTEN, reason=record_removed_reason(now, policy), updated_at=now)
            )
        return due


def _removable(now: datetime, policy: RetentionPolicy) -> ColumnElement[bool] | None:
    """Requests that ended before the record cutoff and still have their history: purged (a
    tombstone's ``purged_at`` is cleared, so it leaves that index), or ended without an
    export and with no file left in storage (a deletion: erased and verified)."""
    cutoff = policy.record_cutoff(now)
    if cutoff is None:
        return None
    has_history = exists().where(Event.request_id == Request.id)
    files_left = exists().where(
        File.request_id == Request.id, File.state == "stored", File.purged_at.is_(None)
    )
    purged = and_(Request.state == State.PURGED, Request.purged_at <= cutoff)
    ended = and_(Request.state.in_(_ENDED), Request.updated_at <= cutoff, has_history, ~files_left)
    return or_(purged, ended)
