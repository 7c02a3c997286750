"""Waking before the next regular tick: the tick says when there is work again, and the
daemon brings its next run forward to then (never back)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.runtime.daemon import TICK_JOB, Daemon
from tests.support.harness import harness

FAST = {"completion_min_s": 3600, "completion_max_s": 2 * 3600}


def test_a_tick_stopped_by_a_full_window_wakes_when_budget_returns(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    # 40 an hour; one request with 24 months x 2 projects = 48 files cannot be fetched in
    # one window once its POST (8) and a poll are paid.
    with harness(
        database_url,
        tmp_path,
        clock,
        cost_budget_per_hour=40,
        budget_fraction=1.0,
        tick_interval_seconds=3600,
        emulator_options={**FAST, "budget_per_hour": 40},
    ) as h:
        h.enqueue(4242, "2024-01-01", "2025-12-31")
        submitted_at = clock.now()
        assert h.tick().submitted == 1
        remote = h.app.ledger.requests.get(1).remote_request_id  # type: ignore[union-attr]
        assert remote is not None
        h.emulator.complete(remote)
        clock.advance(timedelta(minutes=30))
        report = h.tick()
        assert report.stopped_by == "budget window full"
        assert 0 < report.files_stored < 48
        # the POST (8 of 40) leaves the window an hour after it finished: 5% of the budget
        # is back then, half an hour before the next regular tick
        assert report.wake_at == submitted_at + timedelta(hours=1)
        clock.set(report.wake_at + timedelta(seconds=1))
        assert h.tick().files_stored > 0
        h.run_until(h.all_final, step=timedelta(hours=1))
        assert h.emulator.rate_limited_count() == 0


def test_the_daemon_brings_its_next_tick_forward_never_back(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock) as h:
        daemon = Daemon(h.app, interval_seconds=3600)
        daemon.scheduler.start(paused=True)
        daemon.scheduler.add_job(
            daemon._tick,
            "interval",
            seconds=3600,
            id=TICK_JOB,
            next_run_time=datetime.now(UTC) + timedelta(hours=1),
        )
        try:
            before = daemon.scheduler.get_job(TICK_JOB).next_run_time
            daemon._wake_early(clock.now() + timedelta(hours=2))  # later: ignored
            assert daemon.scheduler.get_job(TICK_JOB).next_run_time == before
            daemon._wake_early(clock.now() + timedelta(minutes=5))
            sooner = daemon.scheduler.get_job(TICK_JOB).next_run_time
            expected = datetime.now(UTC) + timedelta(minutes=5)
            assert abs((sooner - expected).total_seconds()) < 5
        finally:
            daemon.scheduler.shutdown(wait=False)
