"""The tables (SQLAlchemy 2 ORM models) the service keeps, and the type that stores every time.

Every time is stored as naive UTC and handed back as aware UTC (``UTCDateTime``), so SQLite and
PostgreSQL agree and the injected clock, never the database's ``now()``, decides what is due.
The migrations (``migrations/versions``) create the same schema, and the ``dsar_queue_status``
view over it.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dsar_scheduler.adapters.clock import naive_utc, utc

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Naive UTC in the database, aware UTC in Python."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else naive_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)


def sparse_index(name: str, column: str) -> Index:
    """An index of the rows where ``column`` has a value: the queries read only those, and
    the many rows written without one (requests in flight) cost it nothing."""
    where = text(f"{column} IS NOT NULL")
    return Index(name, column, postgresql_where=where, sqlite_where=where)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class QueueRow(Base):
    """``dsar_queue``: written by upstream systems, read (never changed) by the service."""

    __tablename__ = "dsar_queue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Deliberately loose types and nullable: a bad row must be insertable so that it can be
    # rejected with a reason, not lost to a constraint error upstream never sees.
    amplitude_id: Mapped[int | None] = mapped_column(BigInteger)
    start_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    external_ref: Mapped[str | None] = mapped_column(String(255), index=True)
    requested_by: Mapped[str | None] = mapped_column(String(255))
    # Optional: what kind of request, the subject by user ID, the legal regime and when the
    # privacy team received the request (the insert time when absent).
    request_type: Mapped[str | None] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(Text)
    regime: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime, server_default=func.current_timestamp()
    )


class Request(Base):
    """``dsar_requests``: the ledger, one state machine per admitted queue row."""

    __tablename__ = "dsar_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: ``None`` only for a supplementary request (``parent_id``), which has no queue row.
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("dsar_queue.id"), unique=True)
    external_ref: Mapped[str | None] = mapped_column(String(255))
    amplitude_id: Mapped[int | None] = mapped_column(BigInteger)
    start_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    remote_request_id: Mapped[int | None] = mapped_column(BigInteger)
    submissions: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    expiries: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)  # transient errors in a row
    polls: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When this request next needs work (a poll, a retry after an error): the due index.
    next_action_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    storage_prefix: Mapped[str | None] = mapped_column(String(255))
    #: When Amplitude last answered a status poll of the current remote request with "not
    #: finished yet" (left as it was when the poll saw ``done``: the job finished in between).
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    request_type: Mapped[str] = mapped_column(String(24), server_default="access")
    user_id: Mapped[str | None] = mapped_column(Text)
    #: The legal deadline: the regime's rules applied to when the request was received.
    regime: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    extended_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    extension_reason: Mapped[str | None] = mapped_column(Text)
    #: Retention: the result handed over (may shorten it) and its files purged.
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The hash of this request's last audit event: the chain's end, so that removing the
    #: last event is seen too.
    chain_head: Mapped[str | None] = mapped_column(String(64))
    #: An access request by user ID: the Amplitude IDs resolved for the user, comma-separated
    #: (``core.coverage``; empty: found in no project; ``None``: not resolved).
    expected_ids: Mapped[str | None] = mapped_column(Text)
    #: A supplementary request: the request whose export missed its Amplitude ID.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("dsar_requests.id"))

    __table_args__ = (
        Index("ix_dsar_requests_state_next", "state", "next_action_at"),
        # one supplementary request per parent and missing Amplitude ID (NULLs never clash)
        Index("uq_dsar_requests_parent_amplitude", "parent_id", "amplitude_id", unique=True),
        # deadlines: the open requests nearest to theirs; retention: the purged ones
        sparse_index("ix_dsar_requests_due_at", "due_at"),
        sparse_index("ix_dsar_requests_purged_at", "purged_at"),
        # the planner's completion-time samples: requests done recently
        sparse_index("ix_dsar_requests_done_at", "done_at"),
        # the metrics' running totals: requests stored since a watermark (totals.py)
        sparse_index("ix_dsar_requests_stored_at", "stored_at"),
        # admission's check for an earlier request with the same external_ref
        sparse_index("ix_dsar_requests_external_ref", "external_ref"),
    )


class File(Base):
    """``dsar_files``: one output URL of one remote request."""

    __tablename__ = "dsar_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("dsar_requests.id"), index=True)
    remote_request_id: Mapped[int] = mapped_column(BigInteger)
    output_index: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | stored
    name: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    event_count: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The bytes were removed from storage; the row stays as the record of what was removed.
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The distinct ``amplitude_id``s of its events, comma-separated (``core.coverage``).
    amplitude_ids: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("request_id", "remote_request_id", "output_index"),
        # pending files among millions of stored ones
        Index("ix_dsar_files_state_next", "state", "next_attempt_at"),
        # the metrics' running totals: files stored since a watermark (totals.py)
        sparse_index("ix_dsar_files_stored_at", "stored_at"),
    )


class ApiCall(Base):
    """``dsar_api_calls``: every call, its cost reserved before it is sent (the budget)."""

    __tablename__ = "dsar_api_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # submit | status | fetch
    cost: Mapped[int] = mapped_column(Integer)
    reserved_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The cost counts in the rolling hour after this moment: the reservation, moved to the
    #: call's end when it finishes (Amplitude charged it somewhere in between, so the ledger
    #: never frees a cost before Amplitude does).
    counted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32), default="reserved")
    request_id: Mapped[int | None] = mapped_column(Integer)

    # The budget query reads only this index (a range scan over the last hour), however many
    # rows the call ledger holds.
    __table_args__ = (Index("ix_dsar_api_calls_counted_at_cost", "counted_at", "cost"),)


class Event(Base):
    """``dsar_request_events``: the audit trail, one row per state change with its reason."""

    __tablename__ = "dsar_request_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("dsar_requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    remote_request_id: Mapped[int | None] = mapped_column(BigInteger)
    #: The hash chain: this event's hash covers its fields and the previous event's hash.
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))


class ServiceState(Base):
    """``dsar_service_state``: small shared facts (rate-limit backoff, leases, last tick)."""

    __tablename__ = "dsar_service_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Tick(Base):
    """``dsar_ticks``: one row per tick, so 'last successful tick' survives restarts."""

    __tablename__ = "dsar_ticks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16), default="running")  # running|ok|error
    summary: Mapped[str | None] = mapped_column(Text)


class DeletionEntry(Base):
    """``dsar_deletion_entries``: one Amplitude ID of a deletion request in one project, from
    identity resolution to a verified erasure (``core.deletion.Entry``)."""

    __tablename__ = "dsar_deletion_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("dsar_requests.id"))
    project_id: Mapped[int] = mapped_column(BigInteger)
    amplitude_id: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))  # queue | search | merged
    state: Mapped[str] = mapped_column(String(16))
    #: Amplitude's job (project, ``day``) and the entry's ``requested_on_day`` in it.
    day: Mapped[date | None] = mapped_column(Date)
    requested_on_day: Mapped[date | None] = mapped_column(Date)
    #: ``active_scrub_done_date``: from then the data is no longer accessible.
    scrub_done_on: Mapped[date | None] = mapped_column(Date)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Re-ingestion checks made after the verification, and the Amplitude IDs that came back.
    rechecks: Mapped[int] = mapped_column(Integer, default=0)
    reingested: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("request_id", "project_id", "amplitude_id"),
        Index("ix_dsar_deletion_entries_state_project", "state", "project_id"),
    )


class DeletionReceipt(Base):
    """``dsar_deletion_receipts``: an answer that proves a step of a deletion, kept as it came
    (append-only: a receipt is never overwritten)."""

    __tablename__ = "dsar_deletion_receipts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: ``None`` for a listing snapshot that concerns several requests.
    request_id: Mapped[int | None] = mapped_column(Integer, index=True)
    project_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # post | listing | cancel | verify | recheck
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)


class PrivacyCall(Base):
    """``dsar_privacy_calls``: each User Privacy, User Search or User Activity call, reserved
    before it is sent, so replicas share those APIs' limits (``api``: deletion | search)."""

    __tablename__ = "dsar_privacy_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(BigInteger)
    api: Mapped[str] = mapped_column(String(16))
    reserved_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    request_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_dsar_privacy_calls_api_project_reserved", "api", "project_id", "reserved_at"),
    )
