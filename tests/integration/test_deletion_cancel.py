"""`dsar cancel ID` of a deletion, against the emulator on a fake clock (SQLite and
PostgreSQL): while its entries are staging they are taken out of Amplitude's jobs (the
emulator's job no longer holds them, and nothing is deleted); past the three-day cutoff, or
once Amplitude says the job left staging, the cancel is refused with the reason and nothing
is lost; a request resolving, held for review or with nothing sent yet needs no call; an
earlier cancel whose answer was lost is recognised from the listing."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.runtime.cli import main
from dsar_scheduler.runtime.deletion_cancel import cancel_deletion
from dsar_scheduler.runtime.operations import cancel, retry
from dsar_scheduler.runtime.status import describe_request
from dsar_scheduler.tools.emulator.calls import CallRecord
from tests.support.deletion_service import (
    P1,
    deletion_calls,
    deletion_posts,
    entries_of,
    new_deletion,
    pick_clear,
    reasons_of,
    service,
    state_of,
)
from tests.support.harness import Harness
from tests.support.privacy_emulator import START, advance_to

BY = "by an operator (the subject withdrew)"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def in_jobs(h: Harness, projects: tuple[int, ...]) -> set[int]:
    """Every Amplitude ID in the emulator's deletion jobs of these projects."""
    return {
        a
        for p in projects
        for job in h.emulator.privacy.deletion_jobs(p)
        for a in job.amplitude_ids
    }


def job_day(h: Harness, project: int) -> date:
    return h.emulator.privacy.deletion_jobs(project)[-1].day


def deletes(h: Harness) -> list[CallRecord]:
    return [c for c in deletion_calls(h) if c.method == "DELETE"]


def kinds(h: Harness, request_id: int) -> list[str]:
    return [k for k, *_ in h.app.ledger.deletions.receipts(request_id)]


def fake_sleep(clock: FakeClock) -> Callable[[float], None]:
    """A wait for a key's limits that moves the fake clock instead."""

    def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    return sleep


def test_a_staging_deletion_is_taken_out_of_amplitudes_jobs(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock) as h:
        subject = pick_clear(h, merged=True)  # several IDs in P1: one DELETE a second there
        rid = new_deletion(h, subject.user_id)
        h.tick()
        staged = entries_of(h, rid)
        assert set(staged.values()) == {"staging"} and len(staged) > len(subject.projects)
        assert {a for _, a in staged} <= in_jobs(h, subject.projects)
        done, message = cancel_deletion(
            h.app.ledger, h.app.privacy, rid, clock, BY, sleep=fake_sleep(clock)
        )
        assert done, message
        assert f"{len(staged)} entries taken out" in message
        assert state_of(h, rid) == "cancelled"
        assert set(entries_of(h, rid).values()) == {"cancelled"}
        assert {a for _, a in staged}.isdisjoint(in_jobs(h, subject.projects))
        assert len(deletes(h)) == len(staged) and {c.status for c in deletes(h)} == {200}
        assert kinds(h, rid).count("cancel") == len(staged)
        reasons = reasons_of(h, rid)
        assert sum("taken out of Amplitude's job of" in r for r in reasons) == len(staged)
        assert reasons[-1].startswith(f"cancelled {BY} while deleting")
        assert h.emulator.privacy.rate_limited_count() == 0  # one call a second per key
        # nothing more is sent, and Amplitude deletes nothing
        for _ in range(25):
            clock.advance(timedelta(days=1))
            h.tick()
        assert state_of(h, rid) == "cancelled"
        assert len(deletion_posts(h)) == len(subject.projects)
        live = h.emulator.privacy.identity(subject, P1)
        assert live is not None and live.canonical_id == subject.amplitude_id


def test_the_cancel_command_takes_out_one_entry_per_project_key(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock) as h:
        subject = pick_clear(h, merged=False)
        rid = new_deletion(h, subject.user_id)
        h.tick()
        text = describe_request(h.app.engine, rid, False) or ""
        assert f"deletion of user_id {subject.user_id}: {len(subject.projects)} staging" in text
        assert "next: waits in Amplitude's job; `dsar cancel ID` can take it out until" in text
        assert f"amplitude_id {subject.amplitude_id} (search) staging in Amplitude's job" in text
        assert text.count(" post ") == len(subject.projects)
        clock.advance(timedelta(seconds=1))
        outcome = cancel(
            h.app.ledger,
            rid,
            clock.now(),
            "the subject withdrew",
            privacy=h.app.privacy,
            clock=clock,
        )
        assert outcome.ok, outcome.message
        assert state_of(h, rid) == "cancelled"
        assert len(deletes(h)) == len(subject.projects)
        assert subject.amplitude_id not in in_jobs(h, subject.projects)
        detail = json.loads(describe_request(h.app.engine, rid, True) or "{}")
        assert detail["next"] == "nothing: cancelled"
        assert {e["state"] for e in detail["deletion"]["entries"]} == {"cancelled"}
        kept = [r["kind"] for r in detail["deletion"]["receipts"]]
        assert kept.count("cancel") == len(subject.projects)


def test_a_cancel_past_the_cutoff_is_refused_and_changes_nothing(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock) as h:
        subject = pick_clear(h, merged=False)
        rid = new_deletion(h, subject.user_id)
        h.tick()
        before, events = entries_of(h, rid), reasons_of(h, rid)
        advance_to(clock, job_day(h, P1) - timedelta(days=2))
        outcome = cancel(h.app.ledger, rid, clock.now(), None, privacy=h.app.privacy, clock=clock)
        assert not outcome.ok
        assert "stops taking cancellations three days before it runs" in outcome.message
        assert "nothing changed" in outcome.message
        assert deletes(h) == [] and entries_of(h, rid) == before
        assert state_of(h, rid) == "deleting" and reasons_of(h, rid) == events


