"""The ledger's batched budget calls and the planner's queries, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import ApiCall, make_engine
from dsar_scheduler.core.validation import Accepted
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.rows import Submitted


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    engine = make_engine(database_url)
    return Ledger(sessionmaker(engine, expire_on_commit=False), budget_limit=100)


def test_reserve_many_takes_what_fits_and_release_refunds(ledger: Ledger, clock: FakeClock) -> None:
    tickets = ledger.budget.reserve_many("submit", 8, clock.now(), list(range(1, 21)))
    assert len(tickets) == 12  # 96 of 100
    assert len({t.id for t in tickets}) == 12
    assert ledger.budget.spent(clock.now()) == 96
    assert ledger.budget.reserve_many("submit", 8, clock.now(), [1]) == []
    ledger.budget.release_calls(tickets[10:], clock.now())
    assert ledger.budget.spent(clock.now()) == 80
    assert len(ledger.budget.reserve_many("status", 1, clock.now(), [None] * 30)) == 20


def test_each_reserved_ticket_is_the_call_row_of_its_request(
    ledger: Ledger, clock: FakeClock
) -> None:
    """Tickets come back in the order of the request ids asked for, each naming the call row
    written for that request (repeated ids and calls about no request included)."""
    asked = [7, None, 3, 7, 3, 9, None, 7]
    tickets = ledger.budget.reserve_many("fetch", 1, clock.now(), asked)
    assert len(tickets) == len(asked) and len({t.id for t in tickets}) == len(asked)
    with ledger.sessions() as session:
        rows = dict(session.execute(select(ApiCall.id, ApiCall.request_id)).all())
    assert [rows[t.id] for t in tickets] == asked
    assert all(t.kind == "fetch" and t.cost == 1 and t.reserved_at == clock.now() for t in tickets)
    for request in (7, 3, None):  # a request's calls in the order they were asked for
        ids = [t.id for t, r in zip(tickets, asked, strict=True) if r == request]
        assert ids == sorted(ids)


def test_a_cost_counts_for_an_hour_from_when_the_call_finished(
    ledger: Ledger, clock: FakeClock
) -> None:
    start = clock.now()
    tickets = ledger.budget.reserve_many("status", 1, start, [None] * 50)
    # the calls took ten minutes; Amplitude charged them somewhere in between
    ledger.record_chunk(start + timedelta(minutes=10), [(t, "ok", 200) for t in tickets], [], [])
    assert ledger.budget.spent(start + timedelta(minutes=65)) == 50
    assert ledger.budget.spent(start + timedelta(minutes=70, seconds=1)) == 0
    assert ledger.budget.freed_by(start + timedelta(minutes=30), start + timedelta(minutes=60)) == 0
    assert (
        ledger.budget.freed_by(start + timedelta(minutes=30), start + timedelta(minutes=75)) == 50
    )


def test_budget_frees_at_is_when_enough_leaves_the_window(ledger: Ledger, clock: FakeClock) -> None:
    t0 = clock.now()
    ledger.budget.reserve_many("status", 1, t0, [None] * 40)
    ledger.budget.reserve_many("status", 1, t0 + timedelta(minutes=20), [None] * 60)
    now = t0 + timedelta(minutes=30)
    assert ledger.budget.frees_at(now, 0) is None  # fits now
    assert ledger.budget.frees_at(now, 30) == t0 + timedelta(hours=1)
    assert ledger.budget.frees_at(now, 50) == t0 + timedelta(minutes=80)
    assert ledger.budget.frees_at(now, 101) is None  # never, by calls leaving


def _admit(ledger: Ledger, clock: FakeClock, n: int, start: date, end: date) -> list[int]:
    with ledger.sessions() as session, session.begin():
        for k in range(n):
            session.execute(
                text(
                    "INSERT INTO dsar_queue (amplitude_id, start_date, end_date) "
                    "VALUES (:a, :s, :e)"
                ),
                {"a": 100 + k, "s": start, "e": end},
            )
    rows = ledger.queue.pending_rows(n)
    created = ledger.queue.admit(
        [(r, Accepted(int(r.amplitude_id or 0), start, end)) for r in rows], clock.now()
    )
    return [r.id for r in created]


def test_poll_candidates_and_completion_samples(ledger: Ledger, clock: FakeClock) -> None:
    ids = _admit(ledger, clock, 3, date(2024, 12, 15), date(2025, 12, 1))
    t0 = clock.now()
    assert ledger.requests.start_submits(ledger.requests.due_submits(t0, 10), t0) == set(ids)
    accepted = [Submitted(rid, 5000 + rid, t0, t0, t0 + timedelta(hours=8)) for rid in ids]
    ledger.record_chunk(t0, [], [], [], accepted)
    seen = t0 + timedelta(hours=4)
    ledger.record_chunk(seen, [], [(ids[0], 1, seen + timedelta(hours=8))], [])
    candidates = {c.id: c for c in ledger.facts.poll_candidates()}
    assert candidates[ids[0]].last_polled_at == seen
    assert candidates[ids[0]].next_action_at == seen + timedelta(hours=8)
    assert candidates[ids[1]].last_polled_at is None
    assert {c.months for c in candidates.values()} == {13}
    assert ledger.facts.poll_candidates(due_by=t0) == []
    assert [c.id for c in ledger.facts.poll_candidates(due_by=t0 + timedelta(hours=8))] == ids[1:]
    # the job finished between the poll at 4 h and the poll at 6 h that saw it done
    done_at = t0 + timedelta(hours=6)
    ledger.files.record_done(
        ids[0],
        5000 + ids[0],
        ["https://x/0", "https://x/1"],
        done_at + timedelta(days=2),
        done_at,
        ["a", "b"],
        "req-1",
    )
    (sample,) = ledger.facts.completion_samples(t0, 10).samples
    assert sample.seconds == pytest.approx(5 * 3600)
    assert sample.seen_after == pytest.approx(3600)
    assert ledger.facts.files_seen(t0, 10) == (2, 13)
    assert ledger.facts.files_seen(done_at, 10) == (0, 0)  # nothing finished after that
    assert ledger.facts.next_due(t0) == t0 + timedelta(hours=8)
    assert ledger.facts.submit_head_months(t0, 10) == []


def test_beyond_the_cap_completions_are_thinned_by_id(ledger: Ledger, clock: FakeClock) -> None:
    """Ten completions, a cap of 4: every third request by id (ceil(10 / 4)), the planner
    told so that it thins the running requests by the same ids."""
    ids = _admit(ledger, clock, 10, date(2025, 11, 1), date(2025, 12, 1))
    t0 = clock.now()
    ledger.requests.start_submits(ledger.requests.due_submits(t0, 10), t0)
    accepted = [Submitted(rid, 5000 + rid, t0, t0, t0 + timedelta(hours=8)) for rid in ids]
    ledger.record_chunk(t0, [], [], [], accepted)
    for k, rid in enumerate(ids):
        done_at = t0 + timedelta(hours=1 + k)
        ledger.files.record_done(rid, 5000 + rid, [], done_at + timedelta(days=2), done_at, [], "r")
    everything = ledger.facts.completion_samples(t0, 10)
    assert everything.every == 1 and len(everything.samples) == 10
    thinned = ledger.facts.completion_samples(t0, 4)
    assert thinned.every == 3
    kept = sorted(round(x.seconds / 3600, 1) for x in thinned.samples)
    # request k finished at 1 + k hours, seen at 1 + k; the finish halfway from submission
    assert kept == sorted((1 + ids.index(r)) / 2 for r in ids if r % 3 == 0)
