"""``bulk_insert``: a COPY on PostgreSQL, an executemany elsewhere; the rows must come back the
same either way, with the columns' own conversions and Python-side defaults applied."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import Event, QueueRow, Request, bulk_insert, column_in, make_engine

AT = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


@pytest.fixture
def sessions(database_url: str) -> sessionmaker[Session]:
    return sessionmaker(make_engine(database_url), expire_on_commit=False)


def _queue(sessions: sessionmaker[Session], n: int) -> list[int]:
    with sessions() as session, session.begin():
        rows = [
            QueueRow(amplitude_id=k, start_date=date(2026, 1, 1), end_date=date(2026, 2, 1))
            for k in range(n)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _request(sessions: sessionmaker[Session]) -> int:
    """One queued request (and its queue row): its id."""
    (qid,) = _queue(sessions, 1)
    with sessions() as session, session.begin():
        request = Request(queue_id=qid, state="queued", queued_at=AT, updated_at=AT)
        session.add(request)
        session.flush()
        return request.id


def _event(request_id: int) -> dict[str, object]:
    return {
        "request_id": request_id,
        "at": AT,
        "from_state": None,
        "to_state": "queued",
        "reason": "admitted",
        "remote_request_id": None,
    }


def test_rows_round_trip_with_defaults_and_utc_conversion(
    sessions: sessionmaker[Session],
) -> None:
    queue_ids = _queue(sessions, 3)
    paris = timezone(timedelta(hours=2))
    rows = [
        {
            "queue_id": qid,
            "external_ref": ref,
            "amplitude_id": 10**12 + k,  # BIGINT
            "start_date": date(2025, 1, 1),
            "end_date": None,
            "state": "queued",
            "reason": 'it\'s "quoted"\ttab\nnewline \\ backslash é',  # COPY's escapes
            "queued_at": AT.astimezone(paris),  # aware, not UTC: stored as naive UTC
            "updated_at": AT,
        }
        for k, (qid, ref) in enumerate(zip(queue_ids, ["a", None, "c"], strict=True))
    ]
    with sessions() as session, session.begin():
        bulk_insert(session, Request, rows)
    with sessions() as session:
        stored = session.scalars(select(Request).order_by(Request.queue_id)).all()
    assert [r.queue_id for r in stored] == queue_ids
    assert [r.external_ref for r in stored] == ["a", None, "c"]
    assert [r.amplitude_id for r in stored] == [10**12, 10**12 + 1, 10**12 + 2]
    assert {r.reason for r in stored} == {rows[0]["reason"]}
    assert all(r.queued_at == AT and r.updated_at == AT for r in stored)
    assert all(r.end_date is None and r.start_date == date(2025, 1, 1) for r in stored)
    # not given: the model's Python-side defaults, as a Core insert would fill them in
    assert all((r.submissions, r.polls, r.errors, r.failures) == (0, 0, 0, 0) for r in stored)


def test_rows_are_part_of_the_callers_transaction(sessions: sessionmaker[Session]) -> None:
    event = _event(_request(sessions))
    with pytest.raises(RuntimeError), sessions() as session, session.begin():
        bulk_insert(session, Event, [event, event])
        raise RuntimeError("the caller fails after the insert")
    with sessions() as session:
        assert session.scalars(select(Event)).all() == []  # rolled back with the caller
    with sessions() as session, session.begin():
        bulk_insert(session, Event, [event, event])
        bulk_insert(session, Event, [])  # nothing to do
    with sessions() as session:
        assert [e.reason for e in session.scalars(select(Event))] == ["admitted", "admitted"]


def test_a_refused_row_fails_the_whole_insert_as_sqlalchemy_says_it(
    sessions: sessionmaker[Session],
) -> None:
    """A row the database refuses (an event of a request that does not exist) fails the
    insert with SQLAlchemy's own exception on both databases, writes none of the rows, and
    leaves the connection usable for the next transaction (admission then goes row by row)."""
    request_id = _request(sessions)
    with pytest.raises(IntegrityError), sessions() as session, session.begin():
        bulk_insert(session, Event, [_event(request_id), _event(request_id + 1000)])
    with sessions() as session, session.begin():
        assert session.scalars(select(Event)).all() == []
        bulk_insert(session, Event, [_event(request_id)])
    with sessions() as session:
        assert [e.request_id for e in session.scalars(select(Event))] == [request_id]


@pytest.mark.parametrize("count", [0, 1, 3, 600])
def test_column_in_selects_what_in_selects(sessions: sessionmaker[Session], count: int) -> None:
    """``column_in`` (an array on PostgreSQL, an IN list elsewhere) picks the same rows as
    ``in_``, for no values, one, a few, and more than a batch."""
    ids = _queue(sessions, 10)
    wanted = ids[::3][:count] + [10**9 + n for n in range(max(0, count - 4))]  # some unknown
    with sessions() as session:
        got = session.scalars(select(QueueRow.id).where(column_in(session, QueueRow.id, wanted)))
        expected = session.scalars(select(QueueRow.id).where(QueueRow.id.in_(wanted)))
        assert sorted(got) == sorted(expected) == sorted(ids[::3][:count])
