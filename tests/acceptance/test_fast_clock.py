"""``dsar run`` on a fast clock (DSAR_CLOCK_SPEED, DSAR_CLOCK_EPOCH) against the emulator on
the same clock: hours of the service's life in wall seconds, the real processes throughout.

What is checked comes from both sides: the ledger's record of every call (reserved, then
finished, on the service's clock) and the emulator's (received, on its own copy of the
clock). The two processes share one time only if each call Amplitude charged lies between
the ledger's reservation and end of it.
"""

from __future__ import annotations

import collections
import itertools
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dsar_scheduler.adapters.clock import utc
from dsar_scheduler.adapters.db import ApiCall, Event, Request, Tick, make_engine
from dsar_scheduler.tools.emulator import Emulator
from dsar_scheduler.tools.emulator.calls import CallRecord
from tests.support.procs import (
    DSAR,
    DaemonProcess,
    clock_env,
    enqueue,
    requests_by_state,
    run_cli,
    service_env,
    shared_clock_emulator,
)

SPEED = 3600.0  # a clock hour each wall second
#: The org's budget: far less than the backlog needs, so it binds for several clock hours.
BUDGET = 60
SUBJECTS = 10
#: Amplitude's times, in clock seconds: jobs of half an hour to four hours.
EMULATOR = {"completion_min_s": 1800.0, "completion_max_s": 4 * 3600.0, "budget_per_hour": BUDGET}
#: Rounding of stored timestamps (microseconds) and of float clock arithmetic.
SLACK = timedelta(milliseconds=5)


@pytest.fixture(name="epoch")
def _epoch() -> float:
    return time.time()


@pytest.fixture(name="emulator")
def _emulator(epoch: float) -> Iterator[Emulator]:
    with shared_clock_emulator(seed=17, speed=SPEED, epoch=epoch, **EMULATOR) as emulator:
        yield emulator


def _env(emulator: Emulator, database_url: str, tmp_path: Path, epoch: float) -> dict[str, str]:
    env = service_env(emulator, database_url, f"file://{tmp_path}/files", budget_fraction=1.0)
    env.update(clock_env(SPEED, epoch))
    # Clock seconds, production's values: a tick every half clock hour (half a wall second).
    env["DSAR_TICK_INTERVAL_SECONDS"] = "1800"
    env["DSAR_POLL_INTERVAL_SECONDS"] = "1800"
    return env


def _backlog(env: dict[str, str], tmp_path: Path, first_id: int) -> None:
    rows = [
        {"amplitude_id": str(first_id + n), "start_date": "2025-01-01", "end_date": "2025-02-28"}
        for n in range(SUBJECTS)
    ]
    enqueue(env, tmp_path, rows)


def _all_stored(database_url: str) -> bool:
    return requests_by_state(database_url) == {"stored": SUBJECTS}


def _charged_calls(database_url: str) -> list[tuple[int, datetime, datetime]]:
    """The ledger's calls that reached the API: (cost, reserved_at, finished_at)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(ApiCall.cost, ApiCall.reserved_at, ApiCall.finished_at)
                .where(ApiCall.cost > 0)
                .order_by(ApiCall.reserved_at, ApiCall.id)
            ).all()
    finally:
        engine.dispose()
    calls = []
    for cost, reserved, finished in rows:
        assert finished is not None, "a call left unfinished"
        calls.append((int(cost), utc(reserved), utc(finished)))
    return calls


def _peak_rolling_hour(charges: list[CallRecord]) -> int:
    """The most the emulator charged in any rolling hour (ending at one of its charges)."""
    hour = timedelta(hours=1)
    return max(sum(c.cost for c in charges if end.at - hour < c.at <= end.at) for end in charges)


def test_a_backlog_on_a_fast_clock_spends_the_budget_hour_by_hour_as_amplitude_counts_it(
    tmp_path: Path, emulator: Emulator, epoch: float
) -> None:
    database_url = f"sqlite:///{tmp_path}/dsar.db"
    env = _env(emulator, database_url, tmp_path, epoch)
    run_cli(["migrate"], env)
    _backlog(env, tmp_path, 9000)
    daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
    began = time.monotonic()
    try:
        daemon.wait_healthy()
        daemon.wait_until(lambda: _all_stored(database_url), 45, "every request stored")
        metrics = daemon.get("/metrics")
        assert metrics is not None and "dsar_clock_speed 3600.0" in metrics.text
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    wall = time.monotonic() - began
    logs = daemon.logs(tail=100_000)
    assert '"clock.fast"' in logs and '"clock_speed": 3600.0' in logs

    charges = sorted((c for c in emulator.calls("api") if c.cost > 0), key=lambda c: c.at)
    ledger = _charged_calls(database_url)
    assert emulator.rate_limited_count() == 0
    assert len(ledger) == len(charges)
    assert sum(cost for cost, _, _ in ledger) == emulator.cost_spent_total()
    # One time across processes: each charge falls within its call as the ledger saw it.
    for (cost, reserved, finished), charge in zip(ledger, charges, strict=True):
        assert cost == charge.cost
        assert reserved - SLACK <= charge.at <= finished + SLACK, (reserved, charge.at, finished)
    # The budget bound: the backlog took several clock hours, no rolling hour went over.
    clock_hours = (charges[-1].at - charges[0].at).total_seconds() / 3600
    assert emulator.cost_spent_total() > 2 * BUDGET and clock_hours > 2
    assert _peak_rolling_hour(charges) <= BUDGET
    print(  # run with -s to see the figures
        f"\nspeed {SPEED:g}: {len(charges)} charged calls, cost {emulator.cost_spent_total()} "
        f"over {clock_hours:.1f} clock hours in {wall:.1f} wall s; budget {BUDGET}/h"
    )


def _timestamps(database_url: str) -> tuple[datetime, dict[str, int]]:
    """The latest time anything in the ledger holds, and each table's last id."""
    engine = make_engine(database_url)
    columns = [
        ApiCall.reserved_at, ApiCall.finished_at, ApiCall.counted_at, Event.at,
        Tick.started_at, Tick.finished_at, Request.updated_at,
    ]  # fmt: skip
    try:
        with engine.connect() as connection:
            latest = max(utc(value) for c in columns if (value := connection.scalar(func.max(c))))
            ids = {
                table.__tablename__: int(connection.scalar(func.max(table.id)) or 0)
                for table in (ApiCall, Event, Tick)
            }
    finally:
        engine.dispose()
    return latest, ids


