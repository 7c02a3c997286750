"""The periodic audit chain check (``tick.audit``) in the real tick, on SQLite and PostgreSQL:
it finds a broken chain (among the requests that changed, and by its sweep among the old
ones), sets the gauge the alert reads, counts its checks, and clears once the chain is put
right; its work per run is bounded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.tick import audit
from tests.support.harness import Harness, harness

FAST = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}


def gauge(h: Harness, name: str = "dsar_audit_chain_broken_requests") -> float | None:
    return h.app.metrics.registry.get_sample_value(name)


def checks(h: Harness, result: str) -> float:
    value = h.app.metrics.registry.get_sample_value(
        "dsar_audit_chain_checks_total", {"result": result}
    )
    return value or 0.0


def sql(h: Harness, statement: str, **params: object) -> None:
    with h.app.sessions() as session, session.begin():
        session.execute(text(statement), params)


def tick_after_the_chore_interval(h: Harness) -> None:
    h.clock.advance(audit.EVERY)
    h.tick()


def test_a_tampered_event_is_found_counted_and_cleared_once_restored(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(101)
        h.enqueue(102)
        h.run_until(h.all_final)
        assert gauge(h) == 0
        assert checks(h, "ok") >= 2 and checks(h, "broken") == 0
        assert gauge(h, "dsar_audit_chain_last_check_timestamp_seconds") is not None
        events = h.app.ledger.requests.events(2)
        sql(h, "UPDATE dsar_request_events SET reason = 'edited' WHERE id = :i", i=events[2].id)
        tick_after_the_chore_interval(h)  # no new events: the sweep finds it
        assert gauge(h) == 1
        assert checks(h, "broken") == 1
        progress = h.app.ledger.audit.progress()
        assert list(progress.broken) == [2]
        assert f"event {events[2].id} (position 2): edited" in progress.broken[2]
        sql(
            h,
            "UPDATE dsar_request_events SET reason = :r WHERE id = :i",
            r=events[2].reason,
            i=events[2].id,
        )
        tick_after_the_chore_interval(h)
        assert gauge(h) == 0
        assert h.app.ledger.audit.progress().broken == {}


def test_the_check_runs_at_most_once_per_interval(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        h.enqueue(101)
        h.tick()
        first = h.app.ledger.audit.progress().checked_at
        assert first == clock.now()
        clock.advance(audit.EVERY - timedelta(seconds=1))
        h.tick()
        assert h.app.ledger.audit.progress().checked_at == first
        clock.advance(timedelta(seconds=1))
        h.tick()
        assert h.app.ledger.audit.progress().checked_at == clock.now()


def test_each_run_is_bounded_the_sweep_rotates_and_new_events_carry_over(
    database_url: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "SWEEP", 2)
    monkeypatch.setattr(audit, "RECENT_EVENTS", 3)
    with harness(database_url, tmp_path, clock, emulator_options=FAST) as h:
        for subject in range(101, 106):
            h.enqueue(subject)
        h.tick()  # admits 5 (5 events) and submits: 10 more events; checks once
        first = h.app.ledger.audit.progress()
        assert (first.event_watermark, first.sweep_cursor) == (3, 2)
        assert checks(h, "ok") == 3  # requests 1-3 (new events) and 1-2 (sweep), once each
        h.tick()  # the chore is due again at once: new events were left over
        second = h.app.ledger.audit.progress()
        assert (second.event_watermark, second.sweep_cursor) == (6, 4)
        h.tick()
        assert h.app.ledger.audit.progress().sweep_cursor == 0  # 5 reached: starts again
