"""Benchmark: one tick's own work (database and planning, no network) with 10,000 outstanding
requests and 5,000 waiting, on PostgreSQL; and the budget query with a million rows in the call
ledger. The Amplitude client is a fake that answers at once."""

from __future__ import annotations

import gc
import gzip
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, insert, make_url, text
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.amplitude import RemoteStatus
from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import ApiCall, File, QueueRow, Request, ServiceState, make_engine
from dsar_scheduler.config import Settings, load_settings
from dsar_scheduler.core.states import State
from dsar_scheduler.core.validation import validate
from dsar_scheduler.ledger import Ledger, totals
from dsar_scheduler.metrics import Metrics
from dsar_scheduler.runtime.app import freeze_startup_heap
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.tick import Tick, transition_listener
from dsar_scheduler.tools.simulate.storage import SinkStorage

PG_ADMIN_URL = os.environ.get(
    "DSAR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dsar_test"
)
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
FILE = gzip.compress(b'{"event_type":"x"}\n', mtime=0)


def ensure_database(url: str) -> None:
    """Create the database ``url`` names if it does not exist yet."""
    target = make_url(url)
    server = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
        ).first()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    server.dispose()


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL, dropped afterwards (the database is created
    if this machine has not run the test suite yet)."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    ensure_database(PG_ADMIN_URL)
    admin = create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_ADMIN_URL else "?"
    try:
        yield f"{PG_ADMIN_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class _Download:
    content_length = len(FILE)

    def chunks(self) -> Iterator[bytes]:
        yield FILE


class FakeClient:
    """Answers at once: every job still running, except ``done_share`` of them (two files)."""

    def __init__(self, done_share: float, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.done_share = done_share
        self.next_id = 10_000_000
        self.calls = 0

    def check_output_url(self, url: str) -> None:
        return None

    def submit(
        self, amplitude_id: int | None, start: date, end: date, user_id: str | None = None
    ) -> int:
        self.calls += 1
        self.next_id += 1
        return self.next_id

    def status(self, request_id: int) -> RemoteStatus:
        self.calls += 1
        if self.rng.random() < self.done_share:
            urls = [
                f"https://amplitude.com/api/2/dsar/requests/{request_id}/outputs/{n}"
                for n in (0, 1)
            ]
            return RemoteStatus(request_id, "done", urls, NOW + timedelta(days=2), None)
        return RemoteStatus(request_id, "submitted", [], None, None)

    def resolve_output(self, url: str) -> str:
        self.calls += 1
        return "https://s3.example/x?sig=1"

    @contextmanager
    def download(self, url: str) -> Iterator[_Download]:
        yield _Download()

    def close(self) -> None:
        return None


def populate(
    url: str,
    outstanding: int,
    waiting: int,
    admitted: bool,
    calls: int,
    window_cost: int,
    history: int,
) -> None:
    """Outstanding requests at every age of a 3-day job, with their polls spread over the
    8-hour gap; ``waiting`` queue rows (admitted or not); ``history`` stored requests; and
    ``calls`` rows in the call ledger, ``window_cost`` of them in the last hour. Every queue
    row carries an ``external_ref``, as an upstream ticketing system sets one."""
    upgrade(url)
    engine = make_engine(url)
    rng = random.Random(7)
    start, end = date(2024, 12, 1), date(2025, 12, 31)
    total = outstanding + waiting + history
    with engine.begin() as conn:
        conn.execute(
            insert(QueueRow),
            [
                {
                    "amplitude_id": 1_000_000 + n,
                    "start_date": start,
                    "end_date": end,
                    "external_ref": f"T-{n}",  # upstream's ticket: admission checks it
                }
                for n in range(total)
            ],
        )
        rows: list[dict[str, Any]] = []
        for n in range(outstanding + history + (waiting if admitted else 0)):
            queued_at = NOW - timedelta(hours=rng.uniform(0, 200))
            row: dict[str, Any] = {
                "queue_id": n + 1,
                "external_ref": f"T-{n}",
                "amplitude_id": 1_000_000 + n,
                "start_date": start,
                "end_date": end,
                "submissions": 1,
                "failures": 0,
                "expiries": 0,
                "errors": 0,
                "polls": 0,
                "queued_at": queued_at,
                "updated_at": queued_at,
            }
            if n < outstanding:
                age = timedelta(hours=rng.uniform(0, 72))
                polled = NOW - timedelta(hours=rng.uniform(0, 8.5))
                submitted = NOW - age
                polled = max(polled, submitted)
                row.update(
                    state=State.SUBMITTED,
                    remote_request_id=5_000_000 + n,
                    submitted_at=submitted,
                    first_submitted_at=submitted,
                    last_polled_at=polled if polled > submitted else None,
                    next_action_at=polled + timedelta(hours=8),
                )
            elif n < outstanding + history:
                done = NOW - timedelta(hours=rng.uniform(1, 300))
                row.update(
                    state=State.STORED,
                    remote_request_id=5_000_000 + n,
                    submitted_at=done - timedelta(hours=rng.uniform(1, 72)),
                    done_at=done,
                    stored_at=done,
                    last_polled_at=done - timedelta(hours=rng.uniform(0, 8)),
                )
            else:
                row.update(state=State.QUEUED)
            rows.append(row)
        for chunk in range(0, len(rows), 5000):
            conn.execute(insert(Request), rows[chunk : chunk + 5000])
        files = [
            {
                "request_id": n + 1,
                "remote_request_id": 5_000_000 + n,
                "output_index": k,
                "url": f"https://amplitude.com/api/2/dsar/requests/{5_000_000 + n}/outputs/{k}",
                "name": f"{5_000_000 + n}-{k:03d}.json.gz",
                "state": "stored",
                "attempts": 0,
                "bytes": 1000,
                "sha256": "0" * 64,
                "event_count": 10,
            }
            for n in range(outstanding, outstanding + history)
            for k in range(26)
        ]
        for chunk in range(0, len(files), 20_000):
            conn.execute(insert(File), files[chunk : chunk + 20_000])
        batch: list[dict[str, Any]] = []
        in_window = 0
        for n in range(calls):
            if in_window < window_cost:
                at = NOW - timedelta(seconds=rng.uniform(1, 3590))
                in_window += 1
            else:  # within the 30-day retention: the steady state, nothing left to prune
                at = NOW - timedelta(hours=rng.uniform(1.01, 24 * 29))
            batch.append(
                {
                    "kind": "status",
                    "cost": 1,
                    "reserved_at": at,
                    "counted_at": at,
                    "finished_at": at,
                    "outcome": "ok",
                    "status_code": 200,
                    "request_id": n % max(1, outstanding),
                }
            )
            if len(batch) == 20_000:
                conn.execute(insert(ApiCall), batch)
                batch = []
        if batch:
            conn.execute(insert(ApiCall), batch)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))
    record_stored_totals(engine)
    engine.dispose()


