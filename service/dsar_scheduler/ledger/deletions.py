"""Deletion entries and their receipts (``dsar_deletion_entries``, ``dsar_deletion_receipts``).

Every write is one transaction: an entry's compare-and-set on its state, the receipt that
proves it (append-only) and, where it moves the request, the request's move with its audit
event. An entry's change that does not move the request still lands in the request's audit
trail (its own state stays, the reason says what the entry did), so the trail tells the whole
deletion. Entries are named in reasons by their own id, never by the subject's identifiers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from dsar_scheduler.adapters.db import (
    DeletionEntry,
    DeletionReceipt,
    Request,
    column_in,
    write_transaction,
)
from dsar_scheduler.core.deletion import SETTLED, Change, Entry, EntryRow
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger import supplements
from dsar_scheduler.ledger.events import append_event
from dsar_scheduler.ledger.requests import move_in
from dsar_scheduler.ledger.rows import Transition, TransitionListener


@dataclass(frozen=True)
class Receipt:
    """An answer kept as proof: which project, what kind, its status and its body."""

    project_id: int
    kind: str  # post | listing | cancel | verify | recheck | search
    status_code: int | None
    body: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True)
class Target:
    """A request waiting for its subject's IDs to be found."""

    request_id: int
    user_id: str | None
    amplitude_id: int | None


