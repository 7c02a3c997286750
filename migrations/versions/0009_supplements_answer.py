"""the status view: an access request by user ID is answered when its supplementary requests
(the Amplitude IDs its export missed) are stored too

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Its ``deadline`` is met or missed by the latest of its own and its supplements' ``stored_at``,
and stays open while one of them is not stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The view's parts as 0007 wrote them (a migration is a snapshot: it does not import another).
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

#: When a request was answered, as 0007 had it but for access (``{access}``).
ANSWERED = """CASE
                   WHEN COALESCE(r.request_type, 'access') = 'access' THEN {access}
                   WHEN r.state <> 'deleted' THEN NULL
                   ELSE COALESCE(d.verified_at, r.updated_at)
               END"""

ACCESS_ANSWERED = """CASE
                   WHEN r.stored_at IS NULL THEN NULL
                   WHEN EXISTS (
                       SELECT 1 FROM dsar_requests c
                       WHERE c.parent_id = r.id AND c.stored_at IS NULL
                   ) THEN NULL
                   ELSE COALESCE(
                       (SELECT MAX(c.stored_at) FROM dsar_requests c
                        WHERE c.parent_id = r.id AND c.stored_at > r.stored_at),
                       r.stored_at
                   )
               END"""


def _view(answered_access: str) -> str:
    answered = ANSWERED.format(access=answered_access)
    deadline = f"""CASE
                   WHEN r.due_at IS NULL THEN NULL
                   WHEN ({answered}) IS NULL THEN 'open'
                   WHEN ({answered}) <= COALESCE(r.extended_until, r.due_at) THEN 'met'
                   ELSE 'missed'
               END AS deadline,"""
    return f"""CREATE VIEW dsar_queue_status AS
        SELECT {COLUMNS}
               {deadline}
               {DELETION}
               {TAIL}
        FROM dsar_queue q
        LEFT JOIN dsar_requests r ON r.queue_id = q.id
        {ENTRIES}"""


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS dsar_queue_status")
    op.execute(_view(ACCESS_ANSWERED))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS dsar_queue_status")
    op.execute(_view("r.stored_at"))
