"""``dsar cancel`` landing while the tick stores a request's last file and writes its manifest.

The rule (``Files.begin_store``): whichever compare-and-set commits first wins. Here the
cancel always commits first, from another process's ledger, at the worst moment: right before
the tick writes the manifest. The request must then stay cancelled, with no manifest in
storage (its files kept), and the audit trail must say what happened; also when the tick's
process dies right after writing the manifest, and when storage refuses to delete it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import make_engine
from dsar_scheduler.adapters.storage import Storage
from dsar_scheduler.core.manifest import MANIFEST_NAME
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.runtime import operations
from dsar_scheduler.runtime.status import describe_request
from tests.support.faultkit import BrokenStorage
from tests.support.harness import Harness, harness

FAST = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}
HALF_HOUR = timedelta(minutes=30)
PREFIX = "req-00000001"


class Crash(BaseException):
    """The process dies here (not an ``Exception``: nothing in the tick may handle it)."""


class ManifestHook(BrokenStorage):
    """Real storage; right before the first manifest write, ``before()`` runs (the cancel),
    and with ``crash_after`` the process 'dies' right after that write. ``where`` makes other
    operations fail, as ``BrokenStorage`` does."""

    def __init__(
        self,
        inner: Storage,
        before: Callable[[], None],
        crash_after: bool = False,
        where: tuple[str, ...] = (),
    ) -> None:
        super().__init__(inner, "s3_down", where)
        self.before = before
        self.crash_after = crash_after
        self.fired = False

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.fired or not key.endswith(f"/{MANIFEST_NAME}"):
            super().put_bytes(key, data)
            return
        self.fired = True
        self.before()
        super().put_bytes(key, data)
        if self.crash_after:
            raise Crash


@contextmanager
def operator_ledger(database_url: str) -> Iterator[Ledger]:
    """A ledger of its own engine, as ``dsar cancel`` in another process has."""
    engine = make_engine(database_url)
    try:
        yield Ledger(sessionmaker(engine, expire_on_commit=False), budget_limit=1)
    finally:
        engine.dispose()


def _finished_remotely(h: Harness) -> None:
    """One request (two files) submitted and finished at Amplitude; the next tick fetches
    both files and then writes the manifest."""
    h.enqueue(301, "2025-01-01", "2025-01-31")
    h.tick()
    remote = h.app.ledger.requests.get(1).remote_request_id  # type: ignore[union-attr]
    assert remote is not None
    h.emulator.complete(remote)
    h.clock.advance(HALF_HOUR)


def _cancel(database_url: str, h: Harness) -> Callable[[], None]:
    def cancel() -> None:
        with operator_ledger(database_url) as ledger:
            outcome = operations.cancel(ledger, 1, h.clock.now(), "subject withdrew")
        assert outcome.ok, outcome.message

    return cancel


def _stored_files(h: Harness) -> list[str]:
    folder = h.files_root / PREFIX
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _assert_cancelled_without_manifest(h: Harness) -> None:
    request = h.app.ledger.requests.get(1)
    assert request is not None and request.state == State.CANCELLED
    assert request.stored_at is None
    assert MANIFEST_NAME not in _stored_files(h)
    assert len(_stored_files(h)) == 2  # the verified files are kept, as the cancel said
    assert h.app.ledger.files.store_notes() == []
    events = h.app.ledger.requests.events(1)
    assert State.STORED not in [e.to_state for e in events]
    withdrawn = events[-1]
    assert (withdrawn.from_state, withdrawn.to_state) == (State.CANCELLED, State.CANCELLED)
    assert withdrawn.reason.startswith(f"{MANIFEST_NAME} withdrawn: the request is cancelled")
    assert f"2 stored file(s) stay under {PREFIX}/ without a manifest" in withdrawn.reason
    assert events[-2].to_state == State.CANCELLED and "subject withdrew" in events[-2].reason
    assert h.states() == {"cancelled": 1}


def test_a_cancel_landing_before_the_manifest_write_wins(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        _finished_remotely(h)
        hook = ManifestHook(h.app.storage, _cancel(database_url, h))
        h.app.storage = hook
        report = h.tick()
        assert hook.fired
        assert report.requests_stored == 0 and report.files_stored == 2
        _assert_cancelled_without_manifest(h)
        status = json.loads(describe_request(h.app.engine, 1, True) or "{}")
        assert status["state"] == "cancelled" and status["stored_at"] is None
        assert status["history"][-1]["reason"].startswith(f"{MANIFEST_NAME} withdrawn")
        h.app.storage = hook.inner
        for _ in range(3):  # later ticks leave it alone: no manifest comes back
            clock.advance(HALF_HOUR)
            h.tick()
        _assert_cancelled_without_manifest(h)


def test_the_process_dying_after_the_manifest_write_is_put_right_by_the_next_tick(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        _finished_remotely(h)
        h.app.storage = ManifestHook(h.app.storage, _cancel(database_url, h), crash_after=True)
        with pytest.raises(Crash):
            h.tick()
        assert MANIFEST_NAME in _stored_files(h)  # the moment after the crash: left behind
        assert [n[0] for n in h.app.ledger.files.store_notes()] == [1]
        h.app.storage = h.app.storage.inner  # type: ignore[attr-defined]
        clock.advance(HALF_HOUR)
        h.tick()
        _assert_cancelled_without_manifest(h)


def test_without_a_cancel_a_crash_after_the_manifest_write_still_ends_stored(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        _finished_remotely(h)
        h.app.storage = ManifestHook(h.app.storage, lambda: None, crash_after=True)
        with pytest.raises(Crash):
            h.tick()
        h.app.storage = h.app.storage.inner  # type: ignore[attr-defined]
        clock.advance(HALF_HOUR)
        h.tick()
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.state == State.STORED
        assert MANIFEST_NAME in _stored_files(h)
        assert h.app.ledger.files.store_notes() == []


def test_storage_refusing_to_withdraw_the_manifest_is_retried_next_tick(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        _finished_remotely(h)
        hook = ManifestHook(h.app.storage, _cancel(database_url, h), where=("delete",))
        h.app.storage = hook
        report = h.tick()
        assert report.outcome == "error" and any(e.startswith("storage: ") for e in report.errors)
        assert MANIFEST_NAME in _stored_files(h)
        assert [n[0] for n in h.app.ledger.files.store_notes()] == [1]
        hook.failing = False  # storage is back
        clock.advance(HALF_HOUR)
        h.tick()
        _assert_cancelled_without_manifest(h)


def test_a_cancel_before_the_last_file_means_no_manifest_is_written(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """Cancelled before the tick reaches the manifest: nothing is written, nothing undone."""
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        _finished_remotely(h)
        writes: list[str] = []
        hook = ManifestHook(h.app.storage, lambda: writes.append("manifest"))
        h.app.storage = hook
        cancel = _cancel(database_url, h)
        original = h.app.ledger.files.begin_store

        def cancel_then_begin(request_id: int, key: str, now: object) -> bool:
            cancel()
            return original(request_id, key, now)  # type: ignore[arg-type]

        h.app.ledger.files.begin_store = cancel_then_begin  # type: ignore[method-assign]
        h.tick()
        assert writes == []
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.state == State.CANCELLED
        assert MANIFEST_NAME not in _stored_files(h)
        assert h.app.ledger.requests.events(1)[-1].to_state == State.CANCELLED
        assert h.app.ledger.files.store_notes() == []
