"""compliance and request kinds: deadlines, the audit chain, retention, subjects by user ID

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

``dsar_queue`` gains optional columns upstream may fill (the minimal insert is unchanged):
``request_type``, ``user_id``, ``regime`` and ``received_at``. A request carries them, with its
legal deadline (``due_at``, ``extended_until`` and why), when it was delivered and purged, and
the hash of its last audit event (``chain_head``): each event carries the hash of the one
before it, so an edited or removed event breaks the chain. A stored file keeps its record
(name, bytes, sha256) after its bytes are purged (``purged_at``). The status view shows all of
it, with whether the deadline was met.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def queue() -> list[sa.Column[object]]:
    return [
        sa.Column("request_type", sa.String(32), nullable=True),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("regime", sa.String(32), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=True),
    ]


def requests() -> list[sa.Column[object]]:
    return [
        sa.Column("request_type", sa.String(24), server_default="access", nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("regime", sa.String(16), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=True),
        sa.Column("due_at", sa.DateTime(), nullable=True),
        sa.Column("extended_until", sa.DateTime(), nullable=True),
        sa.Column("extension_reason", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("purged_at", sa.DateTime(), nullable=True),
        sa.Column("chain_head", sa.String(64), nullable=True),
    ]


def events() -> list[sa.Column[object]]:
    return [
        sa.Column("prev_hash", sa.String(64), nullable=True),
        sa.Column("hash", sa.String(64), nullable=True),
    ]


def files() -> list[sa.Column[object]]:
    return [sa.Column("purged_at", sa.DateTime(), nullable=True)]


SPARSE = [
    ("ix_dsar_requests_due_at", "dsar_requests", "due_at"),
    ("ix_dsar_requests_purged_at", "dsar_requests", "purged_at"),
]

STATUS_VIEW = """CREATE VIEW dsar_queue_status AS
        SELECT q.id AS queue_id,
               q.external_ref,
               q.amplitude_id,
               q.user_id,
               COALESCE(r.request_type, q.request_type, 'access') AS request_type,
               q.created_at AS queued_at,
               COALESCE(r.state, 'pending') AS state,
               r.reason,
               r.id AS request_id,
               r.remote_request_id,
               r.storage_prefix,
               r.done_at,
               r.expires_at,
               r.stored_at,
               r.updated_at,
               r.regime,
               r.received_at,
               r.due_at,
               r.extended_until,
               CASE
                   WHEN r.due_at IS NULL THEN NULL
                   WHEN r.stored_at IS NULL THEN 'open'
                   WHEN r.stored_at <= COALESCE(r.extended_until, r.due_at) THEN 'met'
                   ELSE 'missed'
               END AS deadline,
               r.delivered_at,
               r.purged_at
        FROM dsar_queue q
        LEFT JOIN dsar_requests r ON r.queue_id = q.id"""

OLD_STATUS_VIEW = """CREATE VIEW dsar_queue_status AS
        SELECT q.id AS queue_id,
               q.external_ref,
               q.amplitude_id,
               q.created_at AS queued_at,
               COALESCE(r.state, 'pending') AS state,
               r.reason,
               r.id AS request_id,
               r.remote_request_id,
               r.storage_prefix,
               r.done_at,
               r.expires_at,
               r.stored_at,
               r.updated_at
        FROM dsar_queue q
        LEFT JOIN dsar_requests r ON r.queue_id = q.id"""


def _add(table: str, columns: list[sa.Column[object]]) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns:
            batch_op.add_column(column)


def _drop(table: str, columns: list[sa.Column[object]]) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns:
            batch_op.drop_column(column.name)


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS dsar_queue_status")
    _add("dsar_queue", queue())
    _add("dsar_requests", requests())
    _add("dsar_request_events", events())
    _add("dsar_files", files())
    for name, table, column in SPARSE:
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, table, [column], postgresql_where=where, sqlite_where=where)
    op.execute(STATUS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS dsar_queue_status")
    for name, table, _column in SPARSE:
        op.drop_index(name, table_name=table)
    _drop("dsar_files", files())
    _drop("dsar_request_events", events())
    _drop("dsar_requests", requests())
    _drop("dsar_queue", queue())
    op.execute(OLD_STATUS_VIEW)