def test_a_job_that_left_staging_meanwhile_refuses_with_amplitudes_reason(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    # Amplitude closes this job five days before it runs: our three-day rule lets the cancel
    # try, and Amplitude's 400 stops it
    with service(database_url, tmp_path, clock, staging_cutoff_days=5) as h:
        subject = pick_clear(h, merged=False)
        rid = new_deletion(h, subject.user_id)
        h.tick()
        before = entries_of(h, rid)
        advance_to(clock, job_day(h, P1) - timedelta(days=4))
        done, message = cancel_deletion(
            h.app.ledger, h.app.privacy, rid, clock, BY, sleep=fake_sleep(clock)
        )
        assert not done
        assert "has left staging" in message and "HTTP 400" in message
        assert "the rest of the deletion goes on" in message
        assert [c.status for c in deletes(h)] == [400]
        assert entries_of(h, rid) == before and state_of(h, rid) == "deleting"
        assert "cancel refused, the deletion goes on" in reasons_of(h, rid)[-1]
        receipts = h.app.ledger.deletions.receipts(rid)
        assert [(k, code) for k, _, _, _, code in receipts if k == "cancel"] == [("cancel", 400)]
        assert subject.amplitude_id in in_jobs(h, subject.projects)


def test_requests_with_nothing_sent_are_cancelled_without_a_call(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock) as h:
        resolving = new_deletion(h, "someone")
        pending = new_deletion(h, "nobody-known")
        assert h.app.ledger.deletions.resolved(pending, {P1: {1_000: "queue"}}, [], clock.now())
        outcome = cancel(h.app.ledger, resolving, clock.now(), None)
        assert outcome.ok and "no deletion had been sent to Amplitude" in outcome.message
        assert state_of(h, resolving) == "cancelled"
        # pending entries (no tick has sent them yet): cancelled in the ledger alone
        outcome = cancel(h.app.ledger, pending, clock.now(), "mistake", privacy=None)
        assert outcome.ok and "0 entries taken out" in outcome.message
        assert "1 entry never sent" in outcome.message
        assert entries_of(h, pending) == {(P1, 1_000): "cancelled"}
        refused = retry(h.app.ledger, pending, clock.now())
        assert not refused.ok and "cannot be queued again" in refused.message
        assert state_of(h, pending) == "cancelled"
        head = h.emulator.privacy.subjects()[0]
        held = new_deletion(h, head.user_id[:-1])  # only a prefix of others: review
        h.tick()
        assert state_of(h, held) == "review"
        assert state_of(h, resolving) == "cancelled" and state_of(h, pending) == "cancelled"
        assert deletion_calls(h) == []  # neither resolved nor sent by the tick
        assert cancel(h.app.ledger, held, clock.now(), None).ok
        assert state_of(h, held) == "cancelled"
        h.tick()
        assert deletion_calls(h) == []


def test_an_earlier_cancel_whose_answer_was_lost_is_recognised_from_the_listing(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock) as h:
        subject = pick_clear(h, merged=False)
        rid = new_deletion(h, subject.user_id)
        h.tick()
        assert h.app.privacy is not None
        # a cancel reached Amplitude, and died before it recorded the answer
        clock.advance(timedelta(seconds=1))
        h.app.privacy.cancel_deletion(P1, subject.amplitude_id, job_day(h, P1))
        clock.advance(timedelta(seconds=1))
        done, message = cancel_deletion(
            h.app.ledger, h.app.privacy, rid, clock, BY, sleep=fake_sleep(clock)
        )
        assert done, message
        assert set(entries_of(h, rid).values()) == {"cancelled"}
        assert [c.status for c in deletes(h)].count(404) == 1
        assert any("an earlier cancel's answer was lost" in r for r in reasons_of(h, rid))
        assert {"cancel", "listing"} <= set(kinds(h, rid))


def test_the_cli_cancels_a_deletion_with_the_projects_configured(
    database_url: str,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with service(database_url, tmp_path, clock) as h:
        rid = new_deletion(h, "nobody-known")
        assert h.app.ledger.deletions.resolved(rid, {P1: {1_000: "queue"}}, [], clock.now())
        settings = h.app.settings
        for key, value in {
            "DSAR_DATABASE_URL": database_url,
            "DSAR_PROJECTS_FILE": str(settings.projects_file),
            "DSAR_DELETION_API_URL": settings.deletion_api_url,
            "DSAR_USER_SEARCH_API_URL": settings.user_search_api_url,
            "DSAR_USER_ACTIVITY_API_URL": settings.user_activity_api_url,
            "DSAR_API_BASE_URL": settings.api_base_url,
            "DSAR_ALLOW_HTTP": "true",
            "AMPLITUDE_API_KEY": "test-key",
            "AMPLITUDE_SECRET_KEY": "test-secret-value",
        }.items():
            monkeypatch.setenv(key, value)
        code = main(["cancel", str(rid), "--reason", "ticket PRIV-9"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "cancelled by an operator (ticket PRIV-9) while deleting" in out
        assert state_of(h, rid) == "cancelled" and deletion_calls(h) == []
        code = main(["cancel", str(rid)])
        assert code == 1 and "cancelled, which is final" in capsys.readouterr().err
