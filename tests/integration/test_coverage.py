"""The coverage check of an access request by user ID, end to end against the emulator on
SQLite and PostgreSQL: the user's Amplitude IDs resolved while the export runs, compared with
the IDs in the stored files, and a supplementary request by Amplitude ID for exactly the IDs
the export missed (here the merged IDs, which the emulator is told to leave out)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import Request
from dsar_scheduler.adapters.storage import StorageError
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.supplements import BEFORE_STORED
from tests.support.deletion_service import (
    FAST,
    all_requests,
    missing_merged,
    pick_clear,
    tick_until_all_stored,
)
from tests.support.deletion_service import service as privacy_service
from tests.support.harness import Harness
from tests.support.privacy_emulator import START


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def manifest_of(h: Harness, request: Request) -> dict[str, Any]:
    path = h.files_root / str(request.storage_prefix) / "manifest.json"
    body: dict[str, Any] = json.loads(path.read_text())
    return body


def test_ids_the_export_missed_are_asked_for_alone(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with missing_merged(database_url, tmp_path, clock) as h:
        subject = pick_clear(h, merged=True)
        h.enqueue(None, "2025-01-01", "2025-01-31", user_id=subject.user_id)
        tick_until_all_stored(h)
        parent, *children = all_requests(h)
        merged = sorted(subject.merged_ids)
        assert merged and sorted(c.amplitude_id for c in children) == merged
        assert all(c.parent_id == parent.id and c.queue_id is None for c in children)
        assert all(c.start_date == parent.start_date for c in children)
        assert all(c.due_at == parent.due_at for c in children)
        coverage = manifest_of(h, parent)["coverage"]
        assert coverage["checked"] is True
        assert coverage["expected"] == sorted({subject.amplitude_id, *merged})
        assert coverage["found"] == [subject.amplitude_id]
        assert coverage["missing"] == merged
        assert coverage["supplements"] == [c.id for c in children]
        for child in children:
            # asked of Amplitude by that ID alone; its files hold it, under its own prefix
            assert child.remote_request_id is not None
            assert h.emulator.job(child.remote_request_id).amplitude_id == child.amplitude_id
            assert child.storage_prefix != parent.storage_prefix
            manifest = manifest_of(h, child)
            assert manifest["coverage"]["checked"] is False
            assert f"request {parent.id}" in manifest["coverage"]["why"]
            assert {a for f in manifest["files"] for a in f["amplitude_ids"]} == {
                child.amplitude_id
            }
        for _ in range(3):  # later ticks ask for nothing more
            h.clock.advance(timedelta(hours=6))
            h.tick()
        assert len(all_requests(h)) == 1 + len(merged)
        # the request is answered when its last supplement is stored: the deadline's view
        with h.app.sessions() as session:
            deadline = session.execute(text("SELECT deadline FROM dsar_queue_status")).scalar()
            session.execute(
                text("UPDATE dsar_requests SET stored_at = NULL WHERE id = :c"),
                {"c": children[0].id},
            )
            reopened = session.execute(text("SELECT deadline FROM dsar_queue_status")).scalar()
        assert (deadline, reopened) == ("met", "open")


def test_an_export_that_holds_every_id_asks_for_nothing_more(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with privacy_service(database_url, tmp_path, clock, emulator_options=FAST) as h:
        subject = pick_clear(h, merged=True)
        h.enqueue(None, "2025-01-01", "2025-01-31", user_id=subject.user_id)
        tick_until_all_stored(h)
        (parent,) = all_requests(h)
        coverage = manifest_of(h, parent)["coverage"]
        expected = sorted({subject.amplitude_id, *subject.merged_ids})
        assert coverage == {
            "checked": True,
            "why": None,
            "expected": expected,
            "found": expected,
            "missing": [],
            "supplements": [],
        }
        assert len(h.emulator.posts()) == 1


def test_a_store_stopped_after_the_supplements_were_made_makes_them_once(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest cannot be written once (as if the process stopped there): the next
    tick's completion sweep checks the coverage again, finds the same supplementary
    requests and writes the manifest naming them; none is made twice."""
    with missing_merged(database_url, tmp_path, clock) as h:
        subject = pick_clear(h, merged=True)
        put_bytes = h.app.storage.put_bytes
        refused: list[str] = []

        def refuse_first_manifest(key: str, data: bytes) -> None:
            if key.endswith("manifest.json") and not refused:
                refused.append(key)
                raise StorageError(f"{key}: refused by the test")
            put_bytes(key, data)

        monkeypatch.setattr(h.app.storage, "put_bytes", refuse_first_manifest)
        h.enqueue(None, "2025-01-01", "2025-01-31", user_id=subject.user_id)
        for _ in range(72):
            h.tick()
            if refused:
                break
            h.clock.advance(timedelta(hours=1))
        parent, *children = all_requests(h)
        assert parent.state != State.STORED and len(children) == len(subject.merged_ids)
        tick_until_all_stored(h)
        parent, *again = all_requests(h)
        assert [c.id for c in again] == [c.id for c in children]
        assert manifest_of(h, parent)["coverage"]["supplements"] == [c.id for c in children]


def test_a_deletion_asked_with_the_export_waits_for_the_supplementary_exports(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with missing_merged(database_url, tmp_path, clock) as h:
        subject = pick_clear(h, merged=True)
        h.enqueue(
            None,
            "2025-01-01",
            "2025-01-31",
            user_id=subject.user_id,
            request_type="access_and_deletion",
        )
        for _ in range(72):
            h.tick()
            parent, *children = all_requests(h)
            if parent.state not in {*BEFORE_STORED, State.STORED}:
                break
            if children and parent.state == State.STORED:
                # stored with its supplements still exporting: the deletion has not started
                assert any(c.state != State.STORED for c in children)
            h.clock.advance(timedelta(hours=1))
        parent, *children = all_requests(h)
        assert parent.state == State.RESOLVING or parent.state == State.DELETING
        assert children and all(c.state == State.STORED for c in children)
