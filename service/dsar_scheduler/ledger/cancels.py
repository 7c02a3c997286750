"""Cancelling a deletion under way (``dsar cancel ID``), as the ledger records it: each entry
Amplitude took out of its job, at once with its answer; a refusal, in the audit trail; and at
the end the entries never sent and the request itself, in one transaction that goes through
only if every entry is then cancelled or had nothing to delete (else nothing of it is
written). Not ``Deletions.apply``: that settles a request whose entries are all settled as
``deleted``, and a cancelled entry is settled."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import DeletionEntry, write_transaction
from dsar_scheduler.core.deletion import NOTHING_TO_CANCEL, Entry, EntryRow
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.deletions import Receipt, keep_receipts, note_request
from dsar_scheduler.ledger.requests import move_in
from dsar_scheduler.ledger.rows import Transition, TransitionListener


class _Moved(Exception):
    """Something moved since the cancel was planned: the transaction is rolled back."""


class Cancels:
    def __init__(self, sessions: sessionmaker[Session], notify: TransitionListener) -> None:
        self.sessions = sessions
        self._notify = notify

    def entries(self, request_id: int) -> list[EntryRow]:
        query = (
            select(
                DeletionEntry.id,
                DeletionEntry.project_id,
                DeletionEntry.amplitude_id,
                DeletionEntry.state,
                DeletionEntry.day,
                DeletionEntry.requested_on_day,
                DeletionEntry.submitted_at,
            )
            .where(DeletionEntry.request_id == request_id)
            .order_by(DeletionEntry.project_id, DeletionEntry.id)
        )
        with self.sessions() as session:
            rows = session.execute(query)
            return [EntryRow(r[0], r[1], r[2], Entry(r[3]), r[4], r[5], r[6]) for r in rows]

    def taken_out(
        self,
        request_id: int,
        entry: EntryRow,
        receipts: Sequence[Receipt],
        what: str,
        now: datetime,
    ) -> bool:
        """Amplitude no longer has the entry in its job: ``cancelled`` (compare-and-set from
        staging), the answers kept, ``what`` in the audit trail; the request stays where it
        is until the whole cancel is through. ``False``: the entry had moved (the answers
        are kept and said all the same: Amplitude's word is what happened)."""
        with write_transaction(self.sessions) as session:
            result = session.execute(
                update(DeletionEntry)
                .where(
                    DeletionEntry.id == entry.id,
                    DeletionEntry.state == Entry.STAGING.value,
                )
                .values(state=Entry.CANCELLED.value, updated_at=now)
            )
            moved = bool(getattr(result, "rowcount", 0))
            if not moved:
                what += " (the entry had moved meanwhile: check the listing)"
            keep_receipts(session, request_id, receipts, now)
            notes = note_request(session, request_id, what, now)
        self._notify(notes)
        return moved

    def refused(self, request_id: int, what: str, receipt: Receipt | None, now: datetime) -> None:
        """A cancel stopped part way: why, in the audit trail, with Amplitude's answer."""
        with write_transaction(self.sessions) as session:
            if receipt is not None:
                keep_receipts(session, request_id, [receipt], now)
            notes = note_request(session, request_id, what, now)
        self._notify(notes)

    def finish(self, request_id: int, reason: str, now: datetime) -> bool:
        """The entries never sent, then the request, ``cancelled``: only if every entry is
        then cancelled or had nothing to delete, and the request is still ``deleting``.
        ``False``: something moved (an entry was claimed for sending); nothing written."""
        try:
            with write_transaction(self.sessions) as session:
                session.execute(
                    update(DeletionEntry)
                    .where(
                        DeletionEntry.request_id == request_id,
                        DeletionEntry.state == Entry.PENDING.value,
                    )
                    .values(state=Entry.CANCELLED.value, updated_at=now)
                )
                left = session.scalar(
                    select(func.count())
                    .select_from(DeletionEntry)
                    .where(
                        DeletionEntry.request_id == request_id,
                        DeletionEntry.state.not_in([s.value for s in NOTHING_TO_CANCEL]),
                    )
                )
                if left:
                    raise _Moved
                moved = move_in(
                    session, request_id, {State.DELETING}, State.CANCELLED, reason, now, {}
                )
                if moved is None:
                    raise _Moved
                note: Transition = moved[1]
        except _Moved:
            return False
        self._notify([note])
        return True
