"""Two replicas share the privacy APIs' limits through the ledger: never more than one
deletion call a second per key, never more than 360 searches an hour per key, and a 429 backs
the key off for both."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.db import make_engine
from dsar_scheduler.ledger.privacy_calls import PrivacyCalls

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)


def replicas(url: str, n: int = 2) -> list[PrivacyCalls]:
    return [PrivacyCalls(sessionmaker(make_engine(url), expire_on_commit=False)) for _ in range(n)]


def race(calls: list[PrivacyCalls], api: str, project: int, at: datetime, tries: int) -> int:
    """Each replica tries ``tries`` reservations at the same moment, all at once."""
    won: list[int] = []
    start = threading.Barrier(len(calls))

    def go(ledger: PrivacyCalls) -> None:
        start.wait()
        won.extend(1 for _ in range(tries) if ledger.reserve(api, project, at) is not None)

    threads = [threading.Thread(target=go, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(won)


def test_one_deletion_call_a_second_per_key_across_replicas(database_url: str) -> None:
    calls = replicas(database_url)
    for second in range(5):
        at = NOW + timedelta(seconds=second)
        assert race(calls, "deletion", 7, at, tries=4) == 1
    # another project's key has its own second
    assert race(calls, "deletion", 8, NOW + timedelta(seconds=4), tries=4) == 1
    assert calls[0].wait_until("deletion", 7, NOW + timedelta(seconds=4)) == NOW + timedelta(
        seconds=5
    )


def test_360_searches_an_hour_per_key_across_replicas(database_url: str) -> None:
    calls = replicas(database_url)
    first = calls[0]
    call_ids: list[int] = []
    at = NOW + timedelta(hours=2)
    while (call_id := calls[len(call_ids) % 2].reserve("search", 9, at)) is not None:
        call_ids.append(call_id)
        first.finish(call_id, 200, at)  # answered: only the hourly count binds
    assert len(call_ids) == 360
    assert calls[1].reserve("search", 9, at) is None
    assert calls[1].reserve("search", 9, at + timedelta(hours=1, seconds=1)) is not None


def test_ten_searches_in_flight(database_url: str) -> None:
    calls = replicas(database_url)
    held = [calls[i % 2].reserve("search", 7, NOW) for i in range(10)]
    assert all(h is not None for h in held)
    assert calls[0].reserve("search", 7, NOW) is None
    calls[1].finish(held[0] or 0, 200, NOW)
    assert calls[0].reserve("search", 7, NOW) is not None


def test_a_429_backs_off_the_key_for_every_replica(database_url: str) -> None:
    calls = replicas(database_url)
    calls[0].back_off("deletion", 7, NOW + timedelta(seconds=30), NOW)
    assert calls[1].reserve("deletion", 7, NOW + timedelta(seconds=10)) is None
    assert calls[1].wait_until("deletion", 7, NOW) == NOW + timedelta(seconds=30)
    assert calls[1].reserve("deletion", 8, NOW) is not None  # another key
    assert calls[1].reserve("deletion", 7, NOW + timedelta(seconds=31)) is not None
