"""A deletion's evidence bundle, on SQLite and PostgreSQL: its entries and every receipt, each
cut to its own subject though the POST and the listings name others, sealed and verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import DeletionReceipt
from dsar_scheduler.adapters.storage import LocalStorage
from dsar_scheduler.core.seal import verify_bundle
from dsar_scheduler.runtime.evidence import build_bundle
from tests.support.deletion_service import (
    QUICK_JOBS,
    new_deletion,
    pick_clear,
    run_days,
    service,
    state_of,
)
from tests.support.privacy_emulator import START


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def test_a_deletion_bundle_holds_its_receipts_and_no_one_else(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock, **QUICK_JOBS) as h:
        first, second = pick_clear(h, merged=False), pick_clear(h, merged=False, skip=1)
        ours, theirs = new_deletion(h, first.user_id), new_deletion(h, second.user_id)
        run_days(h, [ours, theirs], "deleted", days=6)
        assert state_of(h, ours) == "deleted"
        with h.app.sessions() as session:
            bodies = session.scalars(
                select(DeletionReceipt.body).where(DeletionReceipt.request_id == ours)
            ).all()
        # the answers as kept name the other subject too (one POST per project for both)
        assert any(str(second.amplitude_id) in body for body in bodies)
        storage = LocalStorage(tmp_path / "files")
        files = build_bundle(h.app.settings, storage, ours, clock.now())
    assert files is not None
    document = json.loads(files["deletion_receipts.json"])
    assert {e["state"] for e in document["entries"]} == {"verified"}
    kinds = [r["kind"] for r in document["receipts"]]
    assert {"search", "post", "listing", "verify"} <= set(kinds)
    # only ours is in the bundle
    text = json.dumps(document)
    assert str(first.amplitude_id) in text
    assert str(second.amplitude_id) not in text and second.user_id not in text
    assert all(len(r["sha256"]) == 64 for r in document["receipts"])
    assert verify_bundle(files, None).ok
