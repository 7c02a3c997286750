"""the coverage check of an access request by user ID: the Amplitude IDs each stored file
holds, the IDs resolved for the user, and supplementary requests for the IDs an export missed

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

A stored file keeps the distinct ``amplitude_id``s its events carry (``amplitude_ids``,
comma-separated). An access request by user ID keeps the Amplitude IDs User Search and User
Activity resolved for the user (``expected_ids``). An ID the export missed is asked for by a
supplementary request: a ``dsar_requests`` row of its own, with its parent (``parent_id``) and
no queue row (``queue_id`` becomes nullable; the status view, one row per queue row, still
joins on it), at most one per parent and Amplitude ID.

SQLite cannot drop a NOT NULL in place, and rebuilding the table would trip the foreign keys
that point at it (they cannot be switched off inside the migration's transaction): its stored
``CREATE TABLE`` text is edited instead, the way SQLite documents for removing a NOT NULL
(https://www.sqlite.org/lang_altertable.html, "making other kinds of table schema changes").
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNIQUE = "uq_dsar_requests_parent_amplitude"
PARENT_FK = "fk_dsar_requests_parent_id_dsar_requests"
NULLABLE_QUEUE_ID = ("queue_id INTEGER NOT NULL,", "queue_id INTEGER,")
PARENT_COLUMN = f"parent_id INTEGER CONSTRAINT {PARENT_FK} REFERENCES dsar_requests (id)"


def _edit_sqlite_schema(old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in ``dsar_requests``' stored definition (changes that
    leave the rows on disk as they are), and bump the schema version so that every
    connection reads it again."""
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'dsar_requests'"
    ).scalar_one()
    if sql.count(old) != 1:
        raise RuntimeError(f"dsar_requests is not as expected: {old!r} not found once")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'dsar_requests'",
        (sql.replace(old, new),),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema=OFF")


def upgrade() -> None:
    op.add_column("dsar_files", sa.Column("amplitude_ids", sa.Text(), nullable=True))
    op.add_column("dsar_requests", sa.Column("expected_ids", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE dsar_requests ADD COLUMN {PARENT_COLUMN}")
        _edit_sqlite_schema(*NULLABLE_QUEUE_ID)
    else:
        op.add_column("dsar_requests", sa.Column("parent_id", sa.Integer(), nullable=True))
        op.create_foreign_key(PARENT_FK, "dsar_requests", "dsar_requests", ["parent_id"], ["id"])
        op.alter_column("dsar_requests", "queue_id", existing_type=sa.Integer(), nullable=True)
    op.create_index(UNIQUE, "dsar_requests", ["parent_id", "amplitude_id"], unique=True)


def downgrade() -> None:
    """Supplementary requests (no queue row) go with their records: the NOT NULL returns."""
    children = "SELECT id FROM dsar_requests WHERE queue_id IS NULL"
    op.execute(f"DELETE FROM dsar_request_events WHERE request_id IN ({children})")
    op.execute(f"DELETE FROM dsar_files WHERE request_id IN ({children})")
    op.execute("DELETE FROM dsar_requests WHERE queue_id IS NULL")
    op.drop_index(UNIQUE, table_name="dsar_requests")
    if op.get_bind().dialect.name == "sqlite":
        _edit_sqlite_schema(NULLABLE_QUEUE_ID[1], NULLABLE_QUEUE_ID[0])
        _edit_sqlite_schema(PARENT_COLUMN, "parent_id INTEGER")  # DROP COLUMN refuses a FK
        op.execute("ALTER TABLE dsar_requests DROP COLUMN parent_id")
    else:
        op.alter_column("dsar_requests", "queue_id", existing_type=sa.Integer(), nullable=False)
        op.drop_constraint(PARENT_FK, "dsar_requests", type_="foreignkey")
        op.drop_column("dsar_requests", "parent_id")
    op.drop_column("dsar_requests", "expected_ids")
    op.drop_column("dsar_files", "amplitude_ids")
