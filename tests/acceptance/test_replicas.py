"""Two ``dsar run`` processes against one database: the work is shared, never duplicated,
and the emulator's own record of calls agrees with the ledger.

The proof comes from the emulator's side: it records every request it received, so a queue
row submitted twice or a file downloaded twice shows there whatever the ledger believes.
"""

from __future__ import annotations

import collections
from pathlib import Path

from sqlalchemy import func, select

from dsar_scheduler.adapters.db import ApiCall, make_engine
from dsar_scheduler.tools.emulator import Emulator
from tests.support.procs import (
    DaemonProcess,
    enqueue,
    requests_by_state,
    service_env,
    wall_emulator_fixture,
)

SUBJECTS = 8


emulator = wall_emulator_fixture(
    seed=11, name="emulator", completion_min_s=0.5, completion_max_s=2.0
)


def _ledger_cost(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.coalesce(func.sum(ApiCall.cost), 0))))
    finally:
        engine.dispose()


def test_two_replicas_share_the_work_without_duplicates(
    database_url: str, tmp_path: Path, emulator: Emulator
) -> None:
    env = service_env(emulator, database_url, f"file://{tmp_path}/files")
    rows = [
        {"amplitude_id": str(5000 + n), "start_date": "2025-01-01", "end_date": "2025-03-31"}
        for n in range(SUBJECTS)
    ]
    enqueue(env, tmp_path, rows)
    replicas = [DaemonProcess(env, tmp_path / f"replica-{n}.log").start() for n in range(2)]
    try:
        for replica in replicas:
            replica.wait_healthy()
        replicas[0].wait_until(
            lambda: requests_by_state(database_url) == {"stored": SUBJECTS},
            90,
            "every request stored",
        )
        for replica in replicas:
            assert replica.terminate() == 0
    finally:
        for replica in replicas:
            replica.close()

    # Both processes tried to tick; the lease let one at a time do the work (which one, and
    # whether the other ever got a turn, is up to timing: the emulator's record is the proof).
    logs = [replica.logs(tail=100_000) for replica in replicas]
    assert all('"tick.finished"' in log or '"tick.skipped"' in log for log in logs)

    # Each subject was submitted exactly once, each file downloaded exactly once.
    jobs = emulator.jobs().values()
    per_subject = collections.Counter(job.amplitude_id for job in jobs)
    assert per_subject == {5000 + n: 1 for n in range(SUBJECTS)}
    downloads = collections.Counter(
        call.path for call in emulator.calls("s3") if call.status == 200
    )
    expected = sum(job.file_count for job in jobs)
    assert len(downloads) == expected and set(downloads.values()) == {1}
    assert emulator.rate_limited_count() == 0

    # The ledger's cost is the emulator's, call for call.
    assert _ledger_cost(database_url) == emulator.cost_spent_total()
    print(  # run with -s to see the figures
        f"\ntwo replicas, budget not binding: {len(emulator.calls('api'))} API calls, cost "
        f"{emulator.cost_spent_total()}, {expected} files, 429s {emulator.rate_limited_count()}"
    )
    stored = list((tmp_path / "files").rglob("*.json.gz"))
    assert len(stored) == expected


#: The org's budget in the binding run: far less than 12 subjects need (each costs a POST of
#: 8, a few polls and 6 downloads), so both replicas meet the ceiling within the hour.
TIGHT_BUDGET = 120


tight_emulator = wall_emulator_fixture(
    seed=12,
    name="tight_emulator",
    completion_min_s=0.5,
    completion_max_s=2.0,
    budget_per_hour=TIGHT_BUDGET,
)


def _metric_sum(body: str, name: str) -> float:
    """Sum of every sample of ``name`` in a /metrics body (all label sets)."""
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            rest = line[len(name) :]
            if rest[:1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_replicas_where_the_budget_binds_stay_within_it_together(
    database_url: str, tmp_path: Path, tight_emulator: Emulator
) -> None:
    """Demand far above the hour's budget, two processes: together they spend up to the
    ceiling and stop there, with no 429; the emulator's record of cost, not the ledger's,
    is what is checked against the budget."""
    emulator = tight_emulator
    env = service_env(emulator, database_url, f"file://{tmp_path}/files", budget_fraction=1.0)
    rows = [
        {"amplitude_id": str(7000 + n), "start_date": "2025-01-01", "end_date": "2025-03-31"}
        for n in range(12)
    ]
    enqueue(env, tmp_path, rows)
    replicas = [DaemonProcess(env, tmp_path / f"replica-{n}.log").start() for n in range(2)]
    seen: list[int] = []

    def spending_has_stopped() -> bool:
        seen.append(emulator.cost_spent_total())
        # about 4 s without a new charge (the loop polls every 0.2 s), most of the hour spent
        return len(seen) > 20 and len(set(seen[-20:])) == 1 and seen[-1] >= 0.8 * TIGHT_BUDGET

    try:
        for replica in replicas:
            replica.wait_healthy()
        replicas[0].wait_until(spending_has_stopped, 90, "spending to reach the ceiling")
        scrapes = [replica.get("/metrics") for replica in replicas]
        for replica in replicas:
            assert replica.terminate() == 0
    finally:
        for replica in replicas:
            replica.close()

    spent, calls = emulator.cost_spent_total(), len(emulator.calls("api"))
    states = requests_by_state(database_url)
    print(  # the figures the issue asks for (run with -s to see them)
        f"\nbinding budget {TIGHT_BUDGET}/h, two replicas: {calls} API calls, cost {spent} "
        f"in the first hour, 429s {emulator.rate_limited_count()}, requests {states}"
    )
    assert spent <= TIGHT_BUDGET  # across both processes, by Amplitude's own count
    assert emulator.rate_limited_count() == 0
    assert emulator.cost_in_window() == spent  # all of it inside one rolling hour
    # Demand exceeded the budget: work is left waiting for the next hour.
    assert states.get("stored", 0) < 12
    assert _ledger_cost(database_url) == spent  # call for call
    # Both processes took part (ticked or found the lease taken).
    logs = [replica.logs(tail=100_000) for replica in replicas]
    assert all('"tick.finished"' in log or '"tick.skipped"' in log for log in logs)
    bodies = [s.text for s in scrapes if s is not None]
    assert len(bodies) == 2
    # Each replica reads the same shared window from the ledger: the whole hour is spent.
    assert [_metric_sum(b, "dsar_budget_cost_in_window") for b in bodies] == [spent, spent]
