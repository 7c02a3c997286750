"""Retention in the ledger: which requests' files are due for purging, the purge's steps (each
a compare-and-set with its audit event), ``dsar delivered``, and the purge backlog the metrics
read.

A purge cannot be one atomic step (the files are in storage, the record in the database), so
it is a sequence a process killed anywhere resumes. ``begin`` commits a note holding the
manifest's sha256 (read before anything is removed) together with the move to ``purging`` (a
stored access request) or an audit entry saying the purge began (a request in another state,
which keeps it); each file is then deleted from storage and only after that marked purged;
``finish`` moves the request to ``purged`` (or writes the closing audit entry) and drops the
note, in one transaction. A file deleted but not yet marked is deleted again on resume: a
delete of what is already gone succeeds. The note is what ``under_way`` finds next tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from dsar_scheduler.adapters.db import File, Request, ServiceState, write_transaction
from dsar_scheduler.core.retention import (
    ACCESS,
    RetentionPolicy,
    delivered_refusal,
    is_purge_due,
    purge_due_at,
    purge_progress,
    purge_started_reason,
    purge_why,
    purged_reason,
)
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.events import append_note
from dsar_scheduler.ledger.family import stored_undelivered, unanswered
from dsar_scheduler.ledger.purge_targets import (
    NOT_LEFTOVER,
    STORED_ACCESS,
    PurgeFile,
    PurgeTarget,
    leftover,
    note_key,
    noted,
    stored_due,
    targets,
    unpurged,
)
from dsar_scheduler.ledger.requests import move_in
from dsar_scheduler.ledger.rows import Transition, TransitionListener

BACKLOG_KEY = "purge-backlog"


@dataclass(frozen=True)
class Delivered:
    """A request marked delivered: as it is now, the supplements delivered with it, and
    those still to be stored (each to be marked when it is handed over)."""

    target: PurgeTarget
    supplements: list[int]
    pending: list[int]


#: How many of the oldest overdue requests the backlog looks at for the oldest due time.
_OLDEST_SAMPLE = 100


@dataclass(frozen=True)
class PurgeBacklog:
    """Requests past their retention and not yet purged, as the last purge check saw them."""

    requests: int
    oldest_due: datetime | None
    checked_at: datetime | None


class Retention:
    """The purge's reads and writes, ``dsar delivered``, and the recorded backlog."""

    def __init__(self, sessions: sessionmaker[Session], notify: TransitionListener) -> None:
        self.sessions = sessions
        self._notify = notify

    # -- what is due ----------------------------------------------------------------------

    def under_way(self, limit: int) -> list[PurgeTarget]:
        """Requests with a purge begun and not finished (a stopped tick, a killed process,
        the per-tick bound), oldest first."""
        with self.sessions() as session:
            ids = noted(session)[:limit]
            return [replace(t, begun=True) for t in targets(session, Request.id.in_(ids))]

    def due(self, now: datetime, policy: RetentionPolicy, limit: int) -> list[PurgeTarget]:
        """Stored access requests whose retention is over, oldest stored first."""
        when = stored_due(now, policy)
        if when is None:
            return []
        with self.sessions() as session:
            return targets(session, STORED_ACCESS, when, limit=limit)

    def leftovers(self, now: datetime, policy: RetentionPolicy, limit: int) -> list[PurgeTarget]:
        """Requests in any other state (cancelled or dead with files kept, an export whose
        deletion followed, a job superseded) holding stored files past their retention."""
        cutoff = policy.result_cutoff(now)
        if cutoff is None:
            return []
        with self.sessions() as session:
            return targets(session, *leftover(cutoff), limit=limit)

    def unpurged_files(
        self, target: PurgeTarget, now: datetime, policy: RetentionPolicy
    ) -> list[PurgeFile]:
        """The files the purge of ``target`` removes: all of a stored request's; of another,
        those stored before the retention cutoff."""
        cutoff = None if target.moves else policy.result_cutoff(now)
        with self.sessions() as session:
            rows = session.execute(
                select(File.id, File.name, File.bytes)
                .where(File.request_id == target.id, unpurged(cutoff))
                .order_by(File.id)
            ).all()
        return [PurgeFile(*row) for row in rows]

    # -- the purge's steps ----------------------------------------------------------------

    def begin(
        self,
        target: PurgeTarget,
        policy: RetentionPolicy,
        now: datetime,
        manifest_sha256: str | None,
    ) -> bool:
        """Start the purge, if the request is still as read and still due: the note (with
        the manifest's digest) and the move to ``purging`` or the audit entry, in one
        transaction. ``True`` if the purge is now under way (begun here or before)."""
        notes: list[Transition] = []
        with write_transaction(self.sessions) as session:
            request = _locked(session, target.id)
            if request is None:
                return False
            if session.get(ServiceState, note_key(target.id)) is not None:
                return True
            if request.state != target.state or not _still_due(session, request, policy, now):
                return False
            files = len(_file_ids(session, target.id, _cutoff(target, policy, now)))
            reason = purge_started_reason(
                _why(target, request, policy, now), files, manifest_sha256
            )
            if target.moves:
                moved = move_in(session, target.id, {State.STORED}, State.PURGING, reason, now, {})
                if moved is None:
                    return False
                notes.append(moved[1])
            else:
                append_note(session, request, reason, now)
            session.add(
                ServiceState(
                    key=note_key(target.id), value=manifest_sha256 or "", until=now, updated_at=now
                )
            )
        self._notify(notes)
        return True

    def file_purged(self, request_id: int, file_id: int, now: datetime) -> None:
        """A file's bytes are gone from storage: its row keeps name, bytes and sha256, with
        when. A request in ``purging`` shows how far its purge got."""
        with write_transaction(self.sessions) as session:
            session.execute(
                update(File)
                .where(File.id == file_id, File.purged_at.is_(None))
                .values(purged_at=now)
            )
            request = _locked(session, request_id)
            if request is None or request.state != State.PURGING:
                return
            total, removed = session.execute(
                select(func.count(), func.count(File.purged_at)).where(
                    File.request_id == request_id, File.state == "stored"
                )
            ).one()
            request.reason, request.updated_at = purge_progress(int(removed), int(total)), now

    def finish(
        self, target: PurgeTarget, policy: RetentionPolicy, now: datetime, whole_folder: bool
    ) -> bool:
        """Close the purge once no file of it is left: ``purging`` to ``purged`` (or the
        closing audit entry), ``purged_at`` set and the note dropped, in one transaction.
        ``False`` if files are left or another process finished it."""
        notes: list[Transition] = []
        with write_transaction(self.sessions) as session:
            request = _locked(session, target.id)
            note = session.get(ServiceState, note_key(target.id))
            if request is None or note is None:
                return False
            if _file_ids(session, target.id, _cutoff(target, policy, now)):
                return False
            files, size = _removed(session, request, note, target.moves)
            reason = purged_reason(files, size, note.value or None, whole_folder)
            if target.moves:
                moved = move_in(session, target.id, {State.PURGING}, State.PURGED, reason, now, {})
                if moved is None:
                    return False
                notes.append(moved[1])
            else:
                append_note(session, request, reason, now)
            request.purged_at = now
            session.delete(note)
        self._notify(notes)
        return True

    # -- dsar delivered -------------------------------------------------------------------

    def mark_delivered(self, request_id: int, note: str | None, now: datetime) -> Delivered | str:
        """Record that the export was handed to the consumer (compare-and-set on a stored,
        undelivered request, with its audit entry), its stored supplements with it; or why
        not."""
        with write_transaction(self.sessions) as session:
            request = _locked(session, request_id)
            if request is None:
                return f"no request {request_id}"
            refusal = delivered_refusal(request.state, request.delivered_at)
            if refusal is not None:
                return f"request {request_id} cannot be marked delivered: {refusal}"
            by = f"by an operator ({note})" if note else "by an operator"
            request.delivered_at = now
            append_note(session, request, f"delivered to the consumer, marked {by}", now)
            stored = stored_undelivered(session, request_id)
            for child in stored:
                child.delivered_at = now
                append_note(
                    session,
                    child,
                    f"delivered to the consumer with request {request_id}, marked {by}",
                    now,
                )
            pending = unanswered(session, request_id)
            session.flush()
            [target] = targets(session, Request.id == request_id)
        return Delivered(target, [c.id for c in stored], [c.id for c in pending])

    # -- the backlog the metrics read -----------------------------------------------------

    def record_backlog(self, now: datetime, policy: RetentionPolicy) -> PurgeBacklog:
        """Count the requests past their retention not yet purged, find the oldest due time,
        and record both for the metrics (every replica reads the same record)."""
        with write_transaction(self.sessions) as session:
            backlog = _backlog(session, now, policy)
            row = session.get(ServiceState, BACKLOG_KEY)
            if row is None:
                row = ServiceState(key=BACKLOG_KEY)
                session.add(row)
            row.value, row.until, row.updated_at = str(backlog.requests), backlog.oldest_due, now
        return backlog

    def backlog(self) -> PurgeBacklog:
        """The backlog as last recorded (none recorded: nothing known to be overdue)."""
        with self.sessions() as session:
            row = session.get(ServiceState, BACKLOG_KEY)
        if row is None or not (row.value or "").isdigit():
            return PurgeBacklog(0, None, None)
        return PurgeBacklog(int(row.value or 0), row.until, row.updated_at)


