"""Admission reads the queue past a floor below which every row is admitted, so a tick's cost
does not grow with the service's history; a full sweep each day catches rows that committed
below it late. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.ledger import views as views_module
from dsar_scheduler.ledger.queue import Queue
from dsar_scheduler.ledger.rows import QueueFloor
from dsar_scheduler.tick import limits as tick_limits
from tests.support.harness import Harness, harness


@contextmanager
def floored(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    """A harness that submits nothing (admission is what is looked at)."""
    with harness(database_url, tmp_path, clock, submit_batch_size=0) as h:
        yield h


def insert_with_id(h: Harness, queue_id: int) -> None:
    """A queue row with a chosen id: what a row allocated early and committed late looks
    like to a tick that already read past it."""
    with h.app.sessions() as session, session.begin():
        session.execute(
            text(
                "INSERT INTO dsar_queue (id, amplitude_id, start_date, end_date) "
                "VALUES (:i, :a, '2025-01-01', '2025-01-31')"
            ),
            {"i": queue_id, "a": 1000 + queue_id},
        )


def pages_read_from(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``after`` of every page admission reads from now on."""
    seen: list[int] = []
    real = Queue.pending_rows

    def spy(self: Queue, limit: int, after: int = 0) -> Any:
        seen.append(after)
        return real(self, limit, after)

    monkeypatch.setattr(Queue, "pending_rows", spy)
    return seen


def spy_on(function: Any, calls: list[Any]) -> Any:
    def spy(*args: Any) -> Any:
        calls.append(args[0])
        return function(*args)

    return spy


def floor_of(h: Harness) -> int:
    return h.app.ledger.queue.floor(h.clock.now()).floor


def test_each_tick_reads_past_the_floor_and_moves_it_up(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with floored(database_url, tmp_path, clock) as h:
        pages = pages_read_from(h, monkeypatch)
        for n in range(3):
            h.enqueue(100 + n, "2025-01-01", "2025-01-31")
        assert h.tick().admitted == 3
        assert pages == [0]  # the first tick sweeps the whole queue
        assert floor_of(h) == 0  # and has no earlier tick's view to move the floor to
        for n in range(2):
            clock.advance(timedelta(minutes=30))
            h.enqueue(200 + n, "2025-01-01", "2025-01-31")
            assert h.tick().admitted == 1
        assert pages[1:] == [0, 3]  # each tick moves it up to what the tick before saw
        assert floor_of(h) == 4
        clock.advance(timedelta(minutes=30))
        assert h.tick().admitted == 0
        assert pages[3:] == [4]
        assert floor_of(h) == 5


def test_a_row_that_commits_after_a_later_one_is_admitted_by_the_next_tick(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with floored(database_url, tmp_path, clock) as h:
        insert_with_id(h, 4)
        h.tick()
        clock.advance(timedelta(minutes=30))
        insert_with_id(h, 10)
        assert h.tick().admitted == 1
        insert_with_id(h, 7)  # allocated before 10, committed just after the tick read
        clock.advance(timedelta(minutes=30))
        assert h.tick().admitted == 1
        assert floor_of(h) == 10


def test_a_row_that_commits_a_tick_late_below_the_floor_is_admitted_by_the_full_sweep(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with floored(database_url, tmp_path, clock) as h:
        insert_with_id(h, 10)
        for _ in range(2):
            h.tick()
            clock.advance(timedelta(minutes=30))
        assert floor_of(h) == 10
        insert_with_id(h, 7)  # allocated before 10, its transaction open for a whole tick
        for _ in range(3):
            assert h.tick().admitted == 0
            clock.advance(timedelta(minutes=30))
        assert h.app.ledger.views.snapshot(clock.now(), timedelta(days=3)).queue_pending == 0
        pages = pages_read_from(h, monkeypatch)
        clock.advance(tick_limits.QUEUE_SWEEP_EVERY)
        counted: list[int] = []
        monkeypatch.setattr(views_module, "unadmitted", spy_on(views_module.unadmitted, counted))
        h.app.ledger.views.snapshot(clock.now(), timedelta(days=3))
        assert counted == [10]  # a sweep being due does not make a scrape read the whole queue
        assert h.tick().admitted == 1
        assert pages == [0]
        with h.app.sessions() as session:
            admitted = session.execute(text("SELECT queue_id FROM dsar_requests")).scalars()
            assert sorted(admitted) == [7, 10]
        assert floor_of(h) == 10  # and trusted for another day
        clock.advance(timedelta(minutes=30))
        h.tick()
        assert pages[1:] == [10]


def test_the_floor_stops_below_rows_left_for_the_next_tick(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tick_limits, "ADMIT_BATCH", 2)
    monkeypatch.setattr(tick_limits, "MAX_ADMIT_BATCHES", 1)
    with floored(database_url, tmp_path, clock) as h:
        for n in range(5):
            h.enqueue(100 + n, "2025-01-01", "2025-01-31")
        floors = []
        for _ in range(4):
            h.tick()
            floors.append(floor_of(h))
            clock.advance(timedelta(minutes=30))
        assert floors == [0, 4, 5, 5]  # never past what the tick before saw, nor a row left
        assert h.states() == {"queued": 5}


def test_a_row_that_cannot_be_written_holds_the_floor_below_it(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with floored(database_url, tmp_path, clock) as h:
        for n in range(3):
            h.enqueue(100 + n, "2025-01-01", "2025-01-31")
        real = Queue.admit

        def refuses_row_2(self: Queue, verdicts: Any, now: Any) -> Any:
            if any(row.queue_id == 2 for row, _ in verdicts):
                raise RuntimeError("the database refused the row")
            return real(self, verdicts, now)

        monkeypatch.setattr(Queue, "admit", refuses_row_2)
        assert h.tick().admitted == 2
        clock.advance(timedelta(minutes=30))
        assert h.tick().admitted == 0
        assert floor_of(h) == 1  # the tick before saw 3, but row 2 is still unadmitted
        clock.advance(timedelta(minutes=30))
        monkeypatch.setattr(Queue, "admit", real)
        assert h.tick().admitted == 1
        assert floor_of(h) == 3


@pytest.mark.parametrize("value", ["12", "x y", "", "1 2 3"])
def test_an_unreadable_floor_makes_admission_read_the_whole_queue(
    database_url: str, tmp_path: Path, clock: FakeClock, value: str
) -> None:
    """Whatever the recorded floor became (edited by hand), admission goes on: it reads the
    whole queue and records a floor it can read again."""
    with floored(database_url, tmp_path, clock) as h:
        for n in range(2):
            h.enqueue(100 + n, "2025-01-01", "2025-01-31")
        h.tick()
        clock.advance(timedelta(minutes=30))
        h.enqueue(102, "2025-01-01", "2025-01-31")
        with h.app.sessions() as session, session.begin():
            session.execute(
                text("UPDATE dsar_service_state SET value = :v WHERE key = 'queue-floor'"),
                {"v": value},
            )
        assert h.tick().admitted == 1
        assert h.app.ledger.queue.floor(clock.now()) == QueueFloor(0, 3)
        clock.advance(timedelta(minutes=30))
        h.tick()
        assert floor_of(h) == 3
