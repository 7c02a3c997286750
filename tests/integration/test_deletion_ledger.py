"""Deletion entries on a real database (SQLite and PostgreSQL): resolution to entries, the
claim before a POST, answers applied by compare-and-set with their receipts (never
overwritten), the request's audit trail, and its end once every entry is settled."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.db import (
    DeletionEntry,
    DeletionReceipt,
    Event,
    QueueRow,
    Request,
    make_engine,
)
from dsar_scheduler.core.chain import verify_chain
from dsar_scheduler.core.deletion import Change, Entry
from dsar_scheduler.core.retention import RetentionPolicy
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.deadlines import Deadlines
from dsar_scheduler.ledger.deletion_stats import DeletionStats
from dsar_scheduler.ledger.deletions import Deletions, Receipt
from dsar_scheduler.ledger.records import Records
from dsar_scheduler.ledger.rows import Transition

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)
DAY = date(2026, 12, 17)


@pytest.fixture
def deletions(database_url: str) -> Deletions:
    sessions = sessionmaker(make_engine(database_url), expire_on_commit=False)
    seen: list[Transition] = []
    ledger = Deletions(sessions, seen.extend)
    ledger.seen = seen  # type: ignore[attr-defined]
    return ledger


def new_request(deletions: Deletions, user_id: str = "alice@example.com") -> int:
    with deletions.sessions() as session, session.begin():
        queue = QueueRow(user_id=user_id, request_type="deletion")
        session.add(queue)
        session.flush()
        request = Request(
            queue_id=queue.id,
            user_id=user_id,
            request_type="deletion",
            state=State.RESOLVING.value,
            queued_at=NOW,
            updated_at=NOW,
        )
        session.add(request)
        session.flush()
        return request.id


def state_of(deletions: Deletions, request_id: int) -> str:
    with deletions.sessions() as session:
        return str(session.scalar(select(Request.state).where(Request.id == request_id)))


def post_receipt() -> Receipt:
    return Receipt(7, "post", 200, b'{"day":"2026-12-17","status":"staging"}')


def test_resolution_makes_pending_entries_once(deletions: Deletions) -> None:
    rid = new_request(deletions)
    assert deletions.targets(10)[0].user_id == "alice@example.com"
    ids = {7: {11: "search", 12: "merged"}, 8: {31: "search"}}
    assert deletions.resolved(rid, ids, [Receipt(7, "search", 200, b"{}")], NOW)
    assert state_of(deletions, rid) == "deleting"
    pending = deletions.entries([Entry.PENDING])
    assert sorted((e.project_id, e.amplitude_id) for e in pending) == [(7, 11), (7, 12), (8, 31)]
    # a second replica resolving the same request finds it moved on: nothing added
    assert not deletions.resolved(rid, ids, [], NOW)
    assert len(deletions.entries([Entry.PENDING])) == 3
    assert deletions.targets(10) == []


def test_a_subject_nowhere_is_deleted_at_once_and_a_held_one_waits(
    deletions: Deletions,
) -> None:
    nowhere, held = new_request(deletions), new_request(deletions, "bob")
    assert deletions.resolved(nowhere, {}, [], NOW)
    assert state_of(deletions, nowhere) == "deleted"
    assert deletions.hold(held, "held for review, no exact match", [], NOW)
    assert state_of(deletions, held) == "review"


def test_claim_then_answers_by_compare_and_set(deletions: Deletions) -> None:
    rid = new_request(deletions)
    deletions.resolved(rid, {7: {11: "search", 12: "merged"}}, [], NOW)
    ids = [e.id for e in deletions.entries([Entry.PENDING])]
    assert deletions.claim(ids, NOW) == ids
    assert deletions.claim(ids, NOW) == []  # claimed once: never sent twice
    staged = [Change(i, Entry.STAGING, DAY, NOW.date(), None, "job") for i in ids]
    assert deletions.apply(staged, post_receipt(), NOW) == ids
    assert deletions.apply(staged, post_receipt(), NOW) == []  # nothing new: nothing written
    later = NOW + timedelta(days=13)
    done = [Change(i, Entry.DONE, DAY, None, DAY, "done") for i in ids]
    assert deletions.apply(done, Receipt(7, "listing", 200, b"[]"), later) == ids
    # an older answer arriving late cannot move an entry back
    assert deletions.apply(staged, post_receipt(), later) == []
    assert state_of(deletions, rid) == "deleting"
    verified = [Change(i, Entry.VERIFIED, None, None, None, "search: nomatch") for i in ids]
    assert deletions.apply(verified, Receipt(7, "verify", 200, b'{"type":"nomatch"}'), later)
    assert state_of(deletions, rid) == "deleted"
    kinds = [r[0] for r in deletions.receipts(rid)]
    assert kinds == ["post", "listing", "verify"]


def test_invalid_ids_settle_as_nothing_to_delete(deletions: Deletions) -> None:
    rid = new_request(deletions)
    deletions.resolved(rid, {7: {11: "queue"}}, [], NOW)
    ids = deletions.claim([e.id for e in deletions.entries([Entry.PENDING])], NOW)
    deletions.apply([Change(ids[0], Entry.INVALID, None, None, None, "unknown")], None, NOW)
    assert state_of(deletions, rid) == "deleted"


def test_unclaim_returns_only_unsent_entries(deletions: Deletions) -> None:
    rid = new_request(deletions)
    deletions.resolved(rid, {7: {11: "search", 12: "merged"}}, [], NOW)
    first, second = deletions.claim([e.id for e in deletions.entries([Entry.PENDING])], NOW)
    deletions.apply([Change(first, Entry.STAGING, DAY, None, None, "job")], None, NOW)
    deletions.unclaim([first, second], NOW)
    assert [e.id for e in deletions.entries([Entry.PENDING])] == [second]
    assert [e.id for e in deletions.entries([Entry.STAGING])] == [first]


def test_every_step_is_in_the_request_chained_audit_trail(deletions: Deletions) -> None:
    rid = new_request(deletions)
    deletions.resolved(rid, {7: {11: "search"}}, [], NOW)
    (entry,) = deletions.claim([e.id for e in deletions.entries([Entry.PENDING])], NOW)
    deletions.apply([Change(entry, Entry.STAGING, DAY, None, None, "job")], post_receipt(), NOW)
    deletions.apply([Change(entry, Entry.DONE, DAY, None, DAY, "done")], None, NOW)
    deletions.apply([Change(entry, Entry.VERIFIED, None, None, None, "gone")], None, NOW)
    with deletions.sessions() as session:
        reasons = session.scalars(
            select(Event.reason).where(Event.request_id == rid).order_by(Event.id)
        ).all()
        receipts = session.scalar(select(func.count()).select_from(DeletionReceipt))
    assert [r.split(":")[0] for r in reasons] == [
        "resolved",
        f"entry {entry}",
        f"entry {entry}",
        "every entry settled",
    ]
    assert receipts == 1
    # the subject's identifiers are not in the trail's reasons
    assert not any("alice" in r or "11" in r.split("(")[0] for r in reasons)


def test_the_chain_covers_deletion_events(deletions: Deletions) -> None:
    rid = new_request(deletions)
    deletions.resolved(rid, {7: {11: "search"}}, [], NOW)
    (entry,) = deletions.claim([e.id for e in deletions.entries([Entry.PENDING])], NOW)
    deletions.apply([Change(entry, Entry.STAGING, DAY, None, None, "job")], None, NOW)
    with deletions.sessions() as session:
        head = session.scalar(select(Request.chain_head).where(Request.id == rid))
        events = session.scalars(
            select(Event).where(Event.request_id == rid).order_by(Event.id)
        ).all()
    assert len(events) == 2  # resolved; entry staging
    assert verify_chain(events, head).ok


def test_a_job_ending_after_the_deadline_is_counted_until_extended(
    deletions: Deletions,
) -> None:
    rid = new_request(deletions)
    with deletions.sessions() as session, session.begin():
        request = session.get(Request, rid)
        assert request is not None
        request.due_at = NOW + timedelta(days=14)  # the 19th; the job of the 17th ends ~22nd
    deletions.resolved(rid, {7: {11: "search"}}, [], NOW)
    (entry,) = deletions.claim([e.id for e in deletions.entries([Entry.PENDING])], NOW)
    deletions.apply([Change(entry, Entry.STAGING, DAY, None, None, "job")], None, NOW)
    stats = DeletionStats(deletions.sessions)
    assert stats.read(NOW).after_deadline == 1
    with deletions.sessions() as session, session.begin():
        request = session.get(Request, rid)
        assert request is not None
        request.extended_until = NOW + timedelta(days=59)
    assert stats.read(NOW).after_deadline == 0


def test_a_deletion_record_goes_with_its_entries_and_receipts_after_retention(
    deletions: Deletions,
) -> None:
    rid, other = new_request(deletions), new_request(deletions, "bob")
    deletions.resolved(rid, {7: {11: "search"}}, [Receipt(7, "search", 200, b"{}")], NOW)
    deletions.resolved(other, {7: {12: "search"}}, [], NOW)
    entry = next(e.id for e in deletions.entries([Entry.PENDING]) if e.amplitude_id == 11)
    deletions.claim([entry], NOW)
    deletions.apply([Change(entry, Entry.INVALID, None, None, None, "unknown")], None, NOW)
    assert state_of(deletions, rid) == "deleted"
    records = Records(deletions.sessions)
    policy = RetentionPolicy.from_days(30, 730)
    assert records.removable(NOW + timedelta(days=729), policy, 10) == []
    later = NOW + timedelta(days=731)
    assert records.removable(later, policy, 10) == [rid]  # not the one still deleting
    assert records.remove([rid], policy, later) == [rid]
    with deletions.sessions() as session:
        kept = session.get(Request, rid)
        assert kept is not None and kept.user_id is None and kept.state == "deleted"
        for model in (DeletionEntry, DeletionReceipt, Event):
            count = session.scalar(
                select(func.count()).select_from(model).where(model.request_id == rid)
            )
            assert count == 0, model
        # the other request's record is untouched
        assert session.scalar(
            select(func.count()).select_from(DeletionEntry).where(DeletionEntry.request_id == other)
        )


def test_an_export_with_its_deletion_is_open_until_the_deletion_ends(
    deletions: Deletions,
) -> None:
    """Its export stored, its deletion running: still to answer, so still counted open
    (and missed once past its deadline), and its deadline may still be extended."""
    rid = new_request(deletions)
    with deletions.sessions() as session, session.begin():
        request = session.get(Request, rid)
        assert request is not None
        request.request_type, request.regime = "access_and_deletion", "ccpa"
        request.received_at, request.stored_at = NOW - timedelta(days=10), NOW
        request.due_at = NOW + timedelta(days=35)
    deletions.resolved(rid, {7: {11: "search"}}, [], NOW)
    deadlines = Deadlines(deletions.sessions)
    (ccpa,) = [c for c in deadlines.open_counts(NOW) if c.regime == "ccpa"]
    assert ccpa.open == 1 and ccpa.missed == 0
    (ccpa,) = [c for c in deadlines.open_counts(NOW + timedelta(days=36)) if c.regime == "ccpa"]
    assert ccpa.missed == 1
    assert not isinstance(deadlines.extend(rid, "the job runs late", NOW), str)
