"""planner columns and budget indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

- ``dsar_api_calls.counted_at``: the moment from which a call's cost counts for an hour (its
  reservation, moved to its end when it finishes), with a covering index ``(counted_at,
  cost)`` so the budget query is an index range scan over the last hour however many rows
  the table holds;
- ``dsar_requests.last_polled_at``: when Amplitude last said the request was still running
  (the planner's view of each request), and an index on ``done_at`` (completion samples);
- an index on ``dsar_files (state, next_attempt_at)``: the few pending files among millions of
  stored ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# dsar_queue_status as revision 0001 created it (unchanged by this revision).
STATUS_VIEW_SQL = """CREATE VIEW dsar_queue_status AS
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

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dsar_api_calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("counted_at", sa.DateTime(), nullable=True))
    op.execute("UPDATE dsar_api_calls SET counted_at = COALESCE(finished_at, reserved_at)")
    with op.batch_alter_table("dsar_api_calls", schema=None) as batch_op:
        batch_op.alter_column("counted_at", existing_type=sa.DateTime(), nullable=False)
        batch_op.create_index(
            "ix_dsar_api_calls_counted_at_cost", ["counted_at", "cost"], unique=False
        )

    with op.batch_alter_table("dsar_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_polled_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_dsar_requests_done_at", ["done_at"], unique=False)

    with op.batch_alter_table("dsar_files", schema=None) as batch_op:
        batch_op.create_index(
            "ix_dsar_files_state_next", ["state", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    # SQLite rebuilds dsar_requests to drop a column; the view over it goes and comes back.
    op.execute("DROP VIEW IF EXISTS dsar_queue_status")
    with op.batch_alter_table("dsar_files", schema=None) as batch_op:
        batch_op.drop_index("ix_dsar_files_state_next")

    with op.batch_alter_table("dsar_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_dsar_requests_done_at")
        batch_op.drop_column("last_polled_at")

    with op.batch_alter_table("dsar_api_calls", schema=None) as batch_op:
        batch_op.drop_index("ix_dsar_api_calls_counted_at_cost")
        batch_op.drop_column("counted_at")
    op.execute(STATUS_VIEW_SQL)
