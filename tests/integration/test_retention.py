"""Retention with proof, through whole ticks on the fake clock, on SQLite and PostgreSQL, on
local disk and S3: a request inside its retention is untouched; past it, its files and
manifest leave storage, its file rows keep name, bytes and sha256 with when they were removed,
and it shows ``purged`` with the events that say what went. A purge stopped anywhere (a
process killed between a delete and its mark, storage refusing) resumes and finishes once;
``dsar delivered`` brings the purge forward; records past DSAR_RECORD_RETENTION_DAYS are cut
to tombstones, and the queue row is never admitted again."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import Event, File, QueueRow, Request, make_engine
from dsar_scheduler.adapters.storage import Storage
from dsar_scheduler.core.manifest import MANIFEST_NAME
from dsar_scheduler.core.retention import purge_due_at
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.runtime import cli
from dsar_scheduler.runtime.retention_cli import mark_delivered
from dsar_scheduler.runtime.status import describe_request
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.purge import retention_policy
from tests.support.faultkit import BrokenStorage
from tests.support.harness import Harness, harness
from tests.support.s3_server import (  # noqa: F401  (the s3_server and s3_bucket fixtures)
    S3Bucket,
    s3_bucket_fixture,
    s3_server_fixture,
)

FAST = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
PREFIX = "req-00000001"


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings of one storage backend (S3: a fresh bucket on the loopback server)."""
    if request.param == "local":
        return {}
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return {"storage_url": f"s3://{bucket.name}/dsar", "s3_endpoint_url": bucket.endpoint_url}


@pytest.fixture
def h(
    database_url: str, tmp_path: Path, clock: FakeClock, backend: dict[str, Any]
) -> Iterator[Harness]:
    with harness(database_url, tmp_path, clock, emulator_options=FAST, **backend) as running:
        yield running


# -- helpers ------------------------------------------------------------------------------


def store(h: Harness, amplitude_id: int = 101, ref: str | None = None) -> int:
    """One more subject enqueued and ticked until its export is stored; its request id."""
    h.enqueue(amplitude_id, "2025-01-01", "2025-02-28", external_ref=ref)
    h.tick()
    with h.app.sessions() as session:
        rid = int(session.scalar(select(func.max(Request.id))) or 0)

    def stored() -> bool:
        request = h.app.ledger.requests.get(rid)
        return request is not None and request.state == State.STORED

    h.run_until(stored)
    return rid


def row(h: Harness, rid: int) -> Any:
    with h.app.sessions() as session:
        return session.execute(select(Request).where(Request.id == rid)).scalar_one()


def files(h: Harness, rid: int) -> list[tuple[str, int | None, str | None, datetime | None]]:
    with h.app.sessions() as session:
        return [
            tuple(r)  # type: ignore[misc]
            for r in session.execute(
                select(File.name, File.bytes, File.sha256, File.purged_at)
                .where(File.request_id == rid)
                .order_by(File.id)
            )
        ]


def events(h: Harness, rid: int) -> list[tuple[str | None, str, str]]:
    return [(e.from_state, e.to_state, e.reason) for e in h.app.ledger.requests.events(rid)]


def due(h: Harness, rid: int) -> datetime:
    r = row(h, rid)
    when = purge_due_at(
        retention_policy(h.app.settings), r.stored_at, r.delivered_at, r.extended_until or r.due_at
    )
    assert when is not None
    return when


def tick_at(h: Harness, when: datetime) -> None:
    """Tick at ``when``, and again an hour later (new purges are looked for hourly)."""
    h.clock.set(when)
    h.tick()
    h.clock.advance(HOUR)
    h.tick()


def sample(h: Harness, name: str, labels: dict[str, str] | None = None) -> float:
    value = h.app.metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def manifest_digest(storage: Storage, prefix: str = PREFIX) -> str:
    return hashlib.sha256(storage.read_bytes(f"{prefix}/{MANIFEST_NAME}")).hexdigest()


class Crash(BaseException):
    """The process dies here (not an ``Exception``: nothing in the tick may handle it)."""


class DiesAfterDelete(BrokenStorage):
    """Real storage; the ``nth`` file delete reaches storage and then the process 'dies',
    before the ledger marks the file purged (``kill -9`` at the worst moment)."""

    def __init__(self, inner: Storage, nth: int) -> None:
        super().__init__(inner, "s3_down", ())
        self.nth, self.deletes = nth, 0

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        self.deletes += 1
        if self.deletes == self.nth:
            raise Crash


# -- the purge ----------------------------------------------------------------------------


