"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23

The queue (written by upstream), the request ledger, files, API calls with their cost,
the audit trail, shared service state, ticks, and the status view upstream reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dsar_api_calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("cost", sa.Integer(), nullable=False),
        sa.Column("reserved_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsar_api_calls")),
    )
    with op.batch_alter_table("dsar_api_calls", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dsar_api_calls_reserved_at"), ["reserved_at"], unique=False
        )

    op.create_table(
        "dsar_queue",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("amplitude_id", sa.BigInteger(), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("external_ref", sa.String(length=255), nullable=True),
        sa.Column("requested_by", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsar_queue")),
    )
    with op.batch_alter_table("dsar_queue", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dsar_queue_external_ref"), ["external_ref"], unique=False
        )

    op.create_table(
        "dsar_service_state",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("until", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_dsar_service_state")),
    )
    op.create_table(
        "dsar_ticks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsar_ticks")),
    )
    with op.batch_alter_table("dsar_ticks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dsar_ticks_started_at"), ["started_at"], unique=False)

    op.create_table(
        "dsar_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("external_ref", sa.String(length=255), nullable=True),
        sa.Column("amplitude_id", sa.BigInteger(), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("remote_request_id", sa.BigInteger(), nullable=True),
        sa.Column("submissions", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("expiries", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(), nullable=True),
        sa.Column("first_submitted_at", sa.DateTime(), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("stored_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("next_action_at", sa.DateTime(), nullable=True),
        sa.Column("storage_prefix", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["queue_id"], ["dsar_queue.id"], name=op.f("fk_dsar_requests_queue_id_dsar_queue")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsar_requests")),
        sa.UniqueConstraint("queue_id", name=op.f("uq_dsar_requests_queue_id")),
    )
    with op.batch_alter_table("dsar_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_dsar_requests_state_next", ["state", "next_action_at"], unique=False
        )

    op.create_table(
        "dsar_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("remote_request_id", sa.BigInteger(), nullable=False),
        sa.Column("output_index", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("event_count", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("stored_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["dsar_requests.id"],
            name=op.f("fk_dsar_files_request_id_dsar_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsar_files")),
        sa.UniqueConstraint(
            "request_id", "remote_request_id", "output_index", name=op.f("uq_dsar_files_request_id")
        ),
    )
    with op.batch_alter_table("dsar_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dsar_files_request_id"), ["request_id"], unique=False)

    op.create_table(
        "dsar_request_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("remote_request_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["dsar_requests.id"],
            name=op.f("fk_dsar_request_events_request_id_dsar_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsar_request_events")),
    )
    with op.batch_alter_table("dsar_request_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dsar_request_events_request_id"), ["request_id"], unique=False
        )

    op.execute(
        """CREATE VIEW dsar_queue_status AS
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
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS dsar_queue_status")
    with op.batch_alter_table("dsar_request_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dsar_request_events_request_id"))

    op.drop_table("dsar_request_events")
    with op.batch_alter_table("dsar_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dsar_files_request_id"))

    op.drop_table("dsar_files")
    with op.batch_alter_table("dsar_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_dsar_requests_state_next")

    op.drop_table("dsar_requests")
    with op.batch_alter_table("dsar_ticks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dsar_ticks_started_at"))

    op.drop_table("dsar_ticks")
    op.drop_table("dsar_service_state")
    with op.batch_alter_table("dsar_queue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dsar_queue_external_ref"))

    op.drop_table("dsar_queue")
    with op.batch_alter_table("dsar_api_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dsar_api_calls_reserved_at"))

    op.drop_table("dsar_api_calls")
