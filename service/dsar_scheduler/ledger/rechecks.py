"""The re-ingestion watch's part of the ledger: verified entries whose 7- or 30-day check is
due, and what a check found, written with its receipt and the request's audit line in one
transaction. The checks an entry has had (``rechecks``) move by compare-and-set, so a check
is recorded once whichever process made it; the Amplitude IDs that came back accumulate in
``reingested`` (comma-separated), never overwritten."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import DeletionEntry, Request, column_in, write_transaction
from dsar_scheduler.core.deletion import RECHECKS, Entry, checks_passed, recheck_due
from dsar_scheduler.ledger.deletions import Receipt, Target, keep_receipts, note_request
from dsar_scheduler.ledger.rows import TransitionListener

#: Entries read per group asked for: a subject has its canonical and merged IDs per project.
_ROWS_PER_GROUP = 20


@dataclass(frozen=True)
class DueEntry:
    """A verified entry whose next check has come."""

    id: int
    amplitude_id: int
    rechecks: int
    verified_at: datetime
    reingested: frozenset[int]


@dataclass(frozen=True)
class Watched:
    """One subject in one project to search again: the request's subject, every Amplitude
    ID the request deleted there (a match among them is no new user), the entries due."""

    target: Target
    project_id: int
    deleted: frozenset[int]
    due: tuple[DueEntry, ...]


class Rechecks:
    def __init__(self, sessions: sessionmaker[Session], notify: TransitionListener) -> None:
        self.sessions = sessions
        self._notify = notify

    def due(self, now: datetime, limit: int) -> list[Watched]:
        """At most ``limit`` subjects (request, project) with a check due, the longest
        verified first."""
        entry = DeletionEntry
        when = or_(
            *(
                and_(entry.rechecks == done, entry.verified_at <= now - after)
                for done, after in enumerate(RECHECKS)
            )
        )
        query = (
            select(
                entry.request_id,
                entry.project_id,
                entry.id,
                entry.amplitude_id,
                entry.rechecks,
                entry.verified_at,
                entry.reingested,
                Request.user_id,
                Request.amplitude_id,
            )
            .join(Request, Request.id == entry.request_id)
            .where(entry.state == Entry.VERIFIED.value, when)
            .order_by(entry.verified_at, entry.id)
            .limit(limit * _ROWS_PER_GROUP)
        )
        groups: dict[tuple[int, int], tuple[Target, list[DueEntry]]] = {}
        with self.sessions() as session:
            for row in session.execute(query):
                verified_at = row[5]
                if verified_at is None or not recheck_due(verified_at, row[4], now):
                    continue
                key = (row[0], row[1])
                if key not in groups and len(groups) == limit:
                    continue
                target = Target(row[0], row[7], row[8])
                due = DueEntry(row[2], row[3], row[4], verified_at, parse_ids(row[6]))
                groups.setdefault(key, (target, []))[1].append(due)
            deleted = _deleted(session, [k[0] for k in groups])
        return [
            Watched(target, project, deleted.get((request_id, project), frozenset()), tuple(due))
            for (request_id, project), (target, due) in groups.items()
        ]

    def record(
        self,
        watched: Watched,
        came_back: frozenset[int],
        what: str,
        receipt: Receipt | None,
        now: datetime,
        *,
        no_more: bool = False,
    ) -> bool:
        """The check made: each due entry's count of checks moves on (to every check whose
        time has come, or to all of them with ``no_more``), the IDs that came back are
        added, the answer kept and ``what`` written to the request's audit trail, at once.
        ``False``: another process recorded this check first; nothing written."""
        notes = []
        with write_transaction(self.sessions) as session:
            changed = 0
            for due in watched.due:
                checks = len(RECHECKS) if no_more else checks_passed(due.verified_at, now)
                result = session.execute(
                    update(DeletionEntry)
                    .where(
                        DeletionEntry.id == due.id,
                        DeletionEntry.rechecks == due.rechecks,
                        DeletionEntry.state == Entry.VERIFIED.value,
                    )
                    .values(
                        rechecks=max(checks, due.rechecks + 1),
                        reingested=format_ids(due.reingested | came_back),
                        updated_at=now,
                    )
                )
                changed += int(getattr(result, "rowcount", 0) or 0)
            if not changed:
                return False
            request_id = watched.target.request_id
            if receipt is not None:
                keep_receipts(session, request_id, [receipt], now)
            notes.extend(note_request(session, request_id, what, now))
        self._notify(notes)
        return True


def _deleted(session: Session, request_ids: Sequence[int]) -> dict[tuple[int, int], frozenset[int]]:
    """Every Amplitude ID of these requests' entries, by (request, project)."""
    if not request_ids:
        return {}
    rows = session.execute(
        select(
            DeletionEntry.request_id, DeletionEntry.project_id, DeletionEntry.amplitude_id
        ).where(column_in(session, DeletionEntry.request_id, set(request_ids)))
    )
    out: dict[tuple[int, int], set[int]] = {}
    for request_id, project_id, amplitude_id in rows:
        out.setdefault((request_id, project_id), set()).add(amplitude_id)
    return {key: frozenset(ids) for key, ids in out.items()}


def parse_ids(text: str | None) -> frozenset[int]:
    """The ``reingested`` column's ids."""
    return frozenset(int(part) for part in (text or "").split(",") if part.strip().isdigit())


def format_ids(ids: Iterable[int]) -> str | None:
    """Ids as the ``reingested`` column keeps them: sorted, comma-separated (``None``: none)."""
    return ",".join(str(i) for i in sorted(set(ids))) or None