def test_inside_its_retention_untouched_past_it_purged_with_its_record(h: Harness) -> None:
    rid = store(h)
    r = row(h, rid)
    listed = h.app.storage.list("")
    digest = manifest_digest(h.app.storage)
    before = files(h, rid)
    assert len(before) >= 2 and all(f[3] is None for f in before)
    assert sorted(listed) == sorted(
        [f"{PREFIX}/{f[0]}" for f in before] + [f"{PREFIX}/manifest.json"]
    )
    when = due(h, rid)
    assert when >= r.stored_at + 30 * DAY  # the default, or later for the legal deadline

    tick_at(h, when - 2 * HOUR)  # one hour short of it, twice: nothing moves
    assert row(h, rid).state == State.STORED
    assert h.app.storage.list("") == listed
    assert files(h, rid) == before

    tick_at(h, when)
    purged = row(h, rid)
    assert purged.state == State.PURGED and purged.purged_at is not None
    assert h.app.storage.list("") == []  # files, manifest, everything under the folder
    after = files(h, rid)
    assert [f[:3] for f in after] == [f[:3] for f in before]  # names, bytes, sha256 kept
    assert all(f[3] is not None and f[3] >= when for f in after)
    started, finished = events(h, rid)[-2:]
    assert started[:2] == (State.STORED, State.PURGING)
    assert "kept 30 day(s) (DSAR_RESULT_RETENTION_DAYS)" in started[2]
    assert f"manifest.json (sha256 {digest})" in started[2]
    size = sum(f[1] or 0 for f in before)
    assert finished == (
        State.PURGING,
        State.PURGED,
        f"purged: {len(before)} file(s), {size} bytes removed from storage, and manifest.json "
        f"(sha256 {digest}); each file's name, bytes and sha256 are kept as the record",
    )
    with h.app.sessions() as session:
        view = session.execute(
            text("SELECT state, purged_at FROM dsar_queue_status WHERE request_id = :r"), {"r": rid}
        ).one()
    assert view[0] == "purged" and view[1] is not None
    status = describe_request(h.app.engine, rid, False) or ""
    assert "nothing: its files were removed from storage at the end of their retention" in status
    assert status.count("(purged ") == len(before)  # every file row, with when it went
    assert sample(h, "dsar_files_purged_total") == len(before)
    assert sample(h, "dsar_bytes_purged_total") == size
    assert sample(h, "dsar_request_transitions_total", {"to_state": "purged"}) == 1
    assert sample(h, "dsar_requests", {"state": "stored"}) == 1  # ever stored
    assert sample(h, "dsar_requests", {"state": "purged"}) == 1
    assert sample(h, "dsar_purge_backlog") == 0
    assert sample(h, "dsar_purge_failures_total") == 0


def test_only_the_requests_past_their_retention_go(h: Harness) -> None:
    first = store(h, 101)
    h.clock.advance(10 * DAY)
    second = store(h, 102)
    tick_at(h, due(h, first))
    assert row(h, first).state == State.PURGED
    assert row(h, second).state == State.STORED
    assert h.app.storage.list("req-00000002") != []
    tick_at(h, due(h, second))
    assert row(h, second).state == State.PURGED
    assert h.app.storage.list("") == []


def test_killed_between_a_delete_and_its_mark_the_purge_resumes_and_ends_once(
    h: Harness,
) -> None:
    rid = store(h)
    before = files(h, rid)
    digest = manifest_digest(h.app.storage)
    real = h.app.storage
    h.app.storage = DiesAfterDelete(real, nth=2)
    h.clock.set(due(h, rid) + HOUR)
    with pytest.raises(Crash):
        h.tick()
    half = row(h, rid)
    assert half.state == State.PURGING  # never half purged without saying so
    assert half.reason.startswith(f"purging: 1 of {len(before)} file(s) removed from storage")
    assert "purge under way: 1 of" in (describe_request(h.app.engine, rid, False) or "")
    marked = [f for f in files(h, rid) if f[3] is not None]
    assert len(marked) == 1  # the second file is gone from storage, not yet marked
    assert len(real.list(PREFIX)) == len(before) - 1  # the rest and the manifest

    h.app.storage = real  # the process restarts; its next tick carries on
    h.clock.advance(HOUR)
    h.tick()
    assert row(h, rid).state == State.PURGED
    assert real.list("") == []
    assert all(f[3] is not None for f in files(h, rid))
    moves = [(a, b) for a, b, _ in events(h, rid) if a != b]
    assert moves[-2:] == [(State.STORED, State.PURGING), (State.PURGING, State.PURGED)]
    assert f"sha256 {digest}" in events(h, rid)[-1][2]  # the digest taken before the crash
    trail = events(h, rid)
    h.clock.advance(2 * HOUR)
    h.tick()
    assert events(h, rid) == trail  # finished once: later ticks add nothing
    assert [e[1] for e in trail].count(State.PURGING) == 1


