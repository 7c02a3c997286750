"""The queue's request types end to end against the emulator, on SQLite and PostgreSQL: an
access request by user ID (the DSAR API's ``userId``), a deletion admitted from the queue, an
access_and_deletion request exported first and deleted after, and the rows refused."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import Event, Request
from dsar_scheduler.core.states import State
from tests.support.deletion_service import QUICK_JOBS, pick_clear
from tests.support.deletion_service import service as privacy_service
from tests.support.harness import Harness, harness
from tests.support.privacy_emulator import START

P1 = 187_520
FAST = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}
DELETION_DAYS = 4


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def request(h: Harness, request_id: int) -> Request:
    with h.app.sessions() as session:
        found = session.get(Request, request_id)
        assert found is not None
        return found


def history(h: Harness, request_id: int) -> list[str]:
    query = select(Event.to_state).where(Event.request_id == request_id).order_by(Event.id)
    with h.app.sessions() as session:
        return list(session.scalars(query))


def run_days(h: Harness, days: int, until: State) -> None:
    """Tick every simulated hour until request 1 reaches ``until`` (or the days run out)."""
    for _ in range(days * 24):
        h.tick()
        if request(h, 1).state == until:
            return
        h.clock.advance(timedelta(hours=1))


def test_access_by_user_id_uses_the_dsar_apis_user_id(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with privacy_service(database_url, tmp_path, clock, emulator_options=FAST) as h:
        subject = pick_clear(h, merged=False)
        h.enqueue(None, "2025-01-01", "2025-01-31", user_id=subject.user_id)
        run_days(h, 2, State.STORED)
        stored = request(h, 1)
        assert stored.state == State.STORED and stored.user_id == subject.user_id
        assert stored.remote_request_id is not None
        # Amplitude was asked by user ID, and its export is the subject's
        assert h.emulator.job(stored.remote_request_id).user_id == subject.user_id
        manifest = json.loads(
            (h.files_root / str(stored.storage_prefix) / "manifest.json").read_text()
        )
        assert manifest["subject"] == {"amplitude_id": None, "user_id": subject.user_id}
        assert manifest["files"]


def test_a_deletion_row_is_admitted_to_resolving_and_deleted(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with privacy_service(database_url, tmp_path, clock, **QUICK_JOBS) as h:
        subject = pick_clear(h, merged=True)
        h.enqueue(None, None, None, user_id=subject.user_id, request_type="deletion")
        h.tick()
        assert history(h, 1)[0] == "resolving"  # never queued for the DSAR API
        run_days(h, DELETION_DAYS, State.DELETED)
        assert request(h, 1).state == State.DELETED
        assert h.emulator.posts() == []  # no DSAR request was made for a deletion
        with h.app.sessions() as session:
            view = session.execute(
                text(
                    "SELECT state, request_type, user_id, deletion_day, deletion_scrubbed_on, "
                    "deletion_done_at, deletion_verified_at, deadline FROM dsar_queue_status"
                )
            ).one()
        assert view[:3] == ("deleted", "deletion", subject.user_id)
        assert all(value is not None for value in view[3:7])
        assert view[7] == "met"  # its deadline is met by the verified erasure
        for project in subject.projects:
            live = h.emulator.privacy.identity(subject, project)
            assert live is not None and live.canonical_id is None


def test_access_and_deletion_exports_first_then_deletes(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with privacy_service(database_url, tmp_path, clock, emulator_options=FAST, **QUICK_JOBS) as h:
        subject = pick_clear(h, merged=False)
        h.enqueue(
            None,
            "2025-01-01",
            "2025-01-31",
            user_id=subject.user_id,
            request_type="access_and_deletion",
        )
        run_days(h, DELETION_DAYS + 2, State.DELETED)
        states = history(h, 1)
        assert states.index("stored") < states.index("resolving") < states.index("deleted")
        stored = request(h, 1)
        assert stored.state == State.DELETED and stored.stored_at is not None


def test_deletions_are_refused_without_project_keys(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock) as h:
        h.enqueue(None, None, None, user_id="alice", request_type="deletion")
        h.enqueue(None, None, None, user_id="bob", request_type="forget")
        h.enqueue(None, "2025-01-01", "2025-01-31", user_id="carol")  # access: fine
        h.tick()
        with h.app.sessions() as session:
            rows = session.execute(
                text("SELECT state, reason FROM dsar_queue_status ORDER BY queue_id")
            ).all()
        assert rows[0][0] == "rejected" and "DSAR_PROJECTS_FILE" in rows[0][1]
        assert rows[1][0] == "rejected" and "request_type 'forget'" in rows[1][1]
        assert rows[2][0] in {"queued", "submitting", "submitted"}
