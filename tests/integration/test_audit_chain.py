"""The audit trail's hash chain as the ledger writes it, on SQLite and PostgreSQL: every
path that writes an event chains it, and editing, removing or reordering events in the
database is found at the right event."""

from __future__ import annotations

import itertools
import threading
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import Event, make_engine
from dsar_scheduler.core.chain import ChainVerdict, event_hash
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.rows import EventRow
from tests.support.harness import harness
from tests.support.lifecycle import admit, submit, whole_life

FAST = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    engine = make_engine(database_url)
    return Ledger(sessionmaker(engine, expire_on_commit=False), budget_limit=10_000)


def verdict(ledger: Ledger, request_id: int) -> ChainVerdict:
    chain = ledger.audit.chain(request_id)
    assert chain is not None
    return chain.verify()


def sql(ledger: Ledger, statement: str, **params: object) -> None:
    with ledger.sessions() as session, session.begin():
        session.execute(text(statement), params)


def event_ids(ledger: Ledger, request_id: int) -> list[int]:
    return [e.id for e in ledger.requests.events(request_id)]


def test_every_event_of_a_whole_life_is_chained(ledger: Ledger, clock: FakeClock) -> None:
    request_id = whole_life(ledger, clock)
    events = ledger.requests.events(request_id)
    assert [e.to_state for e in events] == [
        "queued",
        "submitting",
        "submitted",
        "failed",
        "cancelled",
        "queued",
        "submitting",
        "submitted",
        "done",
        "fetching",
        "stored",
    ]
    assert events[0].prev_hash is None
    for before, event in itertools.pairwise(events):
        assert event.prev_hash == before.hash
    for event in events:
        assert event.hash == event_hash(event, event.prev_hash)  # as read back: same encoding
    chain = ledger.audit.chain(request_id)
    assert chain is not None and chain.head == events[-1].hash
    assert chain.verify() == ChainVerdict(True, 11, 0)


def test_a_rejected_row_and_a_withdrawn_manifest_are_chained(
    ledger: Ledger, clock: FakeClock
) -> None:
    rejected, kept = admit(ledger, clock, None, 502)
    assert ledger.requests.get(rejected).state == State.REJECTED  # type: ignore[union-attr]
    submit(ledger, clock, kept, 7100)
    ledger.requests.move(kept, {State.SUBMITTED}, State.CANCELLED, "cancelled", clock.now())
    ledger.files.store_withdrawn(
        kept, "manifest.json withdrawn: the request is cancelled", clock.now()
    )
    assert verdict(ledger, rejected) == ChainVerdict(True, 1, 0)
    assert verdict(ledger, kept) == ChainVerdict(True, 5, 0)
    assert ledger.requests.events(kept)[-1].to_state == "cancelled"


def test_many_requests_admitted_at_once_each_start_a_chain(
    ledger: Ledger, clock: FakeClock
) -> None:
    ids = admit(ledger, clock, *range(600, 640))
    chains = ledger.audit.chains(ids)
    assert sorted(chains) == sorted(ids)
    assert all(c.verify() == ChainVerdict(True, 1, 0) for c in chains.values())
    assert len({c.head for c in chains.values()}) == len(ids)


EDITS: dict[str, object] = {
    "at": datetime(2026, 1, 1, tzinfo=UTC),
    "from_state": "dead",
    "to_state": "dead",
    "reason": "nothing to see here",
    "remote_request_id": 9999,
    "prev_hash": "0" * 64,
    "hash": "f" * 64,
}


def set_event(ledger: Ledger, event_id: int, **values: object) -> None:
    with ledger.sessions() as session, session.begin():
        session.execute(update(Event).where(Event.id == event_id).values(**values))


def restore(ledger: Ledger, events: list[EventRow]) -> None:
    """Every event back as it was read (ids kept)."""
    for event in events:
        values = {f.name: getattr(event, f.name) for f in fields(EventRow) if f.name != "id"}
        set_event(ledger, event.id, **values)


@pytest.mark.parametrize("field", sorted(EDITS))
def test_editing_any_field_of_any_event_is_found_there(
    ledger: Ledger, clock: FakeClock, field: str
) -> None:
    request_id = whole_life(ledger, clock)
    events = ledger.requests.events(request_id)
    for position, event in enumerate(events):
        set_event(ledger, event.id, **{field: EDITS[field]})
        found = verdict(ledger, request_id)
        assert (found.ok, found.problem, found.position, found.event_id) == (
            False,
            "edited",
            position,
            event.id,
        ), field
        restore(ledger, events)
        assert verdict(ledger, request_id).ok


def test_an_event_moved_to_another_request_breaks_both_chains(
    ledger: Ledger, clock: FakeClock
) -> None:
    ours, theirs = whole_life(ledger, clock, 501), whole_life(ledger, clock, 502)
    moved = ledger.requests.events(ours)[4]
    set_event(ledger, moved.id, request_id=theirs)
    assert (verdict(ledger, ours).problem, verdict(ledger, ours).position) == ("removed", 4)
    found = verdict(ledger, theirs)
    assert (found.ok, found.problem, found.event_id) == (False, "edited", moved.id)