def _locked(session: Session, request_id: int) -> Request | None:
    return session.scalar(select(Request).where(Request.id == request_id).with_for_update())


def _file_ids(session: Session, request_id: int, cutoff: datetime | None) -> Sequence[int]:
    return session.scalars(
        select(File.id).where(File.request_id == request_id, unpurged(cutoff))
    ).all()


def _cutoff(target: PurgeTarget, policy: RetentionPolicy, now: datetime) -> datetime | None:
    return None if target.moves else policy.result_cutoff(now)


def _still_due(session: Session, request: Request, policy: RetentionPolicy, now: datetime) -> bool:
    """Checked again under the row lock: never a request still inside its retention."""
    if request.state == State.STORED:
        deadline = request.extended_until or request.due_at
        return request.request_type == ACCESS and is_purge_due(
            policy, request.stored_at, request.delivered_at, deadline, now
        )
    if request.state in NOT_LEFTOVER:
        return False
    return bool(_file_ids(session, request.id, policy.result_cutoff(now)))


def _why(target: PurgeTarget, request: Request, policy: RetentionPolicy, now: datetime) -> str:
    if target.moves:
        return purge_why(policy, request.stored_at, request.delivered_at)
    cutoff = policy.result_cutoff(now)
    assert cutoff is not None  # a leftover is due only when files age out
    return (
        f"the request is {request.state}; its files stored before {cutoff:%Y-%m-%d %H:%M:%S} "
        "UTC are past their retention (DSAR_RESULT_RETENTION_DAYS)"
    )


