"""indexes on stored_at for the metrics' running totals

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

The metrics count stored requests and files once up to a watermark and then only what was
stored past it (``service/dsar_scheduler/totals.py``): an index range on ``stored_at`` of
``dsar_requests`` and of ``dsar_files``, instead of counting the whole history on every
scrape.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_dsar_requests_stored_at", "dsar_requests", ["stored_at"], unique=False)
    op.create_index("ix_dsar_files_stored_at", "dsar_files", ["stored_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_dsar_files_stored_at", table_name="dsar_files")
    op.drop_index("ix_dsar_requests_stored_at", table_name="dsar_requests")