def record_stored_totals(engine: Engine) -> None:
    """The stored totals a running service has recorded (each tick does): without them the
    first tick or scrape of a process counts the whole history, as only the first tick
    after the upgrade that introduced them does."""
    Ledger(sessionmaker(engine), 10**9).views.save_stored_totals(NOW)


@dataclass
class TickRun:
    seconds: float
    summary: dict[str, Any]
    calls: int
    #: CPU seconds of this process (the service's own Python) and of PostgreSQL's processes
    #: (None where /proc does not show them) during the tick.
    client_cpu_s: float
    server_cpu_s: float | None


def postgres_cpu_seconds() -> float | None:
    """CPU time of every PostgreSQL process on this machine, the exited backends included
    (their time is added to the postmaster's children's time when it reaps them)."""
    total, seen = 0, False
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        if not raw[raw.index("(") + 1 : raw.rindex(")")].startswith("postgres"):
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        seen = True
    return total / tick if seen else None


def bench_ledger(url: str, **settings: Any) -> tuple[Settings, Engine, Ledger, Metrics]:
    """The settings, engine, ledger and metrics of a benchmark tick on ``url`` (the whole
    budget; ``settings``: more of them, as ``load_settings`` takes them)."""
    loaded = load_settings(
        database_url=url,
        storage_url="file:///nonexistent",
        AMPLITUDE_API_KEY="k",
        AMPLITUDE_SECRET_KEY="s",
        budget_fraction=1.0,
        log_level="error",
        **settings,
    )
    engine = make_engine(url)
    metrics = Metrics()
    ledger = Ledger(
        sessionmaker(engine, expire_on_commit=False),
        loaded.budget_limit,
        on_transitions=transition_listener(metrics),
    )
    return loaded, engine, ledger, metrics


def run_tick(url: str, done_share: float = 0.005) -> TickRun:
    """One tick with the fake client."""
    settings, engine, ledger, metrics = bench_ledger(url)
    client = FakeClient(done_share)
    tick = Tick(
        settings,
        ledger,
        client,  # type: ignore[arg-type]
        SinkStorage(),
        FakeClock(NOW),
        metrics,
        "bench",
        rng=random.Random(1),
    )
    freeze_startup_heap()  # as `dsar run` and `dsar tick` do once the app is built
    server_before = postgres_cpu_seconds()
    cpu_before = time.process_time()
    began = time.perf_counter()
    report = tick.run()
    elapsed = time.perf_counter() - began
    client_cpu = time.process_time() - cpu_before
    gc.unfreeze()
    engine.dispose()
    time.sleep(0.2)  # the backends exit and are reaped: their time moves to the postmaster
    server_after = postgres_cpu_seconds()
    server_cpu = (
        server_after - server_before
        if server_before is not None and server_after is not None
        else None
    )
    return TickRun(elapsed, report.summary(), client.calls, client_cpu, server_cpu)


