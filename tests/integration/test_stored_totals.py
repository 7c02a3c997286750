"""The metrics' totals of stored requests and files: exact, yet after the first count only
what was stored past the watermark is read again. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.db import File, QueueRow, Request, ServiceState, make_engine
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger import Ledger, totals
from dsar_scheduler.runtime.migrate import upgrade

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    engine = make_engine(database_url)
    return Ledger(sessionmaker(engine, expire_on_commit=False), budget_limit=100)


def add_request(
    ledger: Ledger, state: State, stored_at: datetime | None, files: list[tuple[str, int]]
) -> None:
    """A request in ``state`` with files (state, bytes), all stored at ``stored_at``."""
    n = next(_ids)
    with ledger.sessions() as session, session.begin():
        queue = QueueRow(amplitude_id=n, start_date=date(2025, 1, 1), end_date=date(2025, 1, 31))
        session.add(queue)
        session.flush()
        request = Request(
            queue_id=queue.id, state=state, queued_at=T0, updated_at=T0, stored_at=stored_at,
            remote_request_id=n,
        )  # fmt: skip
        session.add(request)
        session.flush()
        for k, (file_state, size) in enumerate(files):
            session.add(
                File(
                    request_id=request.id,
                    remote_request_id=n,
                    output_index=k,
                    url=f"u{n}-{k}",
                    name=f"{n}-{k}.json.gz",
                    state=file_state,
                    bytes=size,
                    stored_at=stored_at if file_state == "stored" else None,
                )
            )


def counted_by_brute_force(ledger: Ledger) -> tuple[int, int, int]:
    with ledger.sessions() as session:
        requests = session.scalar(
            select(func.count()).select_from(Request).where(Request.state == State.STORED)
        )
        files, size = session.execute(
            select(func.count(), func.coalesce(func.sum(File.bytes), 0)).where(
                File.state == "stored"
            )
        ).one()
    return int(requests or 0), int(files or 0), int(size or 0)


def shown(ledger: Ledger, now: datetime) -> tuple[int, int, int]:
    snap = ledger.views.snapshot(now, timedelta(days=3))
    return snap.by_state.get("stored", 0), snap.stored_files, snap.stored_bytes


def ranges_read(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """The (after, upto) of every count the totals make from now on."""
    seen: list[tuple[Any, Any]] = []
    real = totals._stored

    def spy(session: Any, after: Any, upto: Any) -> totals.Stored:
        seen.append((after, upto))
        return real(session, after, upto)

    monkeypatch.setattr(totals, "_stored", spy)
    return seen


def test_totals_are_exact_across_folds_and_read_only_past_the_watermark(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_request(ledger, State.STORED, T0 - timedelta(days=30), [("stored", 100), ("stored", 50)])
    add_request(ledger, State.STORED, None, [("stored", 7)])  # stored before the column was set
    add_request(ledger, State.FETCHING, T0 - timedelta(hours=2), [("stored", 5), ("pending", 9)])
    add_request(ledger, State.DONE, None, [("pending", 1)])
    seen = ranges_read(monkeypatch)
    now = T0
    assert shown(ledger, now) == counted_by_brute_force(ledger) == (2, 4, 162)
    mark = now - totals.LAG
    assert seen == [(None, mark), (mark, None)]  # one full count, then past the watermark

    add_request(ledger, State.STORED, now, [("stored", 1000)])  # shown at once
    now += timedelta(minutes=10)
    assert shown(ledger, now) == counted_by_brute_force(ledger) == (3, 5, 1162)
    assert seen[2:] == [(mark, None)]  # no recount of the history

    # a few hours on: the watermark moves up over what was stored meanwhile
    for hours in (1, 2, 3):
        add_request(ledger, State.STORED, now + timedelta(hours=hours), [("stored", hours)])
    now += timedelta(hours=4)
    assert shown(ledger, now) == counted_by_brute_force(ledger) == (6, 8, 1168)
    assert seen[3:] == [(mark, now - totals.LAG), (now - totals.LAG, None)]

    # another process starting now counts the same
    fresh = Ledger(ledger.sessions, budget_limit=100)
    assert shown(fresh, now) == (6, 8, 1168)


def test_the_other_states_are_counted_on_every_read(ledger: Ledger) -> None:
    add_request(ledger, State.QUEUED, None, [])
    add_request(ledger, State.REJECTED, None, [])
    assert ledger.views.snapshot(T0, timedelta(days=3)).by_state == {"queued": 1, "rejected": 1}
    add_request(ledger, State.DEAD, None, [])
    add_request(ledger, State.QUEUED, None, [])
    snap = ledger.views.snapshot(T0 + timedelta(seconds=15), timedelta(days=3))
    assert snap.by_state == {"queued": 2, "rejected": 1, "dead": 1}
    assert "stored" not in snap.by_state


def test_a_new_process_starts_from_the_recorded_totals(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a tick records lets a process started later (a replica, a CronJob's ``dsar
    tick`` pushing its metrics) read past the watermark only, and still count exactly."""
    add_request(ledger, State.STORED, T0 - timedelta(days=30), [("stored", 100), ("stored", 50)])
    add_request(ledger, State.STORED, None, [("stored", 7)])
    seen = ranges_read(monkeypatch)
    ledger.views.save_stored_totals(T0)  # the first record counts the history once
    mark = T0 - totals.LAG
    assert seen == [(None, mark)]

    later = Ledger(ledger.sessions, budget_limit=100)
    add_request(ledger, State.STORED, T0 + timedelta(minutes=5), [("stored", 3)])
    now = T0 + timedelta(minutes=10)
    assert shown(later, now) == counted_by_brute_force(ledger) == (3, 4, 160)
    assert seen[1:] == [(mark, None)]  # no count of the history

    # hours on, a tick moves the record up; the next process starts from there
    now += timedelta(hours=4)
    ledger.views.save_stored_totals(now)
    assert seen[2:] == [(mark, now - totals.LAG)]
    del seen[:]
    third = Ledger(ledger.sessions, budget_limit=100)
    assert shown(third, now) == counted_by_brute_force(ledger) == (3, 4, 160)
    assert seen == [(now - totals.LAG, None)]

    # a process whose watermark is behind the record (``later`` started from the older one;
    # its clock lags) does not move the record back
    later.views.save_stored_totals(now - timedelta(hours=3))
    with ledger.sessions() as session:
        row = session.get(ServiceState, totals.RECORD_KEY)
        assert row is not None and row.until == now - totals.LAG and row.value == "3 4 160 0"


