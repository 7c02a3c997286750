"""The ledger's records of one request for its evidence bundle (``core.bundle``), read in one
snapshot (PostgreSQL: a repeatable-read transaction; SQLite: its write lock), so the request,
its events, calls and files agree with each other.

Columns are chosen one by one: the bundle carries no URLs, no error texts, no credentials and
no personal data beyond the subject's identifiers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, cast, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import (
    ApiCall,
    DeletionEntry,
    DeletionReceipt,
    File,
    QueueRow,
    Request,
    on_postgres,
)
from dsar_scheduler.core.bundle import EvidenceRecords
from dsar_scheduler.core.receipts import ENTRY_FIELDS, RECEIPT_FIELDS
from dsar_scheduler.ledger.audit import read_chains

REQUEST_FIELDS = (
    "id",
    "queue_id",
    "external_ref",
    "request_type",
    "state",
    "reason",
    "amplitude_id",
    "user_id",
    "start_date",
    "end_date",
    "remote_request_id",
    "submissions",
    "failures",
    "expiries",
    "storage_prefix",
    "regime",
    "received_at",
    "due_at",
    "extended_until",
    "extension_reason",
    "queued_at",
    "first_submitted_at",
    "submitted_at",
    "done_at",
    "expires_at",
    "stored_at",
    "delivered_at",
    "purged_at",
)
#: The queue row as upstream wrote it, read as text (a bad row may hold anything).
QUEUE_FIELDS = (
    "id",
    "amplitude_id",
    "user_id",
    "start_date",
    "end_date",
    "external_ref",
    "requested_by",
    "request_type",
    "regime",
    "received_at",
    "created_at",
)
CALL_FIELDS = ("id", "kind", "cost", "reserved_at", "finished_at", "status_code", "outcome")
FILE_FIELDS = (
    "name",
    "remote_request_id",
    "output_index",
    "state",
    "bytes",
    "sha256",
    "event_count",
    "stored_at",
    "purged_at",
)


def read_evidence(sessions: sessionmaker[Session], request_id: int) -> EvidenceRecords | None:
    """One request's records; ``None`` if there is no such request."""
    with sessions() as session:
        if on_postgres(session):
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        request = _row(session, Request, REQUEST_FIELDS, Request.id == request_id)
        if request is None:
            return None
        chain = read_chains(session, [request_id])[request_id]
        return EvidenceRecords(
            request=request,
            as_requested=_queue_row(session, request["queue_id"]),
            deadline=session.execute(
                text("SELECT deadline FROM dsar_queue_status WHERE request_id = :r"),
                {"r": request_id},
            ).scalar(),
            chain_head=chain.head,
            events=chain.events,
            calls=_rows(session, ApiCall, CALL_FIELDS, ApiCall.request_id == request_id),
            oldest_call_kept=session.scalar(select(func.min(ApiCall.reserved_at))),
            files=_rows(session, File, FILE_FIELDS, File.request_id == request_id),
            deletion_entries=_rows(
                session, DeletionEntry, ENTRY_FIELDS, DeletionEntry.request_id == request_id
            ),
            receipts=_rows(
                session, DeletionReceipt, RECEIPT_FIELDS, DeletionReceipt.request_id == request_id
            ),
        )


def _row(session: Session, model: Any, names: tuple[str, ...], where: Any) -> dict[str, Any] | None:
    rows = _rows(session, model, names, where)
    return rows[0] if rows else None


def _rows(session: Session, model: Any, names: tuple[str, ...], where: Any) -> list[dict[str, Any]]:
    columns = [getattr(model, name) for name in names]
    query = select(*columns).where(where).order_by(model.id)
    return [dict(zip(names, row, strict=True)) for row in session.execute(query)]


def _queue_row(session: Session, queue_id: int | None) -> dict[str, str | None] | None:
    """The queue row as upstream wrote it (``None``: a supplementary request has none)."""
    if queue_id is None:
        return None
    columns = [cast(getattr(QueueRow, name), String) for name in QUEUE_FIELDS]
    row = session.execute(select(*columns).where(QueueRow.id == queue_id)).first()
    return None if row is None else dict(zip(QUEUE_FIELDS, row, strict=True))
