"""deletions: one entry per (request, project, Amplitude ID), their receipts, the privacy calls

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

Amplitude's User Privacy API has no job id, so the ledger keeps one entry per Amplitude ID and
project that a deletion request resolved to, each with its job's ``day`` and dates. Every answer
that proves something (the POST, each listing change, a cancel, each verification and re-check)
is kept as a receipt, append-only. User Search and User Activity have their own budget (360 an
hour and 10 at once per project), and the deletion API its own limits (one call a second and 8
at once per key): ``dsar_privacy_calls`` reserves each call before it is sent, as
``dsar_api_calls`` does for the DSAR budget, so replicas share them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dsar_deletion_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("amplitude_id", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("requested_on_day", sa.Date(), nullable=True),
        sa.Column("scrub_done_on", sa.Date(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("verified_at", sa.DateTime(), nullable=True),
        sa.Column("rechecks", sa.Integer(), nullable=False),
        sa.Column("reingested", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["dsar_requests.id"],
            name=op.f("fk_dsar_deletion_entries_request_id_dsar_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsar_deletion_entries")),
        sa.UniqueConstraint(
            "request_id",
            "project_id",
            "amplitude_id",
            name=op.f("uq_dsar_deletion_entries_request_id"),
        ),
    )
    op.create_index(
        "ix_dsar_deletion_entries_state_project",
        "dsar_deletion_entries",
        ["state", "project_id"],
    )
    op.create_table(
        "dsar_deletion_receipts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsar_deletion_receipts")),
    )
    op.create_index(
        op.f("ix_dsar_deletion_receipts_request_id"), "dsar_deletion_receipts", ["request_id"]
    )
    op.create_table(
        "dsar_privacy_calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("api", sa.String(16), nullable=False),
        sa.Column("reserved_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsar_privacy_calls")),
    )
    op.create_index(
        "ix_dsar_privacy_calls_api_project_reserved",
        "dsar_privacy_calls",
        ["api", "project_id", "reserved_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_dsar_privacy_calls_api_project_reserved", table_name="dsar_privacy_calls")
    op.drop_table("dsar_privacy_calls")
    op.drop_index(op.f("ix_dsar_deletion_receipts_request_id"), table_name="dsar_deletion_receipts")
    op.drop_table("dsar_deletion_receipts")
    op.drop_index("ix_dsar_deletion_entries_state_project", table_name="dsar_deletion_entries")
    op.drop_table("dsar_deletion_entries")