@pytest.mark.parametrize("value", ["", "1 2", "1 2 x", "-1 0 0", "1 2 3 -1", "3 4 160 9 1"])
def test_an_unreadable_record_is_counted_again_and_rewritten(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A record that is not what the service writes (edited by hand?) is ignored: the
    history is counted again, exactly, and the next tick writes a good record."""
    add_request(ledger, State.STORED, T0 - timedelta(days=30), [("stored", 100)])
    with ledger.sessions() as session, session.begin():
        session.add(
            ServiceState(key=totals.RECORD_KEY, value=value, until=T0 - totals.LAG, updated_at=T0)
        )
    seen = ranges_read(monkeypatch)
    fresh = Ledger(ledger.sessions, budget_limit=100)
    assert shown(fresh, T0) == counted_by_brute_force(ledger) == (1, 1, 100)
    assert seen[0] == (None, T0 - totals.LAG)
    fresh.views.save_stored_totals(T0 + timedelta(hours=2))
    with ledger.sessions() as session:
        row = session.get(ServiceState, totals.RECORD_KEY)
        assert row is not None and row.value == "1 1 100 0"
        assert row.until == T0 + timedelta(hours=2) - totals.LAG


def purge(ledger: Ledger, purged_at: datetime) -> None:
    """The last request added: its files purged at ``purged_at`` (rows kept, as the purge
    leaves them), the request moved to ``purged``."""
    with ledger.sessions() as session, session.begin():
        request = session.scalars(select(Request).order_by(Request.id.desc()).limit(1)).one()
        request.state, request.purged_at = State.PURGED, purged_at
        for file in session.scalars(select(File).where(File.request_id == request.id)):
            file.purged_at = purged_at


def test_purged_requests_still_count_as_stored_and_are_counted_as_purged(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention: ``stored`` stays every request ever stored (the throughput the dashboard
    shows), and ``purged`` counts those whose files are gone, by the same watermark."""
    add_request(ledger, State.STORED, T0 - timedelta(days=60), [("stored", 100), ("stored", 50)])
    purge(ledger, T0 - timedelta(days=30))
    add_request(ledger, State.STORED, T0 - timedelta(days=10), [("stored", 7)])
    seen = ranges_read(monkeypatch)
    snap = ledger.views.snapshot(T0, timedelta(days=3))
    assert (snap.by_state["stored"], snap.by_state["purged"]) == (2, 1)
    assert (snap.stored_files, snap.stored_bytes) == (3, 157)  # ever stored, purged or not
    purge(ledger, T0 + timedelta(minutes=5))  # past the watermark: shown at once
    snap = ledger.views.snapshot(T0 + timedelta(minutes=10), timedelta(days=3))
    assert (snap.by_state["stored"], snap.by_state["purged"]) == (2, 2)
    assert seen == [(None, T0 - totals.LAG), (T0 - totals.LAG, None), (T0 - totals.LAG, None)]
    ledger.views.save_stored_totals(T0 + timedelta(hours=3))
    with ledger.sessions() as session:
        row = session.get(ServiceState, totals.RECORD_KEY)
        assert row is not None and row.value == "2 3 157 2"
    fresh = Ledger(ledger.sessions, budget_limit=100)  # a new process, from the record
    snap = fresh.views.snapshot(T0 + timedelta(hours=3), timedelta(days=3))
    assert (snap.by_state["stored"], snap.by_state["purged"]) == (2, 2)


def test_a_record_written_before_purges_existed_is_read_without_a_recount(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three numbers: an earlier version's record, from before any purge; read as none
    purged up to its watermark, not counted again."""
    add_request(ledger, State.STORED, T0 - timedelta(days=30), [("stored", 100)])
    with ledger.sessions() as session, session.begin():
        session.add(
            ServiceState(
                key=totals.RECORD_KEY, value="1 1 100", until=T0 - totals.LAG, updated_at=T0
            )
        )
    seen = ranges_read(monkeypatch)
    fresh = Ledger(ledger.sessions, budget_limit=100)
    assert shown(fresh, T0) == (1, 1, 100)
    assert seen == [(T0 - totals.LAG, None)]  # past the watermark only


def test_the_database_lock_is_taken_before_the_totals_lock(tmp_path: Any) -> None:
    """A scrape and a tick in one process once deadlocked on SQLite: the scrape's transaction
    held the write lock while it waited for the totals' lock, which the tick held while it
    waited for the write lock. Both paths now take the database's lock first: a reader
    blocked on the totals' lock already holds the write lock, so nobody holding the totals'
    lock can be waiting for it."""
    url = f"sqlite:///{tmp_path}/d.db"
    upgrade(url)
    sessions = sessionmaker(make_engine(url), expire_on_commit=False)
    stored = totals.StoredTotals()
    done = threading.Event()

    def scrape() -> None:
        with sessions() as session, session.begin():
            stored.read(session, datetime(2026, 1, 5, tzinfo=UTC))
        done.set()

    with stored._lock:  # a tick inside save(), between its two locks (before the fix)
        reader = threading.Thread(target=scrape)
        reader.start()
        other = sqlite3.connect(f"{tmp_path}/d.db", timeout=0.05)
        try:
            for _ in range(100):  # until the reader has begun and waits on the totals' lock
                try:
                    other.execute("BEGIN IMMEDIATE")
                    other.execute("ROLLBACK")
                except sqlite3.OperationalError:
                    break  # the write lock is the reader's
                threading.Event().wait(0.02)
            else:
                raise AssertionError("the reader never took the database's lock first")
        finally:
            other.close()
        assert not done.is_set()
    reader.join(timeout=10)
    assert done.is_set()