def test_killed_after_the_manifest_went_the_purge_still_ends_with_its_digest(
    h: Harness,
) -> None:
    """The last delete (the manifest) done, the process dies before ``finish``: the digest
    the note kept ends up in the audit trail, though the manifest is gone."""
    rid = store(h)
    digest = manifest_digest(h.app.storage)
    count = len(files(h, rid))
    real = h.app.storage
    h.app.storage = DiesAfterDelete(real, nth=count + 1)  # every file, then the manifest
    h.clock.set(due(h, rid) + HOUR)
    with pytest.raises(Crash):
        h.tick()
    assert real.list("") == [] and row(h, rid).state == State.PURGING
    h.app.storage = real
    h.clock.advance(HOUR)
    h.tick()
    assert row(h, rid).state == State.PURGED
    assert f"manifest.json (sha256 {digest})" in events(h, rid)[-1][2]


def test_storage_refusing_deletes_is_counted_and_retried(h: Harness) -> None:
    rid = store(h)
    listed = h.app.storage.list("")
    broken = BrokenStorage(h.app.storage, "s3_down", ["delete"])
    h.app.storage = broken
    when = due(h, rid) + HOUR
    h.clock.set(when)
    report = h.tick()
    assert report.outcome == "ok"  # the tick's own work is unaffected
    assert report.purge_failures == 1 and broken.failures == 1
    assert row(h, rid).state == State.PURGING
    assert broken.inner.list("") == listed  # nothing removed, nothing marked
    assert all(f[3] is None for f in files(h, rid))
    assert sample(h, "dsar_purge_failures_total") == 1
    assert sample(h, "dsar_purge_backlog") == 1
    h.clock.advance(3 * HOUR)
    h.tick()  # still refused: counted again
    assert sample(h, "dsar_purge_failures_total") == 2
    assert sample(h, "dsar_purge_overdue_seconds") >= 3 * 3600
    broken.failing = False
    h.clock.advance(HOUR)
    h.tick()
    assert row(h, rid).state == State.PURGED
    assert broken.inner.list("") == []
    assert sample(h, "dsar_purge_backlog") == 0
    assert sample(h, "dsar_purge_overdue_seconds") == 0


