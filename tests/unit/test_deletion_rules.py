"""A deletion entry's life by table: batching, the POST answer, the listing, recovery after a
crash, overdue, cancel, verification and re-ingestion."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from dsar_scheduler.core.deletion import (
    MAX_LISTING_WINDOW,
    Batch,
    Change,
    Entry,
    EntryRow,
    Job,
    ListedEntry,
    after_post,
    batches,
    came_back,
    cancel_plan,
    cancel_refusal,
    checks_passed,
    lands_after,
    listing_due,
    listing_window,
    lost,
    overdue,
    progress,
    recheck_due,
    reconcile,
    still_there,
)

ME = "dsar-scheduler/r1"
NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)
TODAY = NOW.date()
DAY = date(2026, 12, 17)


def row(i: int, state: Entry, project: int = 1, **kw: object) -> EntryRow:
    return EntryRow(id=i, project_id=project, amplitude_id=1000 + i, state=state, **kw)  # type: ignore[arg-type]


def test_batches_split_per_project_and_at_100_ids() -> None:
    rows = [row(i, Entry.PENDING, project=1) for i in range(250)]
    rows += [row(500, Entry.PENDING, project=2), row(501, Entry.STAGING, project=2)]
    out = batches(rows)
    assert [(b.project_id, len(b.amplitude_ids)) for b in out] == [
        (1, 100),
        (1, 100),
        (1, 50),
        (2, 1),
    ]
    assert out[3].entry_ids == (500,) and out[3].amplitude_ids == (1500,)


def test_after_post_records_the_day_the_invalid_and_what_it_did_not_mention() -> None:
    batch = Batch(1, (1, 2, 3), (1001, 1002, 1003))
    job = Job(DAY, "Staging", (ListedEntry(1001, TODAY, ME),))
    changes, missing = after_post(batch, job, invalid_ids=[1002], requester=ME)
    assert changes[0] == Change(1, Entry.STAGING, DAY, TODAY, None, changes[0].reason)
    assert changes[1].state is Entry.INVALID and "nothing to delete" in changes[1].reason
    assert missing == [3]


@pytest.mark.parametrize(
    ("status", "scrub", "expected"),
    [
        ("staging", None, Entry.STAGING),
        ("Submitted", None, Entry.SUBMITTED),
        ("submitted", date(2026, 12, 18), Entry.SCRUBBED),
        ("DONE", date(2026, 12, 18), Entry.DONE),
    ],
)
def test_reconcile_follows_the_job(status: str, scrub: date | None, expected: Entry) -> None:
    entry = row(1, Entry.STAGING, day=DAY, requested_on_day=TODAY)
    job = Job(DAY, status, (ListedEntry(1001, TODAY, ME),), scrub)
    changes = reconcile([entry], [job], ME)
    if expected is Entry.STAGING:
        assert changes == []  # nothing changed: nothing recorded
    else:
        assert [c.state for c in changes] == [expected]
        assert changes[0].scrub_done == scrub


def test_reconcile_matches_only_our_requester() -> None:
    entry = row(1, Entry.STAGING, day=DAY)
    theirs = Job(DAY, "done", (ListedEntry(1001, TODAY, "someone-else"),))
    assert reconcile([entry], [theirs], ME) == []


def test_a_crash_mid_post_is_recovered_from_the_listing_not_sent_twice() -> None:
    sent = row(1, Entry.SUBMITTING)
    never = row(2, Entry.SUBMITTING)
    job = Job(DAY, "staging", (ListedEntry(1001, TODAY, ME),))
    assert [c.state for c in reconcile([sent, never], [job], ME)] == [Entry.STAGING]
    assert lost([sent, never], [job], ME) == [2]


def test_listing_window_is_bounded() -> None:
    assert listing_window([row(1, Entry.VERIFIED)], TODAY) is None
    start, end = listing_window(
        [row(1, Entry.STAGING, day=DAY, requested_on_day=TODAY)], TODAY
    ) or (None, None)
    assert start == TODAY and end == DAY + timedelta(days=10)
    old = row(2, Entry.SUBMITTED, day=date(2027, 12, 1), requested_on_day=date(2026, 1, 1))
    start, end = listing_window([old], TODAY) or (None, None)
    assert start is not None and end is not None and end - start == MAX_LISTING_WINDOW


def test_listing_due_and_overdue() -> None:
    assert listing_due(None, NOW, timedelta(hours=6))
    assert not listing_due(NOW - timedelta(hours=5), NOW, timedelta(hours=6))
    assert listing_due(NOW - timedelta(hours=6), NOW, timedelta(hours=6))
    sent_31d = NOW - timedelta(days=31)
    assert overdue(row(1, Entry.SUBMITTED, submitted_at=sent_31d), NOW)
    assert not overdue(row(1, Entry.SUBMITTED, submitted_at=NOW - timedelta(days=29)), NOW)
    assert not overdue(row(1, Entry.DONE, submitted_at=sent_31d), NOW)
    assert not overdue(row(1, Entry.VERIFIED, submitted_at=sent_31d), NOW)


@pytest.mark.parametrize(
    ("state", "day", "today", "refused"),
    [
        (Entry.PENDING, None, TODAY, False),
        (Entry.STAGING, DAY, DAY - timedelta(days=4), False),
        (Entry.STAGING, DAY, DAY - timedelta(days=3), False),
        (Entry.STAGING, DAY, DAY - timedelta(days=2), True),
        (Entry.SUBMITTED, DAY, TODAY, True),
        (Entry.DONE, DAY, TODAY, True),
    ],
)
def test_cancel(state: Entry, day: date | None, today: date, refused: bool) -> None:
    reason = cancel_refusal(row(1, state, day=day), today)
    assert (reason is not None) == refused


def test_rechecks_at_7_and_30_days() -> None:
    verified = NOW - timedelta(days=8)
    assert recheck_due(verified, 0, NOW)
    assert not recheck_due(verified, 1, NOW)
    assert recheck_due(NOW - timedelta(days=30), 1, NOW)
    assert not recheck_due(NOW - timedelta(days=90), 2, NOW)


@pytest.mark.parametrize(
    ("rows", "today", "staging", "pending", "refused"),
    [
        # every entry still cancellable: the staged ones go by DELETE, the pending in the ledger
        ([row(1, Entry.STAGING, day=DAY), row(2, Entry.PENDING)], TODAY, [1], [2], None),
        # nothing at Amplitude to take back: passed over, never a refusal
        (
            [row(1, Entry.INVALID), row(2, Entry.CANCELLED), row(3, Entry.PENDING)],
            TODAY,
            [],
            [3],
            None,
        ),
        # one entry past the cutoff refuses the whole cancel, named with its project
        (
            [row(1, Entry.STAGING, day=DAY), row(2, Entry.STAGING, project=9, day=TODAY)],
            TODAY,
            [],
            [],
            "entry 2 (project 9)",
        ),
        # a job already running: refused, and the others counted
        (
            [row(i, Entry.SUBMITTED, day=DAY) for i in (1, 2, 3)],
            TODAY,
            [],
            [],
            "entry 1 (project 1): the deletion is submitted",
        ),
        ([row(1, Entry.SUBMITTING)], TODAY, [], [], "the deletion is submitting"),
        ([row(1, Entry.STAGING, day=DAY)], DAY - timedelta(days=2), [], [], "three days before"),
    ],
)
def test_cancel_plan_is_all_or_nothing(
    rows: list[EntryRow],
    today: date,
    staging: list[int],
    pending: list[int],
    refused: str | None,
) -> None:
    plan = cancel_plan(rows, today)
    assert [r.id for r in plan.staging] == staging
    assert [r.id for r in plan.pending] == pending
    if refused is None:
        assert plan.refusal is None
    else:
        assert plan.refusal is not None and refused in plan.refusal
        assert plan.staging == () and plan.pending == ()


def test_cancel_plan_counts_the_other_refused_entries() -> None:
    plan = cancel_plan([row(i, Entry.SUBMITTED, day=DAY) for i in (1, 2, 3)], TODAY)
    assert plan.refusal is not None and plan.refusal.endswith("(and 2 more entries)")


@pytest.mark.parametrize(
    ("verified_days_ago", "passed"), [(6, 0), (7, 1), (29, 1), (30, 2), (400, 2)]
)
def test_checks_passed_counts_every_check_whose_day_has_come(
    verified_days_ago: int, passed: int
) -> None:
    assert checks_passed(NOW - timedelta(days=verified_days_ago), NOW) == passed


def test_verification_and_reingestion() -> None:
    matches = [("alice", 11), ("alice", 99), ("bob", 12)]
    assert still_there({11, 50}, matches) == {11}
    assert came_back("alice", {11}, matches) == {99}
    assert came_back(None, {11}, matches) == frozenset()


def test_progress_is_the_least_advanced_live_entry() -> None:
    assert progress({}) is None
    assert progress({1: Entry.VERIFIED, 2: Entry.STAGING, 3: Entry.INVALID}) is Entry.STAGING
    assert progress({1: Entry.VERIFIED, 2: Entry.INVALID}) is Entry.VERIFIED
    assert progress({1: Entry.INVALID}) is Entry.INVALID


@pytest.mark.parametrize(
    ("job_day", "deadline", "late"),
    [
        # done about five days after its day: the 22nd, inside a deadline at the 22nd's end
        (date(2026, 12, 17), datetime(2026, 12, 22, 23, 59, 59, 999999, tzinfo=UTC), False),
        (date(2026, 12, 18), datetime(2026, 12, 22, 23, 59, 59, 999999, tzinfo=UTC), True),
        (date(2026, 12, 17), datetime(2027, 1, 19, tzinfo=UTC), False),
    ],
)
def test_a_job_landing_after_the_deadline(job_day: date, deadline: datetime, late: bool) -> None:
    assert lands_after(job_day, deadline) is late


def test_the_listing_window_is_one_the_client_sends() -> None:
    """The rule's widest window is within the client's guard, which refuses a wider one."""
    from dsar_scheduler.adapters.amplitude.privacy import MAX_LISTING_DAYS

    assert timedelta(days=MAX_LISTING_DAYS) >= MAX_LISTING_WINDOW
