"""The re-ingestion watch, whole ticks against the emulator on a fake clock (SQLite and
PostgreSQL): 7 and 30 days after a verified deletion the subject's user ID is searched again
in each project; a user whose app kept sending events is found under a new Amplitude ID,
recorded on its entries with a receipt, an audit line saying what to do, and the metrics; a
user who stayed away is recorded as still deleted; a subject named only by Amplitude ID
cannot be watched, and says so without a search; a tick checks a bounded number."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import DeletionEntry
from dsar_scheduler.tick import recheck as recheck_step
from tests.support.deletion_service import (
    new_deletion,
    pick_clear,
    reasons_of,
    run_days,
    searches,
    service,
)
from tests.support.harness import Harness
from tests.support.privacy_emulator import START


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def watch_of(h: Harness, request_id: int) -> dict[int, tuple[int, str | None]]:
    """Project -> (checks made, re-ingested IDs) of the request's entries there."""
    query = select(DeletionEntry.project_id, DeletionEntry.rechecks, DeletionEntry.reingested)
    with h.app.sessions() as session:
        rows = session.execute(query.where(DeletionEntry.request_id == request_id))
        return {p: (n, ids) for p, n, ids in rows}


def last_verified(h: Harness, request_ids: list[int]) -> datetime:
    query = select(DeletionEntry.verified_at).where(DeletionEntry.request_id.in_(request_ids))
    with h.app.sessions() as session:
        return max(at for at in session.scalars(query) if at is not None)


def metric(h: Harness, name: str, **labels: str) -> float | None:
    return h.app.metrics.registry.get_sample_value(name, labels)


def test_a_returning_user_is_found_under_a_new_id_and_a_gone_one_stays_deleted(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recheck_step, "RECHECKS_PER_TICK", 2)
    with service(database_url, tmp_path, clock) as h:
        returning = pick_clear(h, merged=None, reingests=True)
        gone = pick_clear(h, merged=False)
        by_id = pick_clear(h, merged=False, skip=1)
        rids = [
            new_deletion(h, returning.user_id),
            new_deletion(h, gone.user_id),
            new_deletion(h, None, by_id.amplitude_id),
        ]
        h.tick()
        run_days(h, rids, "deleted")
        # the 7-day checks: at most two subjects (request, project) a tick
        clock.set(last_verified(h, rids) + timedelta(days=7))
        groups = len(returning.projects) + len(gone.projects) + len(by_id.projects)
        for _ in range(groups):
            before, searched = checked(h, rids), searches(h)
            h.tick()
            assert searches(h) - searched <= 2
            assert 0 < checked(h, rids) - before <= 2 or checked(h, rids) == groups
            clock.advance(timedelta(minutes=30))
        assert checked(h, rids) == groups
        assert all(n >= 1 for r in rids for n, _ in watch_of(h, r).values())

        new_ids = {p: h.emulator.privacy.identity(returning, p) for p in returning.projects}
        expected = {p: (1, str(live.canonical_id)) for p, live in new_ids.items() if live}
        assert watch_of(h, rids[0]) == expected and len(expected) == len(returning.projects)
        assert watch_of(h, rids[1]) == dict.fromkeys(gone.projects, (1, None))
        assert watch_of(h, rids[2]) == dict.fromkeys(by_id.projects, (2, None))

        reasons = reasons_of(h, rids[0])
        for project in returning.projects:
            assert any(
                r.startswith(
                    f"re-ingested: the user ID came back under 1 new Amplitude ID(s) in "
                    f"project {project} (7 days after verification)"
                )
                and "set the SDK's opt-out / stop the import, then file a new deletion" in r
                for r in reasons
            )
        assert str(returning.amplitude_id) not in " ".join(reasons)  # IDs in receipts only
        assert sum("still deleted" in r for r in reasons_of(h, rids[1])) == len(gone.projects)
        assert sum("not possible" in r for r in reasons_of(h, rids[2])) == len(by_id.projects)
        kinds = [k for k, *_ in h.app.ledger.deletions.receipts(rids[0])]
        assert kinds.count("recheck") == len(returning.projects)
        assert [k for k, *_ in h.app.ledger.deletions.receipts(rids[2])].count("recheck") == 0

        assert metric(h, "dsar_deletion_reingested_subjects") == 1
        found = len(returning.projects)
        assert metric(h, "dsar_deletion_rechecks_total", result="reingested") == found
        assert metric(h, "dsar_deletion_rechecks_total", result="clear") == len(gone.projects)
        assert metric(h, "dsar_deletion_rechecks_total", result="skipped") == len(by_id.projects)

        # nothing more until the 30-day checks; then one more search per watched subject
        searched = searches(h)
        clock.advance(timedelta(days=10))
        h.tick()
        assert searches(h) == searched
        clock.set(last_verified(h, rids) + timedelta(days=30, hours=1))
        for _ in range(groups):
            h.tick()
            clock.advance(timedelta(minutes=30))
        assert searches(h) - searched == len(returning.projects) + len(gone.projects)
        assert {n for r in rids for n, _ in watch_of(h, r).values()} == {2}
        assert all(ids for _, ids in watch_of(h, rids[0]).values())  # still recorded
        clock.advance(timedelta(days=60))
        searched = searches(h)
        h.tick()
        assert searches(h) == searched  # two checks, then the watch ends


def checked(h: Harness, request_ids: list[int]) -> int:
    """Subjects (request, project) checked at least once."""
    return sum(1 for r in request_ids for n, _ in watch_of(h, r).values() if n)