def _removed(
    session: Session, request: Request, note: ServiceState, moves: bool
) -> tuple[int, int]:
    """What the purge removed: a stored request's export (the files its manifest listed);
    for another, the files removed since the purge began."""
    if moves:
        where = File.remote_request_id == request.remote_request_id
    else:
        where = File.purged_at >= note.until
    count, size = session.execute(
        select(func.count(), func.coalesce(func.sum(File.bytes), 0)).where(
            File.request_id == request.id, File.state == "stored", where
        )
    ).one()
    return int(count), int(size or 0)


def _backlog(session: Session, now: datetime, policy: RetentionPolicy) -> PurgeBacklog:
    due_now = stored_due(now, policy)
    overdue: list[ColumnElement[bool]] = [Request.state == State.PURGING]
    if due_now is not None:
        overdue.append(and_(STORED_ACCESS, due_now))
    where = or_(*overdue)
    count = int(session.scalar(select(func.count()).select_from(Request).where(where)) or 0)
    oldest = [
        purge_due_at(policy, t.stored_at, t.delivered_at, t.deadline)
        for t in targets(session, where, limit=_OLDEST_SAMPLE)
    ]
    cutoff = policy.result_cutoff(now)
    leftovers = 0
    if cutoff is not None:
        leftovers = int(
            session.scalar(select(func.count()).select_from(Request).where(*leftover(cutoff))) or 0
        )
    due = [when for when in oldest if when is not None]
    return PurgeBacklog(count + leftovers, min(due) if due else None, now)