def _written_after(database_url: str, ids: dict[str, int]) -> list[datetime]:
    """Every time the ledger's rows newer than ``ids`` were written with."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            times = list(
                connection.scalars(
                    select(ApiCall.reserved_at).where(ApiCall.id > ids["dsar_api_calls"])
                )
            )
            times += connection.scalars(
                select(Event.at).where(Event.id > ids["dsar_request_events"])
            )
            times += connection.scalars(select(Tick.started_at).where(Tick.id > ids["dsar_ticks"]))
    finally:
        engine.dispose()
    return [utc(t) for t in times]


def test_a_kill_9_and_restart_on_a_fast_clock_never_moves_time_back_and_loses_nothing(
    tmp_path: Path, emulator: Emulator, epoch: float
) -> None:
    database_url = f"sqlite:///{tmp_path}/dsar.db"
    env = _env(emulator, database_url, tmp_path, epoch)
    run_cli(["migrate"], env)
    _backlog(env, tmp_path, 9100)
    first = DaemonProcess(env, tmp_path / "first.log").start()
    try:
        first.wait_healthy()
        first.wait_until(lambda: "stored" in requests_by_state(database_url), 30, "a first stored")
        first.kill()
    finally:
        first.close()
    assert not _all_stored(database_url)  # killed mid-run
    dead_latest, ids = _timestamps(database_url)

    second = DaemonProcess(env, tmp_path / "second.log").start()
    try:
        second.wait_until(lambda: _all_stored(database_url), 45, "every request stored")
        assert second.terminate() == 0
    finally:
        second.close()
    written = _written_after(database_url, ids)
    assert written, "the restarted process wrote nothing"
    assert min(written) >= dead_latest - SLACK  # its clock took up where the dead one's was
    # Nothing lost, nothing done twice: one job per subject at Amplitude.
    per_subject = collections.Counter(job.amplitude_id for job in emulator.jobs().values())
    assert set(per_subject) == {9100 + n for n in range(SUBJECTS)}
    assert emulator.rate_limited_count() == 0


def test_two_replicas_on_one_fast_clock_agree_on_the_time(
    database_url: str, tmp_path: Path, emulator: Emulator, epoch: float
) -> None:
    env = _env(emulator, database_url, tmp_path, epoch)
    _backlog(env, tmp_path, 9200)
    replicas = [DaemonProcess(env, tmp_path / f"replica-{n}.log").start() for n in range(2)]
    try:
        for replica in replicas:
            replica.wait_healthy()
        replicas[0].wait_until(lambda: _all_stored(database_url), 45, "every request stored")
        for replica in replicas:
            assert replica.terminate() == 0
    finally:
        for replica in replicas:
            replica.close()

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            ticks = connection.execute(
                select(Tick.owner, Tick.started_at, Tick.finished_at).order_by(Tick.id)
            ).all()
    finally:
        engine.dispose()
    # The lease passes between processes: each tick starts after the one before it ended,
    # by either process's clock.
    for before, after in itertools.pairwise(ticks):
        assert before.finished_at is not None
        assert utc(after.started_at) >= utc(before.finished_at) - SLACK, (before, after)
    jobs = emulator.jobs().values()
    assert collections.Counter(job.amplitude_id for job in jobs) == {
        9200 + n: 1 for n in range(SUBJECTS)
    }
    assert emulator.rate_limited_count() == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"DSAR_CLOCK_SPEED": "3600"}, "DSAR_CLOCK_SPEED=3600 needs DSAR_CLOCK_EPOCH"),
        (
            {
                "DSAR_CLOCK_SPEED": "3600",
                "DSAR_CLOCK_EPOCH": "1800000000",
                "DSAR_API_BASE_URL": "https://amplitude.com/api/2/dsar/requests",
            },
            "DSAR_CLOCK_SPEED=3600 is refused: DSAR_API_BASE_URL is not on a loopback host",
        ),
    ],
    ids=["no epoch", "not loopback"],
)
@pytest.mark.parametrize("command", ["run", "tick"])
def test_a_fast_clock_is_refused_at_start(
    tmp_path: Path, emulator: Emulator, command: str, settings: dict[str, str], message: str
) -> None:
    env = service_env(emulator, f"sqlite:///{tmp_path}/dsar.db", f"file://{tmp_path}/files")
    env.update(settings)
    done = subprocess.run([DSAR, command], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert message in done.stderr
    assert emulator.calls() == []