class Deletions:
    def __init__(self, sessions: sessionmaker[Session], notify: TransitionListener) -> None:
        self.sessions = sessions
        self._notify = notify

    def targets(self, limit: int) -> list[Target]:
        """Requests in ``resolving``, oldest first."""
        query = (
            select(Request.id, Request.user_id, Request.amplitude_id)
            .where(Request.state == State.RESOLVING.value)
            .order_by(Request.id)
            .limit(limit)
        )
        with self.sessions() as session:
            return [Target(*row) for row in session.execute(query)]

    def start_after_export(self, limit: int, now: datetime) -> int:
        """``access_and_deletion`` requests whose export is stored go on to their deletion
        (the export first, as the subject asked for both); how many moved."""
        child = aliased(Request)
        exporting = exists().where(  # a supplementary export still to store comes first
            child.parent_id == Request.id, child.state.in_(supplements.BEFORE_STORED)
        )
        query = (
            select(Request.id)
            .where(
                Request.state == State.STORED.value,
                Request.request_type == "access_and_deletion",
                ~exporting,
            )
            .order_by(Request.id)
            .limit(limit)
        )
        with self.sessions() as session:
            ids = list(session.scalars(query))
        notes = []
        reason = "export stored: the deletion starts, its subject's IDs to find in every project"
        for request_id in ids:
            with write_transaction(self.sessions) as session:
                moved = move_in(
                    session, request_id, {State.STORED}, State.RESOLVING, reason, now, {}
                )
            if moved is not None:
                notes.append(moved[1])
        self._notify(notes)
        return len(notes)

    def resolved(
        self,
        request_id: int,
        ids: Mapping[int, Mapping[int, str]],
        receipts: Sequence[Receipt],
        now: datetime,
    ) -> bool:
        """The subject's IDs (per project: Amplitude ID -> how it was found) become pending
        entries and the request moves on: to ``deleting``, or ``deleted`` when no project
        has the subject. ``False``: the request had moved on (someone else acted)."""
        count = sum(len(found) for found in ids.values())
        if count:
            new, reason = (
                State.DELETING,
                (f"resolved: {count} Amplitude ID(s) in {len(ids)} project(s) to delete"),
            )
        else:
            new, reason = State.DELETED, "resolved: no project has this subject, nothing to delete"
        with write_transaction(self.sessions) as session:
            moved = move_in(session, request_id, {State.RESOLVING}, new, reason, now, {})
            if moved is None:
                return False
            for project_id, found in sorted(ids.items()):
                for amplitude_id, source in sorted(found.items()):
                    session.add(
                        DeletionEntry(
                            request_id=request_id,
                            project_id=project_id,
                            amplitude_id=amplitude_id,
                            source=source,
                            state=Entry.PENDING.value,
                            rechecks=0,
                            updated_at=now,
                        )
                    )
            keep_receipts(session, request_id, receipts, now)
        self._notify([moved[1]])
        return True

    def hold(
        self, request_id: int, reason: str, receipts: Sequence[Receipt], now: datetime
    ) -> bool:
        """No exact match: the request waits for a person, the search answers kept."""
        with write_transaction(self.sessions) as session:
            moved = move_in(session, request_id, {State.RESOLVING}, State.REVIEW, reason, now, {})
            if moved is None:
                return False
            keep_receipts(session, request_id, receipts, now)
        self._notify([moved[1]])
        return True

    def entries(
        self, states: Iterable[Entry], project_id: int | None = None, limit: int = 10_000
    ) -> list[EntryRow]:
        query = select(
            DeletionEntry.id,
            DeletionEntry.project_id,
            DeletionEntry.amplitude_id,
            DeletionEntry.state,
            DeletionEntry.day,
            DeletionEntry.requested_on_day,
            DeletionEntry.submitted_at,
        ).where(DeletionEntry.state.in_([s.value for s in states]))
        if project_id is not None:
            query = query.where(DeletionEntry.project_id == project_id)
        with self.sessions() as session:
            rows = session.execute(query.order_by(DeletionEntry.id).limit(limit))
            return [EntryRow(r[0], r[1], r[2], Entry(r[3]), r[4], r[5], r[6]) for r in rows]

    def claim(self, entry_ids: Sequence[int], now: datetime) -> list[int]:
        """Pending entries about to be sent: ``submitting`` (compare-and-set), before the
        POST, so a crash during it leaves them to the listing, never to a second POST."""
        with write_transaction(self.sessions) as session:
            claimed = list(
                session.scalars(
                    select(DeletionEntry.id)
                    .where(
                        column_in(session, DeletionEntry.id, entry_ids),
                        DeletionEntry.state == Entry.PENDING.value,
                    )
                    .with_for_update()
                )
            )
            if claimed:
                session.execute(
                    update(DeletionEntry)
                    .where(column_in(session, DeletionEntry.id, claimed))
                    .values(state=Entry.SUBMITTING.value, submitted_at=now, updated_at=now)
                )
        return sorted(claimed)

    def unclaim(self, entry_ids: Sequence[int], now: datetime) -> None:
        """Back to pending: the POST was refused before Amplitude took anything, or the
        listing shows Amplitude never got it (``core.deletion.lost``)."""
        with write_transaction(self.sessions) as session:
            session.execute(
                update(DeletionEntry)
                .where(
                    column_in(session, DeletionEntry.id, entry_ids),
                    DeletionEntry.state == Entry.SUBMITTING.value,
                )
                .values(state=Entry.PENDING.value, submitted_at=None, updated_at=now)
            )

    def apply(self, changes: Sequence[Change], receipt: Receipt | None, now: datetime) -> list[int]:
        """Record what Amplitude's answer (``receipt``) shows for each entry; a request whose
        entries are all settled is ``deleted``. Returns the entries changed."""
        changed, notes = [], []
        with write_transaction(self.sessions) as session:
            by_request: dict[int, list[str]] = {}
            for change in changes:
                request_id = _change_entry(session, change, now)
                if request_id is not None:
                    changed.append(change.entry_id)
                    by_request.setdefault(request_id, []).append(
                        f"entry {change.entry_id}: {change.state.value} ({change.reason})"
                    )
            for request_id, lines in sorted(by_request.items()):
                if receipt is not None:
                    keep_receipts(session, request_id, [receipt], now)
                notes.extend(_settle_request(session, request_id, "; ".join(lines), now))
        self._notify(notes)
        return changed

    def note(
        self, entry_ids: Sequence[int], what: str, receipt: Receipt | None, now: datetime
    ) -> None:
        """What happened to entries without changing their state (a refused call, a failed
        verification) goes to their requests' audit trails, with the answer as a receipt."""
        notes = []
        with write_transaction(self.sessions) as session:
            request_ids = session.scalars(
                select(DeletionEntry.request_id)
                .where(column_in(session, DeletionEntry.id, entry_ids))
                .distinct()
            ).all()
            for request_id in sorted(request_ids):
                if receipt is not None:
                    keep_receipts(session, request_id, [receipt], now)
                notes.extend(note_request(session, request_id, what, now))
        self._notify(notes)

    def done(self, project_id: int, limit: int) -> list[tuple[Target, list[EntryRow]]]:
        """Entries Amplitude calls done in one project, by request with its subject: what
        to verify."""
        query = (
            select(
                Request.id,
                Request.user_id,
                Request.amplitude_id,
                DeletionEntry.id,
                DeletionEntry.amplitude_id,
                DeletionEntry.day,
                DeletionEntry.requested_on_day,
                DeletionEntry.submitted_at,
            )
            .join(Request, Request.id == DeletionEntry.request_id)
            .where(
                DeletionEntry.project_id == project_id,
                DeletionEntry.state == Entry.DONE.value,
            )
            .order_by(DeletionEntry.request_id, DeletionEntry.id)
            .limit(limit)
        )
        groups: dict[int, tuple[Target, list[EntryRow]]] = {}
        with self.sessions() as session:
            for row in session.execute(query):
                target = Target(row[0], row[1], row[2])
                entry = EntryRow(row[3], project_id, row[4], Entry.DONE, row[5], row[6], row[7])
                groups.setdefault(target.request_id, (target, []))[1].append(entry)
        return list(groups.values())

    def receipts(self, request_id: int) -> list[tuple[str, int, datetime, str, int | None]]:
        """A request's receipts, oldest first: (kind, project, when, sha256, status)."""
        query = (
            select(
                DeletionReceipt.kind,
                DeletionReceipt.project_id,
                DeletionReceipt.at,
                DeletionReceipt.sha256,
                DeletionReceipt.status_code,
            )
            .where(DeletionReceipt.request_id == request_id)
            .order_by(DeletionReceipt.id)
        )
        with self.sessions() as session:
            return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]