def test_the_work_per_tick_is_bounded_and_the_rest_follows(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = store(h)
    total = len(files(h, rid))
    monkeypatch.setattr(limits, "PURGE_FILES", 1)
    h.clock.set(due(h, rid) + HOUR)
    h.tick()
    assert row(h, rid).state == State.PURGING
    assert sum(f[3] is not None for f in files(h, rid)) == 1
    for _ in range(total):
        h.clock.advance(timedelta(minutes=30))
        h.tick()
    assert row(h, rid).state == State.PURGED
    assert h.app.storage.list("") == []


def test_two_replicas_on_one_purge_finish_it_once_and_never_before_its_time(
    h: Harness, database_url: str
) -> None:
    """The tick lease keeps replicas apart, but each step is a compare-and-set anyway: a
    second process beginning, marking and finishing the same purge adds nothing; and the
    check under the row lock refuses a request still inside its retention."""
    rid = store(h)
    policy = retention_policy(h.app.settings)
    when = due(h, rid)
    mine = h.app.ledger.retention
    engine = make_engine(database_url)
    try:
        theirs = Ledger(sessionmaker(engine, expire_on_commit=False), budget_limit=1).retention
        [target] = mine.due(when, policy, 10)
        assert not mine.begin(target, policy, when - timedelta(seconds=1), None)  # too early
        assert row(h, rid).state == State.STORED
        assert mine.begin(target, policy, when, "d" * 64)
        assert theirs.begin(target, policy, when, "e" * 64)  # under way already: no second start
        for file in mine.unpurged_files(target, when, policy):
            h.app.storage.delete(f"{PREFIX}/{file.name}")
            mine.file_purged(rid, file.id, when)
            theirs.file_purged(rid, file.id, when + HOUR)  # marked once: the first time stays
        h.app.storage.delete(f"{PREFIX}/{MANIFEST_NAME}")
        assert mine.finish(target, policy, when, whole_folder=True)
        assert not theirs.finish(target, policy, when, whole_folder=True)
    finally:
        engine.dispose()
    moves = [(a, b) for a, b, _ in events(h, rid) if a != b]
    assert moves.count((State.STORED, State.PURGING)) == 1
    assert moves.count((State.PURGING, State.PURGED)) == 1
    assert "sha256 " + "d" * 64 in events(h, rid)[-1][2]
    assert {f[3] for f in files(h, rid)} == {when}
    assert h.app.storage.list("") == []


# -- dsar delivered -----------------------------------------------------------------------


def test_delivered_with_purge_on_delivery_purges_at_the_next_tick(
    database_url: str, tmp_path: Path, clock: FakeClock, backend: dict[str, Any]
) -> None:
    with harness(
        database_url, tmp_path, clock, emulator_options=FAST, purge_on_delivery=True, **backend
    ) as h:
        rid = store(h)
        tick_at(h, clock.now() + DAY)  # the purge check has run since: nothing due
        assert row(h, rid).state == State.STORED
        ok, message = mark_delivered(
            h.app.ledger, h.app.settings, rid, "sent by email", clock.now()
        )
        assert ok, message
        assert message == f"request {rid}: marked delivered; its files are purged at the next tick"
        delivered = events(h, rid)[-1]
        assert delivered == (
            State.STORED,
            State.STORED,
            "delivered to the consumer, marked by an operator (sent by email)",
        )
        h.clock.advance(timedelta(minutes=5))
        h.tick()  # within the hour: the mark made the purge check due at once
        assert row(h, rid).state == State.PURGED
        assert (
            "delivered" in events(h, rid)[-2][2]
            and "DSAR_PURGE_ON_DELIVERY" in events(h, rid)[-2][2]
        )
        assert h.app.storage.list("") == []
        again, refusal = mark_delivered(h.app.ledger, h.app.settings, rid, None, clock.now())
        assert not again
        assert refusal == (
            f"request {rid} cannot be marked delivered: it is purged: its files are already "
            "removed from storage"
        )


def test_delivered_lifts_the_deadline_hold_and_is_refused_with_why(h: Harness) -> None:
    rid = store(h)
    with h.app.sessions() as session, session.begin():  # a deadline past the retention
        session.execute(
            update(Request)
            .where(Request.id == rid)
            .values(due_at=row(h, rid).stored_at + 60 * DAY, extended_until=None)
        )
    held = due(h, rid)
    assert held == row(h, rid).stored_at + 60 * DAY  # undelivered: kept until the deadline
    tick_at(h, row(h, rid).stored_at + 31 * DAY)
    assert row(h, rid).state == State.STORED
    ok, message = mark_delivered(h.app.ledger, h.app.settings, rid, None, h.clock.now())
    assert ok and "marked delivered; its files are purged at the next tick" in message
    assert events(h, rid)[-1][2] == "delivered to the consumer, marked by an operator"
    twice, why = mark_delivered(h.app.ledger, h.app.settings, rid, None, h.clock.now())
    assert not twice and "it was already marked delivered at" in why
    h.clock.advance(timedelta(minutes=5))
    h.tick()
    assert row(h, rid).state == State.PURGED
    h.enqueue(103)
    h.tick()
    refused, why = mark_delivered(h.app.ledger, h.app.settings, rid + 1, None, h.clock.now())
    assert not refused and why.endswith("not stored: only a stored export can be delivered")
    nobody, why = mark_delivered(h.app.ledger, h.app.settings, 999, None, h.clock.now())
    assert not nobody and why == "no request 999"


def test_the_delivered_command(
    database_url: str,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        rid = store(h)
    monkeypatch.setenv("DSAR_DATABASE_URL", database_url)
    capsys.readouterr()  # the ticks' own log lines
    assert cli.main(["delivered", str(rid), "--reason", "portal download"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"request {rid}: marked delivered; its files are purged ")
    assert cli.main(["delivered", str(rid)]) == 1
    assert "already marked delivered" in capsys.readouterr().err


# -- files left by requests in other states -------------------------------------------------


def test_files_kept_after_a_cancel_are_purged_and_the_request_stays_cancelled(
    h: Harness,
) -> None:
    """``dsar cancel`` keeps the files already stored; they go at the end of their retention,
    the request stays cancelled (a retry may still queue it), and the trail says so."""
    h.enqueue(301, "2025-01-01", "2025-01-31")
    h.tick()
    remote = row(h, 1).remote_request_id
    h.emulator.complete(remote)
    h.clock.advance(timedelta(minutes=30))
    storage = h.app.storage
    h.app.storage = _CancelBeforeManifest(storage, h)
    h.tick()
    h.app.storage = storage
    assert row(h, 1).state == State.CANCELLED
    kept = storage.list(PREFIX)
    assert kept and f"{PREFIX}/{MANIFEST_NAME}" not in kept
    stored_at = max(f.stored_at for f in h.app.ledger.files.of(1, remote) if f.stored_at)
    tick_at(h, stored_at + 30 * DAY - 2 * HOUR)
    assert storage.list(PREFIX) == kept
    tick_at(h, stored_at + 30 * DAY)
    assert storage.list("") == []
    cancelled = row(h, 1)
    assert cancelled.state == State.CANCELLED and cancelled.purged_at is not None
    began, ended = events(h, 1)[-2:]
    assert began[:2] == ended[:2] == (State.CANCELLED, State.CANCELLED)
    assert began[2].startswith("purge started: the request is cancelled; its files stored before")
    assert ended[2].startswith(f"purged: {len(kept)} file(s)")
    assert "manifest" not in ended[2]
    assert all(f[3] is not None for f in files(h, 1))


class _CancelBeforeManifest(BrokenStorage):
    """``dsar cancel`` lands right before the manifest is written: every file stored, the
    request cancelled, no manifest (as in test_cancel_race)."""

    def __init__(self, inner: Storage, h: Harness) -> None:
        super().__init__(inner, "s3_down", ())
        self.h = h

    def put_bytes(self, key: str, data: bytes) -> None:
        if key.endswith(MANIFEST_NAME):
            from dsar_scheduler.runtime import operations

            assert operations.cancel(self.h.app.ledger, 1, self.h.clock.now(), "withdrawn").ok
        self.inner.put_bytes(key, data)


# -- record retention -------------------------------------------------------------------------


def test_records_past_their_retention_become_tombstones_and_are_never_admitted_again(
    h: Harness,
) -> None:
    old = store(h, 101, ref="T-1")
    h.enqueue(None, external_ref="T-bad")  # no subject: rejected
    h.tick()
    rejected = old + 1
    assert row(h, rejected).state == State.REJECTED
    tick_at(h, due(h, old))
    assert row(h, old).state == State.PURGED
    purged_at = row(h, old).purged_at
    young = store(h, 102, ref="T-2")
    tick_at(h, due(h, young))
    assert row(h, young).state == State.PURGED
    queue_rows = _count(h, QueueRow)

    tick_at(h, purged_at + 730 * DAY - 2 * HOUR)  # a day short of two years: all kept
    assert row(h, old).amplitude_id == 101 and _events_of(h, old) > 0

    tick_at(h, purged_at + 730 * DAY + HOUR)
    gone = row(h, old)
    assert gone.state == State.PURGED  # the tombstone keeps what the counts need
    assert (gone.amplitude_id, gone.external_ref, gone.start_date, gone.storage_prefix) == (
        None,
        None,
        None,
        None,
    )
    assert gone.purged_at is None and gone.chain_head is None and gone.stored_at is not None
    assert gone.reason.startswith("record removed ") and "DSAR_RECORD_RETENTION_DAYS" in gone.reason
    assert _events_of(h, old) == 0 and files(h, old) == []
    tomb = row(h, rejected)  # rejected at about the same time: gone too
    assert tomb.state == State.REJECTED and tomb.reason.startswith("record removed ")
    assert _events_of(h, rejected) == 0
    kept = row(h, young)  # purged later: still inside its record retention
    assert kept.amplitude_id == 102 and _events_of(h, young) > 0 and files(h, young)
    assert sample(h, "dsar_records_removed_total") == 2
    assert sample(h, "dsar_requests", {"state": "stored"}) == 2  # ever stored, still

    with h.app.sessions() as session:  # upstream's queue rows are never touched
        assert session.scalar(select(QueueRow.amplitude_id).where(QueueRow.id == 1)) == 101
    h.clock.advance(2 * DAY)  # past the daily full sweep of the queue
    h.tick()
    h.clock.advance(HOUR)
    h.tick()
    assert _count(h, QueueRow) == queue_rows
    assert _count(h, Request) == queue_rows  # no queue row admitted a second time
    assert row(h, old).reason.startswith("record removed ")


def test_never_purge_when_the_retention_is_zero(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(
        database_url, tmp_path, clock, emulator_options=FAST, result_retention_days=0
    ) as h:
        rid = store(h)
        listed = h.app.storage.list("")
        tick_at(h, clock.now() + 400 * DAY)
        assert row(h, rid).state == State.STORED
        assert h.app.storage.list("") == listed


def _count(h: Harness, model: Any) -> int:
    with h.app.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _events_of(h: Harness, rid: int) -> int:
    with h.app.sessions() as session:
        return int(
            session.scalar(select(func.count()).select_from(Event).where(Event.request_id == rid))
            or 0
        )
