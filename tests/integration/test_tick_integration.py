"""Whole ticks over real loopback HTTP against the emulator, on SQLite and PostgreSQL, with one
fake clock shared by the service and the emulator (no wall-clock waiting)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.core.states import State
from tests.support.harness import Harness, harness

FAST = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}


def stored_files(h: Harness) -> list[Path]:
    return sorted(p for p in h.files_root.rglob("*") if p.is_file())


def assert_stored_and_verified(h: Harness, request_id: int) -> dict[str, object]:
    request = h.app.ledger.requests.get(request_id)
    assert request is not None and request.state == State.STORED, request
    folder = h.files_root / str(request.storage_prefix)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert request.remote_request_id is not None
    expected = h.emulator.expected_files(request.remote_request_id)
    assert [f["sha256"] for f in manifest["files"]] == [e.sha256 for e in expected]
    assert [f["event_count"] for f in manifest["files"]] == [e.events for e in expected]
    for entry in manifest["files"]:
        data = (folder / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f["name"] for f in manifest["files"]] + ["manifest.json"]
    )
    return manifest


def test_happy_path_to_stored_and_verified_files(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(123456789, "2025-01-01", "2025-03-31", external_ref="T-1")
        h.enqueue(987654321, "2025-06-01", "2025-06-30", external_ref="T-2")
        h.run_until(h.all_final)
        manifests = [assert_stored_and_verified(h, rid) for rid in (1, 2)]
        assert len(manifests[0]["files"]) == 6  # 3 months x 2 projects  # type: ignore[arg-type]
        assert manifests[0]["subject"] == {"amplitude_id": 123456789}
        assert manifests[1]["date_range"] == {"start": "2025-06-01", "end": "2025-06-30"}
        assert manifests[1]["external_ref"] == "T-2"
        # personal data is private: files 0600, folders 0700
        for path in stored_files(h):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        for folder in [h.files_root, *(p for p in h.files_root.rglob("*") if p.is_dir())]:
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        # the audit trail tells the whole story
        history = [e.to_state for e in h.app.ledger.requests.events(1)]
        assert history == ["queued", "submitting", "submitted", "done", "fetching", "stored"]
        assert h.emulator.rate_limited_count() == 0
        assert h.emulator.s3_calls_with_authorization() == []
        # the ledger's cost equals the emulator's record of calls
        with h.app.sessions() as session:
            ledger_cost = session.execute(text("SELECT SUM(cost) FROM dsar_api_calls")).scalar()
        assert ledger_cost == h.emulator.cost_spent_total()
        with h.app.sessions() as session:
            view = session.execute(
                text("SELECT external_ref, state FROM dsar_queue_status ORDER BY queue_id")
            ).all()
        assert [tuple(v) for v in view] == [("T-1", "stored"), ("T-2", "stored")]


def test_bad_rows_are_rejected_and_the_rest_progress(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(1001, external_ref="GOOD-1")
        h.enqueue(None, external_ref="NO-ID")
        h.enqueue(-4, external_ref="NEGATIVE")
        h.enqueue(1002, "2025-05-01", "2025-01-01", external_ref="BACKWARDS")
        h.enqueue(1003, "2027-01-01", "2027-02-01", external_ref="FUTURE")
        h.enqueue(1004, "2020-01-01", "2025-01-01", external_ref="TOO-LONG")
        h.enqueue(1001, external_ref="GOOD-1")  # duplicate ref
        h.enqueue(1005, external_ref="GOOD-2")
        if "sqlite" in database_url:  # only SQLite lets these in; PostgreSQL refuses at INSERT
            h.enqueue("abc", external_ref="NOT-INT")
            h.enqueue(1006, "yesterday", "2025-02-01", external_ref="NOT-DATE")
            h.enqueue(1007, "2025-02-30", "2025-03-01", external_ref="BAD-DAY")
        report = h.tick()
        assert report.outcome == "ok"
        with h.app.sessions() as session:
            view = {
                r.external_ref: (r.state, r.reason)
                for r in session.execute(
                    text(
                        "SELECT external_ref, state, reason"
                        " FROM dsar_queue_status ORDER BY queue_id"
                    )
                )
            }
        reasons = {ref: reason for ref, (state, reason) in view.items() if state == "rejected"}
        assert "amplitude_id is missing" in reasons["NO-ID"]
        assert "must be positive" in reasons["NEGATIVE"]
        assert "before start_date" in reasons["BACKWARDS"]
        assert "in the future" in reasons["FUTURE"]
        assert "longer than" in reasons["TOO-LONG"]
        if "sqlite" in database_url:
            assert "not an integer" in reasons["NOT-INT"]
            assert "not a date" in reasons["NOT-DATE"]
            assert "not a valid calendar date" in reasons["BAD-DAY"]
        with h.app.sessions() as session:
            dup = session.execute(
                text(
                    "SELECT state, reason FROM dsar_queue_status WHERE external_ref='GOOD-1' "
                    "ORDER BY queue_id"
                )
            ).all()
        assert [d.state for d in dup] == ["submitted", "rejected"]
        assert "duplicate external_ref" in dup[1].reason
        h.run_until(h.all_final)
        assert h.states()["stored"] == 2
        assert len(h.emulator.posts()) == 2


def test_a_queue_far_larger_than_the_budget_never_draws_a_429(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    # A small org budget so that 40 subjects are many hours of it.
    with harness(
        database_url,
        tmp_path,
        clock,
        cost_budget_per_hour=300,
        emulator_options={**FAST, "budget_per_hour": 300},
    ) as h:
        for n in range(40):
            h.enqueue(5000 + n, "2025-01-01", "2025-02-28")
        reports = h.run_until(h.all_final, max_ticks=200)
        assert h.states() == {"stored": 40}
        assert h.emulator.rate_limited_count() == 0
        assert any(r.stopped_by == "budget window full" for r in reports) or any(
            r.submitted < 20 for r in reports[:3]
        )
        # the budget really bound: no hour of the emulator's record exceeds 300 x 0.8
        calls = sorted(h.emulator.calls("api"), key=lambda c: c.at)
        for i, first in enumerate(calls):
            window = sum(c.cost for c in calls[i:] if c.at < first.at + timedelta(hours=1))
            assert window <= 240


def test_a_failed_job_is_resubmitted(database_url: str, tmp_path: Path, clock: FakeClock) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(42)
        h.tick()
        first = h.app.ledger.requests.get(1)
        assert first is not None and first.remote_request_id is not None
        h.emulator.fail(first.remote_request_id, "Query timed out")
        clock.advance(timedelta(minutes=30))
        report = h.tick()
        assert report.failed == 1 and report.submitted == 1  # failed, then resubmitted
        h.run_until(h.all_final)
        request = assert_stored_and_verified(h, 1)
        assert request["amplitude_request_id"] != first.remote_request_id
        reasons = [e.reason for e in h.app.ledger.requests.events(1)]
        assert any("Query timed out" in r for r in reasons)
        assert len(h.emulator.posts()) == 2


def test_a_job_that_keeps_failing_dies_with_its_reason(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(
        database_url,
        tmp_path,
        clock,
        max_failed_resubmits=1,
        emulator_options={**FAST, "fail_rate": 1.0},
    ) as h:
        h.enqueue(42)
        h.run_until(h.all_final)
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.state == State.DEAD
        assert "failed 2 times" in (request.reason or "")
        assert len(h.emulator.posts()) == 2


def test_an_expired_result_is_resubmitted(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(77)
        h.tick()
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.remote_request_id is not None
        first_remote = request.remote_request_id
        h.emulator.complete(first_remote)
        # S3 is down for a while: every download fails, so results sit unfetched...
        h.emulator.faults.set("s3", http_5xx_rate=1.0)
        clock.advance(timedelta(minutes=30))
        h.tick()
        assert h.app.ledger.requests.get(1).state in (State.DONE, State.FETCHING)  # type: ignore[union-attr]
        # ...until they expire (two days after done)
        clock.advance(timedelta(days=2))
        report = h.tick()
        assert report.expired == 1
        h.emulator.faults.clear()
        h.run_until(h.all_final)
        manifest = assert_stored_and_verified(h, 1)
        assert manifest["amplitude_request_id"] != first_remote
        assert [e.to_state for e in h.app.ledger.requests.events(1)].count("expired") == 1


def test_a_torn_download_is_retried_and_never_left_under_its_final_name(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(88, "2025-01-01", "2025-01-31")
        h.tick()
        remote = h.app.ledger.requests.get(1).remote_request_id  # type: ignore[union-attr]
        assert remote is not None
        h.emulator.complete(remote)
        h.emulator.faults.script("s3", "torn", count=1)
        h.emulator.faults.script("s3", "truncated", count=1)
        clock.advance(timedelta(minutes=30))
        report = h.tick()
        assert h.emulator.faults.pending() == 0
        assert report.files_stored == 0  # both files of the month failed verification
        names = [p.name for p in stored_files(h)]
        assert names == []  # nothing under a final name, and no temporaries left
        assert list(h.files_root.rglob(".*")) == []
        h.run_until(h.all_final)
        assert_stored_and_verified(h, 1)
        errors = [f.last_error for f in h.app.ledger.files.of(1, remote)]
        assert errors == [None, None]


def test_credentials_never_reach_the_presigned_origin(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(
        database_url, tmp_path, clock, emulator_options={**FAST, "s3_content_encoding_gzip": True}
    ) as h:
        h.enqueue(99, "2025-01-01", "2025-02-28")
        h.run_until(h.all_final)
        assert_stored_and_verified(h, 1)  # raw gzip kept despite Content-Encoding: gzip
        s3_calls = h.emulator.calls("s3")
        assert len(s3_calls) == 4
        assert not any(c.authorization_present for c in s3_calls)
        assert all(c.authorization_present for c in h.emulator.calls("api"))


def test_429_from_another_client_backs_off_across_ticks(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(5)
        h.emulator.spend_external(14400)  # the rest of the org spent the whole budget
        report = h.tick()
        assert report.stopped_by == "rate limited"
        assert h.emulator.rate_limited_count() == 1
        backoff = h.app.ledger.budget.backoff_until(clock.now())
        assert backoff is not None and backoff > clock.now() + timedelta(minutes=50)
        clock.advance(timedelta(minutes=30))
        h.tick()  # still backing off: no call at all
        assert len(h.emulator.calls("api")) == 1
        assert h.app.ledger.requests.get(1).state == State.QUEUED  # type: ignore[union-attr]
        h.run_until(h.all_final)
        assert h.emulator.rate_limited_count() == 1


def test_429_without_retry_after_backs_off_exponentially(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(
        database_url, tmp_path, clock, emulator_options={**FAST, "send_retry_after": False}
    ) as h:
        h.enqueue(5)
        h.emulator.faults.script("api", "429", count=3)
        waits = []
        for _ in range(3):
            h.tick()
            until = h.app.ledger.budget.backoff_until(clock.now())
            assert until is not None
            waits.append((until - clock.now()).total_seconds())
            clock.set(until)
        assert waits[0] < waits[2]  # grows (base 60 s, doubling, equal jitter)
        h.run_until(h.all_final)


def test_a_crash_mid_submit_is_recovered(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(5)
        h.tick()  # admitted and submitted
        # simulate a process that reserved, moved to submitting, and died before recording
        with h.app.sessions() as session, session.begin():  # a state, written past the ledger
            session.execute(text("UPDATE dsar_requests SET state = 'submitting' WHERE id = 1"))
        clock.advance(timedelta(minutes=30))
        h.tick()
        events = h.app.ledger.requests.events(1)
        assert any("POST outcome unknown" in e.reason for e in events)
        h.run_until(h.all_final)
        assert_stored_and_verified(h, 1)


def test_flaky_api_still_gets_everything(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.emulator.faults.set(
            "api", http_5xx_rate=0.2, malformed_json_rate=0.1, drop_connection_rate=0.05
        )
        h.emulator.faults.set(
            "s3", torn_download_rate=0.1, truncated_gzip_rate=0.1, http_5xx_rate=0.1
        )
        for n in range(5):
            h.enqueue(7000 + n, "2025-01-01", "2025-02-28")
        h.run_until(h.all_final)
        assert h.states() == {"stored": 5}
        for rid in range(1, 6):
            assert_stored_and_verified(h, rid)
        assert h.emulator.internal_errors == []


def test_metrics_come_from_the_ledger_and_carry_no_subject(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    from prometheus_client import generate_latest

    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(31337313, "2025-01-01", "2025-01-31", external_ref="TICKET-SECRET-REF")
        h.run_until(h.all_final)
        body = generate_latest(h.app.metrics.registry).decode()
        assert 'dsar_requests{state="stored"} 1.0' in body
        assert "dsar_files_stored_total 2.0" in body
        assert "dsar_last_successful_tick_timestamp_seconds" in body
        assert "31337313" not in body and "TICKET-SECRET-REF" not in body
        assert "test-secret-value" not in body
        assert os.environ.get("AMPLITUDE_SECRET_KEY") is None
