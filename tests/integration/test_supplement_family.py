"""An export by user ID and its supplementary requests answer one subject together
(``ledger.family``): the operator's actions on the parent reach them, each with its own
audit entry, on SQLite and PostgreSQL. Extending the parent's deadline extends theirs (the
parent's answer waits for them); marking it delivered marks the stored ones and names the
rest; cancelling it names them; ``dsar status`` lists them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import Request
from dsar_scheduler.core.states import State
from dsar_scheduler.runtime.operations import cancel
from dsar_scheduler.runtime.retention_cli import mark_delivered
from dsar_scheduler.runtime.status import describe_request
from tests.support.deletion_service import (
    all_requests,
    missing_merged,
    pick_clear,
    tick_until_all_stored,
)
from tests.support.harness import Harness
from tests.support.privacy_emulator import START


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def h(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    """The service with the emulator's user exports leaving merged IDs out: every export by
    user ID misses some, and gets supplements."""
    with missing_merged(database_url, tmp_path, clock) as harness:
        yield harness


def stored_with_supplements_under_way(h: Harness) -> tuple[Request, list[Request]]:
    """Tick until the parent is stored and its supplements made, none stored yet."""
    subject = pick_clear(h, merged=True)
    h.enqueue(None, "2025-01-01", "2025-01-31", user_id=subject.user_id)
    for _ in range(72):
        h.tick()
        parent, *children = all_requests(h)
        if parent.state == State.STORED and children:
            assert all(c.stored_at is None for c in children)
            return parent, children
        h.clock.advance(timedelta(hours=1))
    raise AssertionError([(r.id, r.state) for r in all_requests(h)])


def reasons(h: Harness, request_id: int) -> list[str]:
    return [e.reason for e in h.app.ledger.requests.events(request_id)]


def test_extending_a_stored_parent_extends_its_supplements(h: Harness, clock: FakeClock) -> None:
    parent, children = stored_with_supplements_under_way(h)
    done = h.app.ledger.deadlines.extend(parent.id, "the subject sent more IDs", clock.now())
    assert not isinstance(done, str), done
    assert done.supplements == [c.id for c in children]
    parent, *children = all_requests(h)
    assert {r.extended_until for r in (parent, *children)} == {done.until}
    assert parent.extended_until is not None and parent.due_at is not None
    assert parent.extended_until > parent.due_at
    for child in children:
        assert f"(with request {parent.id})" in reasons(h, child.id)[-1]
    # once is all the regime allows, for the family as for one request
    again = h.app.ledger.deadlines.extend(parent.id, "again", clock.now())
    assert isinstance(again, str) and "already" in again


def test_a_closed_parent_is_not_extended_for_its_supplements(h: Harness, clock: FakeClock) -> None:
    """Only a stored parent is extended for the supplements it still owes: one cancelled
    (here written directly, as a cancel mid-fetch would leave it) is refused, and so are
    they with it."""
    parent, _ = stored_with_supplements_under_way(h)
    with h.app.sessions() as session, session.begin():
        row = session.get(Request, parent.id)
        assert row is not None
        row.state = State.CANCELLED.value
    refused = h.app.ledger.deadlines.extend(parent.id, "more time", clock.now())
    assert refused == f"request {parent.id} was cancelled"
    assert all(r.extended_until is None for r in all_requests(h))


def test_a_stored_parent_without_supplements_owed_is_answered(h: Harness, clock: FakeClock) -> None:
    parent, _ = stored_with_supplements_under_way(h)
    tick_until_all_stored(h)
    refused = h.app.ledger.deadlines.extend(parent.id, "late", clock.now())
    assert refused == f"request {parent.id} is already stored (answered)"


def test_delivering_the_parent_delivers_its_stored_supplements_and_names_the_rest(
    h: Harness, clock: FakeClock
) -> None:
    parent, children = stored_with_supplements_under_way(h)
    settings = h.app.settings
    ok, said = mark_delivered(h.app.ledger, settings, parent.id, "portal", clock.now())
    pending = ", ".join(str(c.id) for c in children)
    assert ok and f"Supplementary request(s) {pending}" in said
    assert all(c.delivered_at is None for c in all_requests(h)[1:])
    tick_until_all_stored(h)
    # a second parent, delivered once its supplements are stored: they go with it
    other, more = _second_family(h)
    ok, said = mark_delivered(h.app.ledger, settings, other.id, None, h.clock.now())
    assert ok and f"with its supplementary request(s) {more}" in said
    with h.app.sessions() as session:
        rows = session.scalars(select(Request).where(Request.parent_id == other.id)).all()
    assert rows and all(r.delivered_at == h.clock.now() for r in rows)
    for row in rows:
        assert f"with request {other.id}" in reasons(h, row.id)[-1]


def _second_family(h: Harness) -> tuple[Request, str]:
    subject = pick_clear(h, merged=True)
    h.enqueue(None, "2025-02-01", "2025-02-28", user_id=subject.user_id)
    tick_until_all_stored(h)
    other = max((r for r in all_requests(h) if r.parent_id is None), key=lambda r: r.id)
    ids = ", ".join(str(r.id) for r in all_requests(h) if r.parent_id == other.id)
    return other, ids


def test_cancel_and_status_name_the_supplements(h: Harness, clock: FakeClock) -> None:
    parent, children = stored_with_supplements_under_way(h)
    owed = ", ".join(str(c.id) for c in children)
    outcome = cancel(h.app.ledger, parent.id, clock.now(), "withdrawn")
    assert not outcome.ok  # the parent is stored: final
    assert f"supplementary request(s) {owed}" in outcome.message
    assert all(c.state != State.CANCELLED for c in all_requests(h)[1:])
    engine = h.app.engine
    text = describe_request(engine, parent.id, as_json=False)
    assert text is not None and "supplementary requests: " in text
    assert all(f"{c.id} {c.state}" in text for c in children)
    child_text = describe_request(engine, children[0].id, as_json=False)
    assert child_text is not None and f"supplementary to request {parent.id}" in child_text