def budget_query(url: str, repeat: int = 50) -> tuple[float, float]:
    """(median seconds of ``spent``, of a ``reserve_many`` of 100 calls)."""
    engine = make_engine(url)
    ledger = Ledger(sessionmaker(engine, expire_on_commit=False), 10**9)
    spent, reserve = [], []
    for k in range(repeat):
        t = time.perf_counter()
        ledger.budget.spent(NOW)
        spent.append(time.perf_counter() - t)
        t = time.perf_counter()
        ledger.budget.reserve_many("status", 1, NOW + timedelta(microseconds=k), [None] * 100)
        reserve.append(time.perf_counter() - t)
    engine.dispose()
    spent.sort()
    reserve.sort()
    return spent[len(spent) // 2], reserve[len(reserve) // 2]


def populate_history(url: str, requests: int, files_per_request: int, with_files: int) -> None:
    """A long-running service's history on PostgreSQL: ``requests`` stored requests (and
    their queue rows), ``with_files`` of them with ``files_per_request`` stored files each,
    written by the database itself (``generate_series``: millions of rows in a minute)."""
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dsar_queue (amplitude_id, start_date, end_date, external_ref) "
                "SELECT 1000000 + g, '2025-01-01', '2025-12-31', 'T-' || g"
                " FROM generate_series(1, :n) g"
            ),
            {"n": requests},
        )
        conn.execute(
            text(
                "INSERT INTO dsar_requests (queue_id, external_ref, amplitude_id, start_date,"
                " end_date, state, remote_request_id, submissions, failures, expiries, errors,"
                " polls, queued_at, updated_at, done_at, stored_at) "
                "SELECT g, 'T-' || g, 1000000 + g, '2025-01-01', '2025-12-31', 'stored',"
                " 5000000 + g,"
                " 1, 0, 0, 0, 0, t, t, t, t "
                "FROM generate_series(1, :n) g, LATERAL (SELECT :now - g * interval '10 s') x(t)"
            ),
            {"n": requests, "now": NOW.replace(tzinfo=None)},
        )
        conn.execute(
            text(
                "INSERT INTO dsar_files (request_id, remote_request_id, output_index, url, state,"
                " name, bytes, sha256, event_count, attempts, stored_at) "
                "SELECT r, 5000000 + r, k, 'https://amplitude.com/api/2/dsar/requests/' || r"
                " || '/outputs/' || k, 'stored', r || '-' || k || '.json.gz', 100000,"
                " repeat('0', 64), 10, 0, :now - r * interval '10 s' "
                "FROM generate_series(1, :n) r, generate_series(0, :k - 1) k"
            ),
            {"n": with_files, "k": files_per_request, "now": NOW.replace(tzinfo=None)},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    record_stored_totals(engine)
    engine.dispose()


def history_reads(url: str, repeat: int = 7) -> dict[str, float]:
    """Median seconds of what grows with history: finding new queue rows from the floor and
    in the daily full sweep; a metrics snapshot, the first in a process (from the totals the
    ticks recorded; and, with no record, as the first after the upgrade that introduced
    them: it counts the whole stored history) and later ones."""
    from dsar_scheduler.ledger.rows import QueueFloor

    engine = make_engine(url)
    ledger = Ledger(sessionmaker(engine, expire_on_commit=False), 10**9)
    top = ledger.queue.last_id()
    # every queue row admitted: the floor a tick leaves (the scrape counts unadmitted from it)
    ledger.queue.set_floor(QueueFloor(top, top), NOW, NOW + timedelta(days=1))

    def middle(times: list[float]) -> float:
        return sorted(times)[len(times) // 2]

    def median(work: Callable[[], object]) -> float:
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            work()
            times.append(time.perf_counter() - began)
        return middle(times)

    def first_snapshot() -> float:
        fresh = Ledger(sessionmaker(engine, expire_on_commit=False), 10**9)  # a new process
        began = time.perf_counter()
        fresh.views.snapshot(NOW, timedelta(days=3))
        return time.perf_counter() - began

    first = first_snapshot()
    with engine.begin() as conn:
        conn.execute(delete(ServiceState).where(ServiceState.key == totals.RECORD_KEY))
    unrecorded = first_snapshot()
    out = {
        "new_rows_from_floor": median(lambda: ledger.queue.pending_rows(500, top)),
        "new_rows_full_sweep": median(lambda: ledger.queue.pending_rows(500, 0)),
        "snapshot_first": first,
        "snapshot_first_unrecorded": unrecorded,
        "snapshot_later": median(lambda: ledger.views.snapshot(NOW, timedelta(days=3))),
    }
    admits = []
    start, end = date(2025, 1, 1), date(2025, 1, 31)
    for k in range(repeat):  # each a new page of 500 rows with tickets, one a repeat
        refs = [f"N-{k}-{n}" for n in range(499)] + ["T-1"]
        with engine.begin() as conn:
            conn.execute(
                insert(QueueRow),
                [
                    {"amplitude_id": 7, "start_date": start, "end_date": end, "external_ref": ref}
                    for ref in refs
                ],
            )
        began = time.perf_counter()
        rows = ledger.queue.pending_rows(500, top)
        created = ledger.queue.admit([(row, validate(row, NOW.date(), 731)) for row in rows], NOW)
        admits.append(time.perf_counter() - began)
        assert len(created) == 500 and created[-1].state == "rejected"  # the repeated ticket
        top = rows[-1].queue_id
    out["admit_batch"] = middle(admits)
    engine.dispose()
    return out
