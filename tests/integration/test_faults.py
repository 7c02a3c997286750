"""Faults from the API, the database and storage: each ends in a retry with backoff, a
resubmission, or a dead request with its reason, and shows in metrics.

In-process ticks on a fake clock against the emulator (what test_tick_integration.py already
shows, the flaky-API run, one failed or expired job, one 429, is not repeated here); the
database and storage faults also against the real daemon process.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, event, text

from dsar_scheduler.adapters.amplitude import MAX_BODY_BYTES
from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.core.states import State
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.runtime.status import describe_request
from dsar_scheduler.tools.emulator import Emulator
from tests.conftest import PG_ADMIN_URL
from tests.support.faultkit import (
    BrokenStorage,
    Rewrite,
    Tap,
    infinite_json,
    is_status,
    metric,
    swap_client,
)
from tests.support.harness import Harness, harness
from tests.support.netproxy import CuttableProxy
from tests.support.procs import DaemonProcess, service_env, wall_emulator_fixture

FAST = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}
HALF_HOUR = timedelta(minutes=30)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/dsar.db"
    upgrade(url)
    return url


def m(h: Harness, name: str, **labels: str) -> float:
    return metric(h.app.metrics.registry, name, **labels)


def submitted(h: Harness, request_id: int = 1) -> int:
    request = h.app.ledger.requests.get(request_id)
    assert request is not None and request.state == State.SUBMITTED, request
    assert request.remote_request_id is not None
    return request.remote_request_id


def ledger_cost(h: Harness) -> int:
    with h.app.sessions() as session:
        return int(session.execute(text("SELECT SUM(cost) FROM dsar_api_calls")).scalar() or 0)


# -- 5xx, timeouts, resets, malformed and oversized bodies ---------------------------------


def test_5xx_on_submit_and_on_poll_is_retried_with_backoff(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(101)
        h.emulator.faults.script("api", "5xx", count=1)  # the POST
        h.tick()
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.state == State.QUEUED
        assert "submit failed, will retry" in (request.reason or "")
        assert request.errors == 1
        assert request.next_action_at is not None and request.next_action_at > clock.now()
        assert h.emulator.jobs() == {}  # the 5xx came before any job was made
        assert m(h, "dsar_api_errors_total", kind="submit", cause="server_error") == 1
        h.tick()  # still backing off: no second POST yet
        assert len(h.emulator.posts()) == 1
        clock.set(request.next_action_at)
        h.tick()
        submitted(h)
        h.emulator.faults.script("api", "5xx", count=1)  # the first poll
        clock.advance(HALF_HOUR)
        h.tick()
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.state == State.SUBMITTED and request.errors == 1
        assert m(h, "dsar_api_errors_total", kind="status", cause="server_error") == 1
        h.run_until(h.all_final)
        assert h.states() == {"stored": 1}
        assert ledger_cost(h) == h.emulator.cost_spent_total()


def test_a_timeout_is_a_transient_error_and_retried(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST, http_timeout_seconds=0.3) as h:
        h.enqueue(102)
        h.tick()
        submitted(h)
        h.emulator.faults.set("api", slow_seconds=1.0)
        h.emulator.faults.script("api", "slow", count=1)  # the poll answers after 1 s
        clock.advance(HALF_HOUR)
        report = h.tick()
        assert report.outcome == "ok"
        assert m(h, "dsar_api_errors_total", kind="status", cause="timeout") == 1
        assert h.app.ledger.requests.get(1).errors == 1  # type: ignore[union-attr]
        h.run_until(h.all_final)
        assert h.states() == {"stored": 1}


def test_connection_resets_on_a_post_and_a_download(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """A POST whose answer is lost made a job Amplitude keeps: the retry makes a second one
    (the API has no idempotency key); both are paid for, in the ledger as at Amplitude."""
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(103, "2025-01-01", "2025-01-31")
        h.emulator.faults.script("api", "drop", count=1)
        h.tick()
        assert len(h.emulator.jobs()) == 1  # made, but its id never reached us
        assert h.app.ledger.requests.get(1).state == State.QUEUED  # type: ignore[union-attr]
        assert m(h, "dsar_api_errors_total", kind="submit", cause="connection") == 1
        h.emulator.faults.script("s3", "drop", count=1)
        h.run_until(h.all_final)
        assert m(h, "dsar_api_errors_total", kind="download", cause="connection") == 1
        assert len(h.emulator.posts()) == 2
        assert h.states() == {"stored": 1}
        assert ledger_cost(h) == h.emulator.cost_spent_total()


def test_a_malformed_status_body_is_retried(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(104)
        h.tick()
        h.emulator.faults.script("api", "malformed", count=2)
        clock.advance(HALF_HOUR)
        h.tick()
        assert m(h, "dsar_api_errors_total", kind="status", cause="malformed") == 1
        h.run_until(h.all_final)
        assert h.states() == {"stored": 1}
        assert h.app.ledger.requests.get(1).submissions == 1  # type: ignore[union-attr]


def test_an_endless_body_is_cut_off_at_the_limit_not_buffered(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    read = [0]
    declared = [0]

    def replace(request: httpx.Request) -> httpx.Response | None:
        if not is_status(request):
            return None
        if read[0] == 0:
            return httpx.Response(
                200, headers={"Content-Type": "application/json"}, stream=_Stream(read)
            )
        if declared[0] == 0:  # then one that announces a body too large to read at all
            declared[0] = 1
            return httpx.Response(
                200, headers={"Content-Length": str(50 * MAX_BODY_BYTES)}, content=b"{}"
            )
        return None

    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        swap_client(h.app, Tap(replace=replace))
        h.enqueue(105)
        h.tick()
        clock.advance(HALF_HOUR)
        h.tick()
        assert 0 < read[0] <= MAX_BODY_BYTES + 2 * 65536  # stopped reading at the limit
        clock.advance(HALF_HOUR)
        h.tick()
        assert declared[0] == 1
        assert m(h, "dsar_api_errors_total", kind="status", cause="oversized") == 2
        h.run_until(h.all_final)
        assert h.states() == {"stored": 1}


class _Stream(httpx.SyncByteStream):
    def __init__(self, counter: list[int]) -> None:
        self.counter = counter

    def __iter__(self) -> Iterator[bytes]:
        yield from infinite_json(self.counter)


# -- answers that are well-formed but unusable ---------------------------------------------


def _rewrite_remote(target: list[int], mutate: dict[str, object], times: list[int]) -> Rewrite:
    """Rewrite status answers about the remote request ``target[0]``, ``times[0]`` times."""

    def rewrite(request: httpx.Request, body: dict[str, object]) -> dict[str, object] | None:
        if target and body.get("requestId") == target[0] and times[0] > 0:
            times[0] -= 1
            return {**body, **mutate}
        return None

    return rewrite


@pytest.mark.parametrize(
    ("mutate", "what"),
    [
        ({"status": "archived"}, "unknown status 'archived'"),
        ({"status": "done", "urls": [], "expires": "2026-02-01T00:00:00"}, "no urls"),
        (
            {"status": "done", "urls": ["javascript:alert(1)"], "expires": "2026-02-01T00:00:00"},
            "not an absolute http(s) URL",
        ),
        ({"status": "done", "urls": [7], "expires": "2026-02-01T00:00:00"}, "list of strings"),
        ({"status": "done", "urls": ["https://amplitude.com/x"], "expires": None}, "no expires"),
    ],
)
def test_unusable_status_answers_retry_then_resubmit(
    sqlite_url: str,
    tmp_path: Path,
    clock: FakeClock,
    mutate: dict[str, object],
    what: str,
) -> None:
    """Retried at the poll interval; the same unusable answer DSAR_MAX_TRANSIENT_ERRORS times
    in a row is treated as a failed job: resubmitted (and dead at the resubmission limit)."""
    target: list[int] = []
    times = [3]
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST, max_transient_errors=3) as h:
        swap_client(h.app, Tap(rewrite=_rewrite_remote(target, mutate, times)))
        h.enqueue(106)
        h.tick()
        target.append(submitted(h))
        for _ in range(3):
            clock.advance(HALF_HOUR)
            h.tick()
        assert times[0] == 0
        assert m(h, "dsar_api_errors_total", kind="status", cause="bad_status") == 3
        events = h.app.ledger.requests.events(1)
        failed = [e for e in events if e.to_state == State.FAILED]
        assert len(failed) == 1 and "3 unusable status answers in a row" in failed[0].reason
        assert what in failed[0].reason
        assert m(h, "dsar_request_transitions_total", to_state="failed") == 1
        h.run_until(h.all_final)
        assert h.states() == {"stored": 1}
        assert len(h.emulator.posts()) == 2


def test_done_with_no_urls_once_is_just_not_ready_yet(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    target: list[int] = []
    times = [2]
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        mutate = {"status": "done", "urls": [], "expires": "2026-02-01T00:00:00"}
        swap_client(h.app, Tap(rewrite=_rewrite_remote(target, mutate, times)))
        h.enqueue(107)
        h.tick()
        target.append(submitted(h))
        h.run_until(h.all_final)
        assert times[0] == 0
        assert h.states() == {"stored": 1}
        assert len(h.emulator.posts()) == 1  # no resubmission for a passing glitch


def test_output_urls_on_a_foreign_host_get_nothing_and_the_request_dies_with_the_reason(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    target: list[int] = []
    evil = "https://collector.example.net/api/2/dsar/requests/1/outputs/0"
    mutate = {"status": "done", "urls": [evil], "expires": "2026-02-01T00:00:00"}
    tap = Tap(rewrite=_rewrite_remote(target, mutate, [10]))
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        swap_client(h.app, tap)
        h.enqueue(108)
        h.tick()
        target.append(submitted(h))
        clock.advance(HALF_HOUR)
        h.tick()
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.state == State.DEAD
        assert "refused output URL" in (request.reason or "")
        assert "collector.example.net" in (request.reason or "")
        assert all(r.url.host == "127.0.0.1" for r in tap.seen)  # nothing went there
        with h.app.sessions() as session:
            fetches = session.execute(
                text("SELECT COALESCE(SUM(cost), 0) FROM dsar_api_calls WHERE kind = 'fetch'")
            ).scalar()
        assert fetches == 0  # refused before anything was sent: it cost nothing
        assert m(h, "dsar_file_fetch_failures_total", reason="untrusted_url") == 1
        assert m(h, "dsar_request_transitions_total", to_state="dead") == 1


# -- failed jobs, 429 storms, expiry -------------------------------------------------------


def test_failed_jobs_are_resubmitted_then_dead_with_the_reason_in_status_and_metrics(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(
        sqlite_url,
        tmp_path,
        clock,
        max_failed_resubmits=2,
        emulator_options={**FAST, "fail_rate": 1.0, "fail_reasons": ("Query timed out",)},
    ) as h:
        h.enqueue(109)
        h.run_until(h.all_final)
        assert h.states() == {"dead": 1}
        assert m(h, "dsar_request_transitions_total", to_state="failed") == 2
        assert m(h, "dsar_request_transitions_total", to_state="dead") == 1
        assert len(h.emulator.posts()) == 3
        text_out = describe_request(h.app.engine, 1, as_json=False)
        assert text_out is not None
        assert "Query timed out; failed 3 times, giving up" in text_out
        assert "dsar retry ID" in text_out


def test_a_429_storm_from_another_client_is_waited_out_hour_after_hour(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        for n in range(3):
            h.enqueue(110 + n)
        for _hour in range(4):  # the rest of the org spends the whole budget, every hour
            h.emulator.spend_external(14_400)
            h.tick()
            assert m(h, "dsar_rate_limit_backoff_seconds") > 0
            clock.advance(HALF_HOUR)
            h.tick()  # backing off: not a single call
            clock.advance(HALF_HOUR)
        assert h.emulator.rate_limited_count() == 4  # one per burst, never a retry storm
        assert m(h, "dsar_rate_limited_total") == 4
        assert m(h, "dsar_api_errors_total", kind="submit", cause="rate_limited") == 4
        for rid in (1, 2, 3):  # nobody blamed: no errors counted, nothing dead
            request = h.app.ledger.requests.get(rid)
            assert request is not None and request.state == State.QUEUED
            assert request.errors == 0
        h.run_until(h.all_final)
        assert h.states() == {"stored": 3}
        assert h.emulator.rate_limited_count() == 4


def test_results_gone_before_they_are_fetched_are_resubmitted(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """Amplitude withdraws the results early: the output URLs answer 404. Twice in a row
    means gone: the request is marked expired and submitted again."""
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(113, "2025-01-01", "2025-01-31")
        h.tick()
        first = submitted(h)
        h.emulator.complete(first)
        h.emulator.faults.script("s3", "5xx", count=2)  # the first downloads fail...
        clock.advance(HALF_HOUR)
        h.tick()
        assert h.app.ledger.requests.get(1).state == State.DONE  # type: ignore[union-attr]
        h.emulator.expire(first)  # ...and then the results are gone
        h.run_until(h.all_final)
        manifest = json.loads(next(h.files_root.rglob("manifest.json")).read_text())
        assert manifest["amplitude_request_id"] != first
        expired = [e for e in h.app.ledger.requests.events(1) if e.to_state == State.EXPIRED]
        assert len(expired) == 1 and "answered 404 twice in a row" in expired[0].reason
        assert m(h, "dsar_api_errors_total", kind="fetch", cause="not_found") >= 2
        assert m(h, "dsar_request_transitions_total", to_state="expired") == 1


def test_results_that_keep_expiring_end_dead_with_the_reason(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(
        sqlite_url,
        tmp_path,
        clock,
        emulator_options=FAST,
        max_expired_resubmits=1,
        max_transient_errors=1000,
    ) as h:
        h.emulator.faults.set("s3", http_5xx_rate=1.0)  # nothing can ever be downloaded
        h.enqueue(114, "2025-01-01", "2025-01-31")
        h.run_until(h.all_final, step=timedelta(hours=6))
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.state == State.DEAD
        assert "expired unfetched 2 times, giving up" in (request.reason or "")
        assert m(h, "dsar_request_transitions_total", to_state="expired") == 1
        assert m(h, "dsar_api_errors_total", kind="download", cause="server_error") > 0


# -- the database connection dropped mid-tick ----------------------------------------------


@pytest.mark.postgres
def test_database_connection_killed_mid_tick(pg_url: str, tmp_path: Path, clock: FakeClock) -> None:
    """Right after a POST is answered, as the tick writes down the remote request id, the
    server ends every connection of the service (pg_terminate_backend, only ours): that tick
    fails cleanly; the next one resubmits the request whose POST it could not record (the
    API has no idempotency key: a second remote job), and every reservation ends with an
    outcome, known or ``unknown`` (counted as spent)."""
    app_name = f"dsar-fault-{uuid.uuid4().hex[:8]}"
    url = f"{pg_url}&application_name={app_name}"
    upgrade(url)
    admin = create_engine(PG_ADMIN_URL)
    armed: list[bool] = []
    killed: list[int] = []

    def after(request: httpx.Request, _response: httpx.Response) -> None:
        if request.method == "POST" and not killed:
            armed.append(True)

    def before_execute(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if armed and statement.startswith("UPDATE dsar_requests"):
            armed.clear()
            with admin.begin() as conn:
                rows = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                        "WHERE application_name = :name"
                    ),
                    {"name": app_name},
                ).all()
            killed.append(len(rows))

    try:
        with harness(url, tmp_path, clock, emulator_options=FAST) as h:
            tap = Tap()
            tap.after = after
            swap_client(h.app, tap)
            event.listen(h.app.engine, "before_cursor_execute", before_execute)
            h.enqueue(115)
            report = h.tick()
            assert killed and killed[0] >= 1
            assert report.outcome == "error"
            assert any("OperationalError" in e for e in report.errors)
            assert h.app.ledger.requests.get(1).state == State.SUBMITTING  # type: ignore[union-attr]
            clock.advance(HALF_HOUR)
            report = h.tick()
            assert report.outcome == "ok"
            events = [e.reason for e in h.app.ledger.requests.events(1)]
            assert any("POST outcome unknown" in r for r in events)
            with h.app.sessions() as session:
                outcomes = set(
                    session.execute(
                        text("SELECT outcome FROM dsar_api_calls WHERE kind = 'submit'")
                    ).scalars()
                )
            assert "reserved" not in outcomes
            unknown = m(h, "dsar_api_calls_unknown_outcome_total", kind="submit")
            assert unknown == (1 if "unknown" in outcomes else 0)
            h.run_until(h.all_final)
            assert h.states() == {"stored": 1}
            assert len(h.emulator.posts()) == 2
            assert ledger_cost(h) == h.emulator.cost_spent_total()  # both reached Amplitude
    finally:
        admin.dispose()


# -- storage failing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trouble", "where"),
    [("disk_full", "put_verified"), ("permission", "put_bytes"), ("s3_down", "put_verified")],
)
def test_storage_failing_ends_the_tick_cleanly_and_the_next_one_resumes(
    sqlite_url: str, tmp_path: Path, clock: FakeClock, trouble: str, where: str
) -> None:
    with harness(sqlite_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(116, "2025-01-01", "2025-01-31")
        h.enqueue(117, "2025-01-01", "2025-01-31")
        h.tick()
        remote = submitted(h)
        h.emulator.complete(remote)
        broken = BrokenStorage(h.app.storage, trouble, {where})
        h.app.storage = broken
        h.enqueue(118, "2025-01-01", "2025-01-31")  # waits: no submits while storage fails
        clock.advance(HALF_HOUR)
        posts = len(h.emulator.posts())
        report = h.tick()
        assert broken.failures >= 1
        assert report.outcome == "error"
        assert any(e.startswith("storage: ") for e in report.errors)
        expected = {"disk_full": "disk full", "permission": "permission denied"}
        assert expected.get(trouble, "S3 unreachable") in " ".join(report.errors)
        assert len(h.emulator.posts()) == posts  # nothing new submitted
        assert h.app.ledger.requests.get(1).state in (State.DONE, State.FETCHING)  # type: ignore[union-attr]
        assert [p for p in h.files_root.rglob("*") if p.name.startswith(".")] == []
        clock.advance(HALF_HOUR)
        assert h.tick().outcome == "error"  # still failing: still clean
        broken.failing = False
        clock.advance(HALF_HOUR)
        h.run_until(h.all_final)
        assert h.states() == {"stored": 3}
        if where == "put_verified":
            assert m(h, "dsar_file_fetch_failures_total", reason="storage") >= 1


# -- the same against the real daemon process ----------------------------------------------


wall_emulator = wall_emulator_fixture(seed=5)


def _stored(daemon: DaemonProcess, count: int) -> bool:
    response = daemon.get("/metrics")
    return (
        response is not None and f'dsar_requests{{state="stored"}} {float(count)}' in response.text
    )


def _prepare(url: str, subjects: int) -> None:
    """Migrate and queue rows in-process (the CLI has its own tests; this saves seconds)."""
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for n in range(subjects):
                conn.execute(
                    text(
                        "INSERT INTO dsar_queue (amplitude_id, start_date, end_date) "
                        "VALUES (:a, '2025-01-01', '2025-01-31')"
                    ),
                    {"a": 2000 + n},
                )
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_daemon_survives_the_database_going_away_mid_tick(
    tmp_path: Path, wall_emulator: Emulator, pg_url: str
) -> None:
    """PostgreSQL 'restarts' (a proxy in front of it drops every connection and refuses new
    ones for a while): ticks fail, the daemon stays alive, readiness says why, and once the
    database is back the next tick carries on to the end."""
    base = pg_url.split("@", 1)[1].split("/", 1)[0]
    host, port = base.split(":")
    proxy = CuttableProxy(host, int(port)).start()
    proxied = pg_url.replace(f"@{base}/", f"@127.0.0.1:{proxy.port}/")
    env = service_env(wall_emulator, proxied, f"file://{tmp_path}/files", retry_base_seconds=0.2)
    _prepare(pg_url, 3)
    wall_emulator.faults.set("api", slow_rate=1.0, slow_seconds=0.2)  # ticks take a while
    daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
    try:
        daemon.wait_healthy()
        daemon.wait_until(lambda: len(wall_emulator.posts()) >= 1, 30, "a tick under way")
        proxy.cut()

        def not_ready() -> bool:
            ready = daemon.get("/readyz")
            return ready is not None and ready.status_code == 503

        daemon.wait_until(not_ready, 30, "readyz to report the database down")
        assert daemon.get("/readyz").json()["database"] is False  # type: ignore[union-attr]
        health = daemon.get("/healthz")
        assert health is not None and health.status_code == 200  # alive: do not restart it
        daemon.wait_until(lambda: _failed_ticks(daemon) > 0, 30, "a failed tick")
        proxy.restore()
        wall_emulator.faults.set("api", slow_rate=0.0)
        daemon.wait_until(lambda: _stored(daemon, 3), 60, "all stored after the database came back")
        assert daemon.terminate() == 0
    finally:
        daemon.close()
        proxy.close()
    assert '"tick.failed"' in daemon.logs(tail=2000)


def _failed_ticks(daemon: DaemonProcess) -> float:
    response = daemon.get("/metrics")
    if response is None:
        return 0.0
    for line in response.text.splitlines():
        if line.startswith('dsar_ticks_total{outcome="error"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_daemon_survives_storage_failing_and_resumes(
    tmp_path: Path, wall_emulator: Emulator
) -> None:
    """The storage root cannot be written (here: a file where its folder should be): every
    tick ends in a storage error, the daemon keeps running, and once storage is back the next
    tick stores everything."""
    files = tmp_path / "files"
    files.write_text("not a folder")
    url = f"sqlite:///{tmp_path}/dsar.db"
    env = service_env(wall_emulator, url, f"file://{files}", retry_base_seconds=0.2)
    _prepare(url, 2)
    daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
    try:
        daemon.wait_healthy()
        daemon.wait_until(
            lambda: "storage.failed" in daemon.logs(tail=400), 30, "a storage failure"
        )
        daemon.wait_until(lambda: _failed_ticks(daemon) > 0, 30, "a failed tick")
        assert daemon.proc is not None and daemon.proc.poll() is None
        files.unlink()  # storage is back
        daemon.wait_until(lambda: _stored(daemon, 2), 60, "all stored after storage came back")
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    assert len(list(files.rglob("manifest.json"))) == 2