@pytest.mark.parametrize("position", [1, 5, 9])
def test_deleting_a_middle_event_is_found_at_the_next(
    ledger: Ledger, clock: FakeClock, position: int
) -> None:
    request_id = whole_life(ledger, clock)
    events = ledger.requests.events(request_id)
    delete_event(ledger, events[position].id)
    found = verdict(ledger, request_id)
    assert (found.ok, found.problem, found.position, found.event_id) == (
        False,
        "removed",
        position,
        events[position + 1].id,
    )


def test_deleting_the_first_event_is_found(ledger: Ledger, clock: FakeClock) -> None:
    request_id = whole_life(ledger, clock)
    events = ledger.requests.events(request_id)
    delete_event(ledger, events[0].id)
    found = verdict(ledger, request_id)
    assert (found.problem, found.position, found.event_id) == ("removed", 0, events[1].id)


def test_deleting_the_last_event_is_found_by_the_head(ledger: Ledger, clock: FakeClock) -> None:
    request_id = whole_life(ledger, clock)
    events = ledger.requests.events(request_id)
    delete_event(ledger, events[-1].id)
    found = verdict(ledger, request_id)
    assert (found.ok, found.problem, found.position, found.event_id) == (
        False,
        "removed",
        len(events) - 1,
        None,
    )
    assert "the last event(s) were removed" in found.describe()


def test_reordering_two_events_is_found(ledger: Ledger, clock: FakeClock) -> None:
    """Two rows' contents swapped (the order is the ids'): the first out of place is named."""
    request_id = whole_life(ledger, clock)
    events = ledger.requests.events(request_id)
    first, second = events[3], events[4]
    content = [f.name for f in fields(EventRow) if f.name != "id"]
    set_event(ledger, first.id, **{name: getattr(second, name) for name in content})
    set_event(ledger, second.id, **{name: getattr(first, name) for name in content})
    found = verdict(ledger, request_id)
    assert (found.ok, found.problem, found.position, found.event_id) == (
        False,
        "reordered",
        3,
        first.id,
    )


def test_a_cleared_head_is_found(ledger: Ledger, clock: FakeClock) -> None:
    request_id = whole_life(ledger, clock)
    sql(ledger, "UPDATE dsar_requests SET chain_head = NULL WHERE id = :i", i=request_id)
    assert verdict(ledger, request_id).problem == "head missing"


def delete_event(ledger: Ledger, event_id: int) -> None:
    sql(ledger, "DELETE FROM dsar_request_events WHERE id = :i", i=event_id)


def test_a_request_from_before_the_chain_starts_its_chain_at_its_next_event(
    ledger: Ledger, clock: FakeClock
) -> None:
    """Events written before this version have no hash and the request no head: the chain
    starts at the first event written now, and the legacy ones are named, not failed."""
    (request_id,) = admit(ledger, clock, 503)
    sql(ledger, "UPDATE dsar_request_events SET prev_hash = NULL, hash = NULL")
    sql(ledger, "UPDATE dsar_requests SET chain_head = NULL")
    assert verdict(ledger, request_id) == ChainVerdict(True, 1, 1)
    submit(ledger, clock, request_id, 7200)
    found = verdict(ledger, request_id)
    assert found == ChainVerdict(True, 3, 1)
    assert "1 unchained legacy event(s) before the chain starts" in found.describe()
    assert ledger.requests.events(request_id)[1].prev_hash is None


def test_replicas_moving_the_same_request_at_once_never_fork_its_chain(
    database_url: str, clock: FakeClock
) -> None:
    """Several processes' worth of writers (threads, each with its own connections) race
    cancels, retries and submissions on the same few requests: every event still follows
    the one before it, because each reads the head under the request's lock."""
    ledger = Ledger(sessionmaker(make_engine(database_url), expire_on_commit=False), 10**6)
    ids = admit(ledger, clock, 601, 602, 603)
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        try:
            for i in range(25):
                request_id = ids[(seed + i) % len(ids)]
                ledger.requests.move(
                    request_id, {State.QUEUED}, State.CANCELLED, f"cancel {seed}", clock.now()
                )
                ledger.requests.move(
                    request_id, {State.CANCELLED}, State.QUEUED, f"retry {seed}", clock.now()
                )
                rows = [r for r in [ledger.requests.get(request_id)] if r is not None]
                ledger.requests.start_submits(rows, clock.now())
                ledger.requests.move(
                    request_id, {State.SUBMITTING}, State.QUEUED, f"back {seed}", clock.now()
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    chains = ledger.audit.chains(ids)
    assert all(chain.verify().ok for chain in chains.values()), [
        c.verify().describe() for c in chains.values()
    ]
    assert sum(len(c.events) for c in chains.values()) > 3 * 10


def test_a_whole_life_through_the_service_verifies(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """The real tick against the emulator, with a torn download and a failed job."""
    options = {**FAST, "fail_rate": 0.5}
    with harness(database_url, tmp_path, clock, emulator_options=options) as h:
        for subject in (101, 102, 103):
            h.enqueue(subject)
        h.enqueue(104, "2025-03-01", "2025-01-01")  # rejected: the range ends before it starts
        h.run_until(h.all_final)
        chains = h.app.ledger.audit.chains(range(1, 5))
    assert len(chains) == 4
    for chain in chains.values():
        assert chain.verify().ok, chain.verify().describe()
        assert all(e.hash is not None for e in chain.events)
