"""The call ledger does not grow forever: the tick deletes ``dsar_api_calls`` rows older than
DSAR_CALL_RETENTION_DAYS, at most about once an hour, a bounded number per transaction and per
tick, and never one that the budget, the backoff or ``dsar status`` still reads."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import ApiCall
from dsar_scheduler.config import ConfigError, load_settings
from dsar_scheduler.ledger.budget import CALL_HISTORY_NEEDED
from dsar_scheduler.tick import limits as tick_limits
from tests.support.harness import Harness, harness

DAY = timedelta(days=1)


def add_calls(h: Harness, *ages: timedelta, cost: int = 1) -> None:
    """Finished calls, each ``age`` before the clock's now."""
    now = h.clock.now()
    with h.app.sessions() as session, session.begin():
        session.execute(
            insert(ApiCall),
            [
                {
                    "kind": "status",
                    "cost": cost,
                    "reserved_at": now - age,
                    "counted_at": now - age,
                    "finished_at": now - age,
                    "outcome": "ok",
                    "status_code": 200,
                    "request_id": None,
                }
                for age in ages
            ],
        )


def older_than(h: Harness, age: timedelta) -> int:
    with h.app.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(ApiCall)
                .where(ApiCall.reserved_at < h.clock.now() - age)
            )
            or 0
        )


def total(h: Harness) -> int:
    with h.app.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(ApiCall)) or 0)


def test_old_calls_are_pruned_about_hourly_and_the_budget_is_untouched(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock) as h:
        add_calls(h, *[40 * DAY] * 5, 31 * DAY)
        add_calls(h, 29 * DAY, 2 * DAY, 3 * timedelta(hours=1))
        add_calls(h, timedelta(minutes=10), timedelta(minutes=50), cost=8)  # in the window
        spent = h.app.ledger.budget.spent(clock.now())
        assert spent == 16

        report = h.tick()
        assert report.outcome == "ok"
        assert older_than(h, 30 * DAY) == 0
        assert total(h) == 5  # everything younger than 30 days stays
        assert h.app.ledger.budget.spent(clock.now()) == spent

        add_calls(h, 45 * DAY, 45 * DAY)
        clock.advance(timedelta(minutes=30))
        h.tick()
        assert older_than(h, 30 * DAY) == 2  # pruned at most about once an hour
        clock.advance(timedelta(minutes=31))
        h.tick()
        assert older_than(h, 30 * DAY) == 0


def test_the_retention_setting_decides_what_goes(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, call_retention_days=2) as h:
        add_calls(h, 3 * DAY, 3 * DAY, 1.5 * DAY, timedelta(minutes=5))
        h.tick()
        assert total(h) == 2
        assert older_than(h, 2 * DAY) == 0


def test_a_backlog_goes_in_bounded_batches_over_several_ticks(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tick_limits, "PRUNE_BATCH", 3)
    monkeypatch.setattr(tick_limits, "PRUNE_BATCHES", 2)
    with harness(database_url, tmp_path, clock) as h:
        sizes: list[int] = []
        prune = h.app.ledger.budget.prune_calls

        def spy(before: object, limit: int) -> int:
            sizes.append(limit)
            return prune(before, limit)  # type: ignore[arg-type]

        monkeypatch.setattr(h.app.ledger.budget, "prune_calls", spy)
        add_calls(h, *[60 * DAY] * 10)
        h.tick()
        assert sizes == [3, 3]  # two transactions of at most three rows
        assert total(h) == 4  # the rest waits for the next tick, not for the next hour
        h.tick()
        assert total(h) == 0
        add_calls(h, 60 * DAY)
        h.tick()
        assert total(h) == 1  # the backlog is gone: back to once an hour


def test_a_failing_prune_does_not_fail_the_tick(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with harness(database_url, tmp_path, clock) as h:

        def broken(before: object, limit: int) -> int:
            raise RuntimeError("statement timeout")

        monkeypatch.setattr(h.app.ledger.budget, "prune_calls", broken)
        h.enqueue(401)
        report = h.tick()
        assert report.outcome == "ok" and report.submitted == 1


def test_retention_cannot_go_below_what_the_ledger_reads() -> None:
    assert timedelta(days=1) >= CALL_HISTORY_NEEDED
    assert load_settings(call_retention_days=1).call_retention_days == 1
    assert load_settings().call_retention_days == 30
    with pytest.raises(ConfigError, match="DSAR_CALL_RETENTION_DAYS"):
        load_settings(call_retention_days=0.5)
