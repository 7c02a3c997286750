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

from dsar_scheduler import tick as tick_module
from dsar_scheduler.clock import FakeClock
from dsar_scheduler.ledger import Ledger

from .harness import Harness, harness


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
    real = Ledger.pending_queue_rows

    def spy(self: Ledger, limit: int, after: int = 0) -> Any:
        seen.append(after)
        return real(self, limit, after)

    monkeypatch.setattr(Ledger, "pending_queue_rows", spy)
    return seen


def test_each_tick_reads_past_the_floor_and_moves_it_up(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with floored(database_url, tmp_path, clock) as h:
        pages = pages_read_from(h, monkeypatch)
        for n in range(3):
            h.enqueue(100 + n, "2025-01-01", "2025-01-31")
        assert h.tick().admitted == 3
        assert h.app.ledger.queue_floor(clock.now()) == 3
        assert pages == [0]  # the first tick sweeps the whole queue
        clock.advance(timedelta(minutes=30))
        h.enqueue(200, "2025-01-01", "2025-01-31")
        h.enqueue(201, "2025-01-01", "2025-01-31")
        assert h.tick().admitted == 2
        assert pages[1:] == [3]
        assert h.app.ledger.queue_floor(clock.now()) == 5
        clock.advance(timedelta(minutes=30))
        assert h.tick().admitted == 0
        assert pages[2:] == [5]


def test_a_row_that_commits_below_the_floor_is_admitted_by_the_next_full_sweep(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with floored(database_url, tmp_path, clock) as h:
        insert_with_id(h, 10)
        assert h.tick().admitted == 1
        assert h.app.ledger.queue_floor(clock.now()) == 10
        insert_with_id(h, 7)  # allocated before 10, committed after the tick read past it
        for _ in range(3):
            clock.advance(timedelta(minutes=30))
            assert h.tick().admitted == 0
        assert h.app.ledger.snapshot(clock.now(), timedelta(days=3)).queue_pending == 0
        pages = pages_read_from(h, monkeypatch)
        clock.advance(tick_module.QUEUE_SWEEP_EVERY)
        assert h.tick().admitted == 1
        assert pages == [0]
        with h.app.sessions() as session:
            admitted = session.execute(text("SELECT queue_id FROM dsar_requests")).scalars()
            assert sorted(admitted) == [7, 10]
        assert h.app.ledger.queue_floor(clock.now()) == 10  # and trusted for another day
        clock.advance(timedelta(minutes=30))
        h.tick()
        assert pages[1:] == [10]


def test_the_floor_stops_below_rows_left_for_the_next_tick(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tick_module, "ADMIT_BATCH", 2)
    monkeypatch.setattr(tick_module, "MAX_ADMIT_BATCHES", 1)
    with floored(database_url, tmp_path, clock) as h:
        for n in range(5):
            h.enqueue(100 + n, "2025-01-01", "2025-01-31")
        floors = []
        for _ in range(3):
            h.tick()
            floors.append(h.app.ledger.queue_floor(clock.now()))
            clock.advance(timedelta(minutes=30))
        assert floors == [2, 4, 5]
        assert h.states() == {"queued": 5}


def test_a_row_that_cannot_be_written_holds_the_floor_below_it(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with floored(database_url, tmp_path, clock) as h:
        for n in range(3):
            h.enqueue(100 + n, "2025-01-01", "2025-01-31")
        real = Ledger.admit

        def refuses_row_2(self: Ledger, verdicts: Any, now: Any) -> Any:
            if any(row.queue_id == 2 for row, _ in verdicts):
                raise RuntimeError("the database refused the row")
            return real(self, verdicts, now)

        monkeypatch.setattr(Ledger, "admit", refuses_row_2)
        assert h.tick().admitted == 2
        assert h.app.ledger.queue_floor(clock.now()) == 1
        monkeypatch.setattr(Ledger, "admit", real)
        clock.advance(timedelta(minutes=30))
        assert h.tick().admitted == 1
        assert h.app.ledger.queue_floor(clock.now()) == 3
