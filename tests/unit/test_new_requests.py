"""Admission's rows, built without a database (``ledger.queue.new_requests``): one per queue
row, the duplicates of a ticket rejected whether the ledger or the same page carries it."""

from __future__ import annotations

from datetime import UTC, date, datetime

from dsar_scheduler.core.deadlines import Deadline
from dsar_scheduler.core.states import State
from dsar_scheduler.core.validation import Accepted, RawQueueRow, Rejected
from dsar_scheduler.ledger.queue import new_requests

JANUARY = Accepted(42, date(2025, 1, 1), date(2025, 1, 31))


def raw(queue_id: int, ref: str | None) -> RawQueueRow:
    return RawQueueRow(queue_id, "42", "2025-01-01", "2025-01-31", ref, None)


def test_accepted_rows_are_queued_with_their_subject_and_rejected_ones_keep_the_reason() -> None:
    queued, rejected = new_requests([(raw(1, "A"), JANUARY), (raw(2, "B"), Rejected("bad"))], {})
    assert (queued.state, queued.event_reason, queued.reason) == (State.QUEUED, "admitted", None)
    assert (queued.amplitude_id, queued.start_date, queued.end_date) == (
        42,
        date(2025, 1, 1),
        date(2025, 1, 31),
    )
    assert (rejected.state, rejected.event_reason, rejected.reason) == ("rejected", "bad", "bad")
    assert rejected.amplitude_id is None and rejected.start_date is None


def test_a_ticket_already_carried_is_rejected_as_a_duplicate() -> None:
    taken = {"A": 7}
    (row,) = new_requests([(raw(9, "A"), JANUARY)], taken)
    assert row.state == State.REJECTED
    assert row.reason == "duplicate external_ref: queue row 7 already carries it"
    assert taken == {"A": 7}  # the caller's map is left as it was


def test_within_a_page_the_first_row_with_a_ticket_wins_unless_it_was_rejected() -> None:
    rows = new_requests(
        [
            (raw(1, "A"), Rejected("no amplitude_id")),  # a rejected row does not take its ticket
            (raw(2, "A"), JANUARY),
            (raw(3, "A"), JANUARY),
            (raw(4, None), JANUARY),
            (raw(5, None), JANUARY),  # rows without a ticket are never duplicates
        ],
        {},
    )
    assert [r.state for r in rows] == ["rejected", "queued", "rejected", "queued", "queued"]
    assert rows[2].reason == "duplicate external_ref: queue row 2 already carries it"


def test_the_ledger_row_has_every_column_admission_writes() -> None:
    (row,) = new_requests([(raw(1, "A"), JANUARY)], {})
    now = datetime(2025, 2, 1, tzinfo=UTC)
    values = row.values(now)
    assert values["queue_id"] == 1 and values["external_ref"] == "A"
    assert (values["queued_at"], values["updated_at"]) == (now, now)
    counts = ("submissions", "failures", "expiries", "errors", "polls")
    assert [values[k] for k in counts] == [0] * 5


def test_a_queued_request_carries_its_deadline_and_a_rejected_one_none() -> None:
    received = datetime(2026, 1, 2, 8, 0, tzinfo=UTC)
    due = datetime(2026, 2, 2, 23, 59, 59, 999999, tzinfo=UTC)
    timed = Accepted(42, date(2025, 1, 1), date(2025, 1, 31), Deadline("gdpr", received, due))
    queued, rejected = new_requests([(raw(1, None), timed), (raw(2, None), Rejected("bad"))], {})
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert {k: queued.values(now)[k] for k in ("regime", "received_at", "due_at")} == {
        "regime": "gdpr",
        "received_at": received,
        "due_at": due,
    }
    assert {k: rejected.values(now)[k] for k in ("regime", "received_at", "due_at")} == {
        "regime": None,
        "received_at": None,
        "due_at": None,
    }
