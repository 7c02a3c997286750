"""The ledger on a real database (SQLite and PostgreSQL): budget, state machine, admission."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import Base, Event, File, Request, make_engine
from dsar_scheduler.core.states import IllegalTransition, State
from dsar_scheduler.core.validation import Accepted, RawQueueRow, Rejected, validate
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.rows import EventRow, FileRow, RequestChanges, RequestRow, Transition


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    engine = make_engine(database_url)
    return Ledger(sessionmaker(engine, expire_on_commit=False), budget_limit=100)


def insert_queue(ledger: Ledger, sql_values: str) -> None:
    with ledger.sessions() as session, session.begin():
        session.execute(
            text(
                "INSERT INTO dsar_queue (amplitude_id, start_date, end_date, external_ref) "
                f"VALUES {sql_values}"
            )
        )


def test_reservations_never_exceed_the_limit_in_any_hour(ledger: Ledger, clock: FakeClock) -> None:
    granted = 0
    for _ in range(30):
        if ledger.budget.reserve("submit", 8, clock.now()):
            granted += 8
    assert granted == 96  # 12 POSTs; a 13th would make 104 > 100
    assert ledger.budget.reserve("status", 1, clock.now()) is not None  # 97
    assert ledger.budget.reserve("submit", 8, clock.now()) is None
    clock.advance(timedelta(minutes=59, seconds=59))
    assert ledger.budget.reserve("submit", 8, clock.now()) is None  # still inside the hour
    clock.advance(timedelta(seconds=2))
    assert ledger.budget.spent(clock.now()) == 0
    assert ledger.budget.reserve("submit", 8, clock.now()) is not None


def test_a_rolling_window_not_a_fixed_one(ledger: Ledger, clock: FakeClock) -> None:
    for _ in range(10):
        assert ledger.budget.reserve("status", 5, clock.now())
        clock.advance(timedelta(minutes=10))
    # 100 spent over the last 100 minutes; only the last hour's 60 counts
    assert ledger.budget.spent(clock.now()) == 25
    assert ledger.budget.headroom(clock.now()) == 75


def test_backoff_blocks_every_reservation_until_it_ends(ledger: Ledger, clock: FakeClock) -> None:
    now = clock.now()
    ledger.budget.set_backoff(now + timedelta(seconds=120), now, "429")
    ledger.budget.set_backoff(now + timedelta(seconds=30), now, "shorter one does not shorten it")
    assert ledger.budget.reserve("status", 1, now) is None
    assert ledger.budget.headroom(now) == 0
    clock.advance(119)
    assert ledger.budget.reserve("status", 1, clock.now()) is None
    clock.advance(2)
    assert ledger.budget.reserve("status", 1, clock.now()) is not None


def test_lease_is_exclusive_until_it_expires(ledger: Ledger, clock: FakeClock) -> None:
    ttl = timedelta(minutes=10)
    assert ledger.lease.acquire("a", clock.now(), ttl)
    assert not ledger.lease.acquire("b", clock.now(), ttl)
    assert ledger.lease.acquire("a", clock.now(), ttl)  # renewal
    clock.advance(timedelta(minutes=11))
    assert ledger.lease.acquire("b", clock.now(), ttl)
    ledger.lease.release("b", clock.now())
    assert ledger.lease.acquire("a", clock.now(), ttl)


def test_admission_writes_a_ledger_row_and_event_per_queue_row(
    ledger: Ledger, clock: FakeClock
) -> None:
    seen: list[Transition] = []
    ledger.on_transitions = seen.extend
    insert_queue(
        ledger,
        "(1, '2025-01-01', '2025-02-01', 'T-1'), "
        "(2, '2025-01-01', '2025-02-01', 'T-1'), "
        "(NULL, '2025-01-01', '2025-02-01', 'T-2')",
    )
    rows = ledger.queue.pending_rows(10)
    assert [r.amplitude_id for r in rows] == ["1", "2", None]
    created = ledger.queue.admit(
        [(r, validate(r, clock.now().date(), 731)) for r in rows], clock.now()
    )
    assert [c.state for c in created] == [State.QUEUED, State.REJECTED, State.REJECTED]
    assert "duplicate external_ref" in (created[1].reason or "")
    assert (created[2].reason or "").startswith("amplitude_id is missing")
    assert ledger.queue.pending_rows(10) == []
    assert [t.to_state for t in seen] == ["queued", "rejected", "rejected"]
    # a later row with the ref of a rejected row is fine; with an admitted one it is not
    insert_queue(
        ledger, "(3, '2025-01-01', '2025-02-01', 'T-2'), (4, '2025-01-01', '2025-02-01', 'T-1')"
    )
    later = ledger.queue.admit(
        [(r, validate(r, clock.now().date(), 731)) for r in ledger.queue.pending_rows(10)],
        clock.now(),
    )
    assert [c.state for c in later] == [State.QUEUED, State.REJECTED]


def test_move_is_compare_and_set_and_audited(ledger: Ledger, clock: FakeClock) -> None:
    row = RawQueueRow(0, "5", "2025-01-01", "2025-01-31", None, None)
    insert_queue(ledger, "(5, '2025-01-01', '2025-01-31', NULL)")
    row = ledger.queue.pending_rows(1)[0]
    (request,) = ledger.queue.admit([(row, Accepted(5, *_dates()))], clock.now())
    assert ledger.requests.move(request.id, {State.QUEUED}, State.SUBMITTING, "go", clock.now())
    assert (
        ledger.requests.move(request.id, {State.QUEUED}, State.SUBMITTING, "again", clock.now())
        is None
    )
    with pytest.raises(IllegalTransition):
        ledger.requests.move(request.id, {State.SUBMITTING}, State.STORED, "skip", clock.now())
    history = [(e.from_state, e.to_state, e.reason) for e in ledger.requests.events(request.id)]
    assert history == [(None, "queued", "admitted"), ("queued", "submitting", "go")]


def test_a_move_writes_its_changes_and_hands_back_a_frozen_row(
    ledger: Ledger, clock: FakeClock
) -> None:
    insert_queue(ledger, "(6, '2025-01-01', '2025-01-31', NULL)")
    row = ledger.queue.pending_rows(1)[0]
    (admitted,) = ledger.queue.admit([(row, Accepted(6, *_dates()))], clock.now())
    retry_at = clock.now() + timedelta(hours=2)
    moved = ledger.requests.move(
        admitted.id, {State.QUEUED}, State.SUBMITTING, "go", clock.now(), submissions=1
    )
    assert moved is not None and (moved.state, moved.submissions) == ("submitting", 1)
    clock.advance(60)
    ledger.requests.update(admitted.id, clock.now(), errors=2, next_action_at=retry_at)
    request = ledger.requests.get(admitted.id)
    assert request is not None
    assert (request.state, request.reason, request.submissions) == ("submitting", "go", 1)
    assert (request.errors, request.next_action_at, request.updated_at) == (
        2,
        retry_at,
        clock.now(),
    )
    with pytest.raises(FrozenInstanceError):
        request.state = State.DEAD  # type: ignore[misc]
    assert ledger.requests.get(admitted.id + 1000) is None


@pytest.mark.parametrize(
    ("row", "model"), [(RequestRow, Request), (FileRow, File), (EventRow, Event)]
)
def test_each_row_carries_every_column_of_its_table(row: type, model: type[Base]) -> None:
    assert {f.name for f in fields(row)} == set(model.__table__.columns.keys())


def test_the_changes_a_caller_may_write_are_columns_of_the_request() -> None:
    columns = set(Request.__table__.columns.keys())
    assert set(RequestChanges.__annotations__) <= columns - {"state", "reason", "id"}


def test_rejected_verdicts_are_stored_without_subject(ledger: Ledger, clock: FakeClock) -> None:
    insert_queue(ledger, "(7, '2025-01-01', '2025-01-31', NULL)")
    row = ledger.queue.pending_rows(1)[0]
    (request,) = ledger.queue.admit([(row, Rejected("nope"))], clock.now())
    assert (request.state, request.reason, request.amplitude_id) == ("rejected", "nope", None)


def test_status_view_shows_pending_and_outcomes(ledger: Ledger, clock: FakeClock) -> None:
    insert_queue(
        ledger, "(8, '2025-01-01', '2025-01-31', 'A'), (9, '2025-05-01', '2025-01-31', 'B')"
    )
    first = ledger.queue.pending_rows(1)
    ledger.queue.admit([(first[0], validate(first[0], clock.now().date(), 731))], clock.now())
    with ledger.sessions() as session:
        view = session.execute(
            text("SELECT external_ref, state, reason FROM dsar_queue_status ORDER BY queue_id")
        ).all()
    assert [tuple(v) for v in view] == [("A", "queued", None), ("B", "pending", None)]


def _dates() -> tuple[object, object]:
    from datetime import date

    return date(2025, 1, 1), date(2025, 1, 31)
