"""the status view shows deletions: their job day, when the data stopped being accessible,
when Amplitude was done and when that was verified; a deletion's deadline is met by then

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

A deletion's answer is its verified erasure, not a stored export: its deadline is met or
missed by when its last entry was verified (a subject found in no project: when that was
known, the request's move to ``deleted``). An ``access_and_deletion`` request is answered
when both are done.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = """q.id AS queue_id,
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
               r.extended_until,"""

TAIL = """r.delivered_at,
               r.purged_at"""

OLD_DEADLINE = """CASE
                   WHEN r.due_at IS NULL THEN NULL
                   WHEN r.stored_at IS NULL THEN 'open'
                   WHEN r.stored_at <= COALESCE(r.extended_until, r.due_at) THEN 'met'
                   ELSE 'missed'
               END AS deadline,"""

#: When a request was answered: its export stored (access), its erasure verified (deletion),
#: both (access_and_deletion); NULL while it is not.
ANSWERED = """CASE
                   WHEN COALESCE(r.request_type, 'access') = 'access' THEN r.stored_at
                   WHEN r.state <> 'deleted' THEN NULL
                   ELSE COALESCE(d.verified_at, r.updated_at)
               END"""

NEW_DEADLINE = f"""CASE
                   WHEN r.due_at IS NULL THEN NULL
                   WHEN ({ANSWERED}) IS NULL THEN 'open'
                   WHEN ({ANSWERED}) <= COALESCE(r.extended_until, r.due_at) THEN 'met'
                   ELSE 'missed'
               END AS deadline,"""

DELETION = """d.job_day AS deletion_day,
               d.scrubbed_on AS deletion_scrubbed_on,
               d.done_at AS deletion_done_at,
               d.verified_at AS deletion_verified_at,"""

ENTRIES = """LEFT JOIN (
            SELECT request_id,
                   MAX(day) AS job_day,
                   MAX(scrub_done_on) AS scrubbed_on,
                   MAX(done_at) AS done_at,
                   MAX(verified_at) AS verified_at
            FROM dsar_deletion_entries
            WHERE state NOT IN ('invalid', 'cancelled')
            GROUP BY request_id
        ) d ON d.request_id = r.id"""


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS dsar_queue_status")
    op.execute(
        f"""CREATE VIEW dsar_queue_status AS
        SELECT {COLUMNS}
               {NEW_DEADLINE}
               {DELETION}
               {TAIL}
        FROM dsar_queue q
        LEFT JOIN dsar_requests r ON r.queue_id = q.id
        {ENTRIES}"""
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS dsar_queue_status")
    op.execute(
        f"""CREATE VIEW dsar_queue_status AS
        SELECT {COLUMNS}
               {OLD_DEADLINE}
               {TAIL}
        FROM dsar_queue q
        LEFT JOIN dsar_requests r ON r.queue_id = q.id"""
    )