#: The entry states an answer may move an entry from, by the state it moves it to.
_FROM: dict[Entry, frozenset[Entry]] = {
    Entry.STAGING: frozenset({Entry.SUBMITTING, Entry.STAGING}),
    Entry.SUBMITTED: frozenset({Entry.SUBMITTING, Entry.STAGING, Entry.SUBMITTED}),
    Entry.SCRUBBED: frozenset({Entry.SUBMITTING, Entry.STAGING, Entry.SUBMITTED, Entry.SCRUBBED}),
    Entry.DONE: frozenset({Entry.SUBMITTING, Entry.STAGING, Entry.SUBMITTED, Entry.SCRUBBED}),
    Entry.INVALID: frozenset({Entry.SUBMITTING}),
    Entry.VERIFIED: frozenset({Entry.DONE}),
    Entry.CANCELLED: frozenset({Entry.PENDING, Entry.STAGING}),
}


def _change_entry(session: Session, change: Change, now: datetime) -> int | None:
    """Compare-and-set one entry; its request id, or ``None`` if it was not where the change
    expects it (already moved on: the change is stale)."""
    entry = session.scalar(
        select(DeletionEntry).where(DeletionEntry.id == change.entry_id).with_for_update()
    )
    if entry is None or Entry(entry.state) not in _FROM[change.state]:
        return None
    if Entry(entry.state) is change.state and entry.day == change.day:
        return None
    entry.state, entry.updated_at = change.state.value, now
    entry.day = change.day or entry.day
    entry.requested_on_day = change.requested_on_day or entry.requested_on_day
    entry.scrub_done_on = change.scrub_done or entry.scrub_done_on
    if change.state is Entry.DONE:
        entry.done_at = now
    if change.state is Entry.VERIFIED:
        entry.verified_at = now
    return entry.request_id


def _settle_request(
    session: Session, request_id: int, what: str, now: datetime
) -> list[Transition]:
    """The request's audit trail gets what its entries did; once every entry is settled the
    request is ``deleted``."""
    states = session.scalars(
        select(DeletionEntry.state).where(DeletionEntry.request_id == request_id)
    ).all()
    if states and all(Entry(s) in SETTLED for s in states):
        reason = f"every entry settled: {what}"
        moved = move_in(session, request_id, {State.DELETING}, State.DELETED, reason, now, {})
        return [] if moved is None else [moved[1]]
    return note_request(session, request_id, what, now)


def note_request(session: Session, request_id: int, what: str, now: datetime) -> list[Transition]:
    """An audit event that leaves the request where it is."""
    request = session.scalar(select(Request).where(Request.id == request_id).with_for_update())
    if request is None:
        return []
    note = Transition(request_id, request.state, request.state, what, None, now)
    append_event(session, request, note)
    return [note]


def keep_receipts(
    session: Session, request_id: int, receipts: Iterable[Receipt], now: datetime
) -> None:
    for receipt in receipts:
        session.add(
            DeletionReceipt(
                request_id=request_id,
                project_id=receipt.project_id,
                kind=receipt.kind,
                at=now,
                status_code=receipt.status_code,
                sha256=receipt.sha256,
                body=receipt.body.decode("utf-8", "replace"),
            )
        )
