"""The ledger parts behind the re-ingestion watch, a deletion's cancel and the deletion gauges,
on SQLite and PostgreSQL: checks due at 7 and 30 days, bounded, each recorded once by
compare-and-set; a cancel's last step refused whole when an entry was sent meanwhile; the
counts the gauges show."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.db import DeletionEntry, Event, QueueRow, Request, make_engine
from dsar_scheduler.core.deletion import Change, Entry
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.deletions import Receipt

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)
DAY = date(2026, 12, 17)
P = 7


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    return Ledger(sessionmaker(make_engine(database_url), expire_on_commit=False), 1000)


def new_request(
    ledger: Ledger, user_id: str | None = "alice", state: State = State.RESOLVING
) -> int:
    with ledger.sessions() as session, session.begin():
        queue = QueueRow(user_id=user_id, amplitude_id=None, request_type="deletion")
        session.add(queue)
        session.flush()
        request = Request(
            queue_id=queue.id,
            user_id=user_id,
            request_type="deletion",
            state=state.value,
            queued_at=NOW,
            updated_at=NOW,
        )
        session.add(request)
        session.flush()
        return request.id


def entry_ids(ledger: Ledger, request_id: int) -> list[int]:
    with ledger.sessions() as session:
        query = select(DeletionEntry.id).where(DeletionEntry.request_id == request_id)
        return sorted(session.scalars(query))


def deleted(ledger: Ledger, ids: dict[int, dict[int, str]], verified: datetime) -> int:
    """A request whose entries went all the way to verified at ``verified``."""
    rid = new_request(ledger)
    assert ledger.deletions.resolved(rid, ids, [], verified)
    entries = entry_ids(ledger, rid)
    ledger.deletions.claim(entries, verified)
    for state in (Entry.STAGING, Entry.DONE, Entry.VERIFIED):
        changes = [Change(e, state, DAY, DAY, None, state.value) for e in entries]
        ledger.deletions.apply(changes, None, verified)
    return rid


def events(ledger: Ledger, request_id: int) -> list[str]:
    with ledger.sessions() as session:
        query = select(Event.reason).where(Event.request_id == request_id).order_by(Event.id)
        return list(session.scalars(query))


def test_checks_fall_due_at_7_and_30_days_bounded_and_recorded_once(ledger: Ledger) -> None:
    early = deleted(ledger, {P: {11: "search", 12: "merged"}, 8: {31: "search"}}, NOW)
    late = deleted(ledger, {P: {41: "search"}}, NOW + timedelta(days=1))
    assert ledger.rechecks.due(NOW + timedelta(days=6), 10) == []
    due = ledger.rechecks.due(NOW + timedelta(days=7), 10)
    # one subject per (request, project), the longest verified first; deleted IDs with it
    assert [(w.target.request_id, w.project_id) for w in due] == [(early, P), (early, 8)]
    assert due[0].deleted == {11, 12} and len(due[0].due) == 2
    assert len(ledger.rechecks.due(NOW + timedelta(days=8), 2)) == 2  # bounded
    receipt = Receipt(P, "recheck", 200, b'{"type":"nomatch","matches":[]}')
    at = NOW + timedelta(days=7)
    assert ledger.rechecks.record(due[0], frozenset({99}), "came back", receipt, at)
    assert not ledger.rechecks.record(due[0], frozenset({98}), "again", receipt, at)  # CAS
    assert [k for k, *_ in ledger.deletions.receipts(early)] == ["recheck"]
    assert events(ledger, early).count("came back") == 1
    later = ledger.rechecks.due(NOW + timedelta(days=29), 10)
    assert [(w.target.request_id, w.project_id) for w in later] == [(early, 8), (late, P)]
    # the 30-day check; and a service stopped past both days records both at once
    both = ledger.rechecks.due(NOW + timedelta(days=31), 10)
    again = next(w for w in both if w.project_id == P and w.target.request_id == early)
    assert all(e.rechecks == 1 and e.reingested == {99} for e in again.due)
    skipped = next(w for w in both if w.project_id == 8)
    assert ledger.rechecks.record(skipped, frozenset(), "clear", None, NOW + timedelta(days=31))
    assert ledger.rechecks.record(again, frozenset({77}), "back", None, NOW + timedelta(days=31))
    with ledger.sessions() as session:
        rows = session.execute(
            select(DeletionEntry.project_id, DeletionEntry.rechecks, DeletionEntry.reingested)
            .where(DeletionEntry.request_id == early)
            .order_by(DeletionEntry.id)
        )
        assert list(rows) == [(P, 2, "77,99"), (P, 2, "77,99"), (8, 2, None)]
    remaining = ledger.rechecks.due(NOW + timedelta(days=400), 10)
    assert [(w.target.request_id, w.project_id) for w in remaining] == [(late, P)]


def test_a_cancel_is_not_finished_once_an_entry_was_claimed_for_sending(ledger: Ledger) -> None:
    rid = new_request(ledger)
    assert ledger.deletions.resolved(rid, {P: {11: "search", 12: "merged"}}, [], NOW)
    _first, second = entry_ids(ledger, rid)
    assert ledger.deletions.claim([second], NOW) == [second]  # a tick got there first
    assert not ledger.cancels.finish(rid, "cancelled by an operator", NOW)
    assert [e.state for e in ledger.cancels.entries(rid)] == [Entry.PENDING, Entry.SUBMITTING]
    assert ledger.requests.get(rid).state == "deleting"  # type: ignore[union-attr]
    ledger.deletions.unclaim([second], NOW)
    assert ledger.cancels.finish(rid, "cancelled by an operator", NOW)
    assert {e.state for e in ledger.cancels.entries(rid)} == {Entry.CANCELLED}
    assert ledger.requests.get(rid).state == "cancelled"  # type: ignore[union-attr]
    assert events(ledger, rid)[-1] == "cancelled by an operator"


def test_the_gauges_counts(ledger: Ledger) -> None:
    now = NOW + timedelta(days=40)
    sent_long_ago = new_request(ledger)
    assert ledger.deletions.resolved(sent_long_ago, {P: {11: "search", 12: "merged"}}, [], NOW)
    ledger.deletions.claim(entry_ids(ledger, sent_long_ago), NOW)  # sent 40 days ago
    fresh = new_request(ledger)
    assert ledger.deletions.resolved(fresh, {P: {13: "search"}}, [], now)
    ledger.deletions.claim(entry_ids(ledger, fresh), now - timedelta(days=29))
    back = deleted(ledger, {P: {21: "search"}}, NOW)
    done = new_request(ledger)
    assert ledger.deletions.resolved(done, {8: {31: "search"}}, [], NOW)
    entry = entry_ids(ledger, done)
    ledger.deletions.claim(entry, NOW)
    ledger.deletions.apply([Change(entry[0], Entry.DONE, DAY, DAY, None, "done")], None, now)
    watched = ledger.rechecks.due(now, 10)
    assert ledger.rechecks.record(watched[0], frozenset({5}), "back", None, now)
    held = new_request(ledger, "bob", State.REVIEW)
    with ledger.sessions() as session, session.begin():
        session.execute(
            update(Request).where(Request.id == held).values(updated_at=now - timedelta(days=4))
        )
    for api, status in (("search", 200), ("search", 429), ("deletion", 429)):
        call = ledger.privacy_calls.reserve(api, P, now - timedelta(minutes=5))
        assert call is not None
        ledger.privacy_calls.finish(call, status, now - timedelta(minutes=5))
    old = ledger.privacy_calls.reserve("search", 8, now - timedelta(hours=2))
    assert old is not None

    counts = ledger.deletion_stats.read(now)
    assert counts.entries == {"submitting": 3, "verified": 1, "done": 1}
    assert (counts.overdue_entries, counts.overdue_requests) == (2, 1)
    assert counts.reingested_subjects == 1 and back in {w.target.request_id for w in watched}
    assert counts.oldest_review == now - timedelta(days=4)
    assert counts.oldest_unverified == now
    assert counts.search_calls == {P: 2}  # the one two hours old has left the window
    assert counts.rate_limited == {"search": 1, "deletion": 1}
