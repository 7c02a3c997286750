"""Whole ticks driving deletions against the emulator's privacy endpoints over loopback HTTP,
on one shared fake clock, on SQLite and PostgreSQL: a subject resolved, deleted and verified
with its receipts; an ambiguous subject held for review with nothing sent; a crash between
the claim and the POST's answer recovered by the listing without a second POST; and each
project key kept to one deletion call a second across ticks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import pytest

from dsar_scheduler.adapters.amplitude import (
    ApiError,
    Cancellation,
    DeletionListing,
    DeletionReceipt,
    ErrorKind,
    PrivacyApi,
    UserActivity,
    UserSearch,
)
from dsar_scheduler.adapters.clock import FakeClock
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
from tests.support.privacy_emulator import START


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def test_a_subject_is_resolved_deleted_and_verified(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock) as h:
        subject = pick_clear(h, merged=True)
        rid = new_deletion(h, subject.user_id)
        h.tick()
        assert state_of(h, rid) == "deleting"
        expected = {
            (p, a) for p in subject.projects for a in (subject.amplitude_id, *subject.merged_ids)
        }
        entries = entries_of(h, rid)
        assert set(entries) == expected
        assert set(entries.values()) == {"staging"}  # one POST per project key, answered
        assert len(deletion_posts(h)) == len(subject.projects)
        days = {j.day for p in subject.projects for j in h.emulator.privacy.deletion_jobs(p)}
        for _ in range(40):
            clock.advance(timedelta(days=1))
            h.tick()
            if state_of(h, rid) == "deleted":
                break
        assert state_of(h, rid) == "deleted"
        assert set(entries_of(h, rid).values()) == {"verified"}
        # done only comes at least five days after the job's day (the scrub, then backups)
        assert clock.now().date() >= max(days) + timedelta(days=5)
        kinds = [r[0] for r in h.app.ledger.deletions.receipts(rid)]
        assert kinds[: len(h.app.settings.projects)] == ["search"] * len(h.app.settings.projects)
        assert {"post", "listing", "verify"} <= set(kinds)
        assert kinds.index("post") < kinds.index("listing") < kinds.index("verify")
        assert len(deletion_posts(h)) == len(subject.projects)  # never sent twice
        assert h.emulator.privacy.rate_limited_count() == 0


def test_an_ambiguous_subject_is_held_and_nothing_is_posted(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock) as h:
        head = h.emulator.privacy.subjects()[0]  # heads a family: its ID prefixes theirs
        rid = new_deletion(h, head.user_id[:-1])  # matches only as a prefix of others
        h.tick()
        assert state_of(h, rid) == "review"
        clock.advance(timedelta(days=1))
        h.tick()
        assert state_of(h, rid) == "review"
        assert entries_of(h, rid) == {}
        assert deletion_posts(h) == []
        kinds = {r[0] for r in h.app.ledger.deletions.receipts(rid)}
        assert kinds == {"search"}
        reasons = reasons_of(h, rid)
        assert "user IDs that begin with the subject's" in reasons[-1]
        assert head.user_id not in " ".join(reasons)  # the candidates are in receipts only


class CrashAfterPost:
    """The real client, except that the process 'dies' once a POST reached Amplitude and
    before its answer is recorded (as a kill -9 would)."""

    def __init__(self, inner: PrivacyApi) -> None:
        self.inner = inner
        self.crashes = 0

    def delete_users(
        self, project: int, amplitude_ids: Sequence[int], user_ids: Sequence[str], requester: str
    ) -> DeletionReceipt:
        self.inner.delete_users(project, amplitude_ids, user_ids, requester)
        self.crashes += 1
        raise RuntimeError("killed after the POST reached Amplitude")

    def list_deletions(self, project: int, start_day: date, end_day: date) -> DeletionListing:
        return self.inner.list_deletions(project, start_day, end_day)

    def cancel_deletion(self, project: int, amplitude_id: int, day: date) -> Cancellation:
        return self.inner.cancel_deletion(project, amplitude_id, day)

    def search_user(self, project: int, user: str) -> UserSearch:
        return self.inner.search_user(project, user)

    def user_activity(self, project: int, amplitude_id: int) -> UserActivity:
        return self.inner.user_activity(project, amplitude_id)


def test_a_crash_after_the_post_is_recovered_by_the_listing_without_a_second_post(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock) as h:
        subject = pick_clear(h, merged=False)
        rid = new_deletion(h, subject.user_id)
        real = h.app.privacy
        assert real is not None
        crashing = CrashAfterPost(real)
        h.app.privacy = crashing
        assert h.tick().outcome == "error"
        assert crashing.crashes == 1 and len(deletion_posts(h)) == 1
        assert "submitting" in set(entries_of(h, rid).values())
        h.app.privacy = real  # the process restarted
        for _ in range(3):
            clock.advance(timedelta(minutes=10))
            assert h.tick().outcome == "ok"
        assert set(entries_of(h, rid).values()) == {"staging"}
        # one POST per project of the subject: the crashed one was not sent again
        assert len(deletion_posts(h)) == len(subject.projects)
        kinds = [r[0] for r in h.app.ledger.deletions.receipts(rid)]
        assert "listing" in kinds


def test_two_ticks_keep_one_deletion_call_a_second_per_key(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock) as h:
        rid = new_deletion(h, "nobody-known")
        # 150 IDs in one project: two calls of at most 100
        ids = {P1: dict.fromkeys(range(1_000, 1_150), "queue")}
        assert h.app.ledger.deletions.resolved(rid, ids, [], clock.now())
        h.tick()
        assert len(deletion_calls(h)) == 1
        clock.advance(timedelta(milliseconds=500))
        h.tick()  # the key's second has not passed: nothing sent
        assert len(deletion_calls(h)) == 1
        clock.advance(timedelta(milliseconds=500))
        h.tick()
        calls = deletion_calls(h)
        assert len(calls) == 2
        assert all(b.at - a.at >= timedelta(seconds=1) for a, b in itertools.pairwise(calls))
        assert h.emulator.privacy.rate_limited_count() == 0
        # unknown IDs: nothing to delete there, and the request is done
        assert set(entries_of(h, rid).values()) == {"invalid"}
        assert state_of(h, rid) == "deleted"


class RefusingPost(CrashAfterPost):
    """Amplitude refuses every deletion POST with ``kind``, taking nothing."""

    def __init__(self, inner: PrivacyApi, kind: ErrorKind, status: int) -> None:
        super().__init__(inner)
        self.kind, self.status = kind, status

    def delete_users(
        self, project: int, amplitude_ids: Sequence[int], user_ids: Sequence[str], requester: str
    ) -> DeletionReceipt:
        raise ApiError(self.kind, "refused", status_code=self.status, retry_after=120.0)


@pytest.mark.parametrize(
    ("kind", "status"), [(ErrorKind.REJECTED, 400), (ErrorKind.RATE_LIMITED, 429)]
)
def test_a_refused_post_returns_the_entries_to_pending(
    database_url: str, tmp_path: Path, clock: FakeClock, kind: ErrorKind, status: int
) -> None:
    with service(database_url, tmp_path, clock) as h:
        rid = new_deletion(h, "nobody-known")
        assert h.app.ledger.deletions.resolved(rid, {P1: {1_000: "queue"}}, [], clock.now())
        real = h.app.privacy
        assert real is not None
        h.app.privacy = RefusingPost(real, kind, status)
        assert h.tick().outcome == "ok"  # one key's refusal is not the tick's failure
        assert set(entries_of(h, rid).values()) == {"pending"}
        refused = [r for r in reasons_of(h, rid) if "refused" in r]
        calls = h.app.ledger.privacy_calls
        if kind is ErrorKind.RATE_LIMITED:
            assert refused == []  # a 429 only says when: no audit line
            later = clock.now() + timedelta(seconds=120)
            assert calls.wait_until("deletion", P1, clock.now()) == later
        else:
            assert len(refused) == 1 and "HTTP 400" in refused[0]
        h.app.privacy = real
        clock.advance(timedelta(seconds=121))
        h.tick()
        assert set(entries_of(h, rid).values()) == {"invalid"}  # sent, and settled
        assert state_of(h, rid) == "deleted"


class CrashBeforePost(CrashAfterPost):
    """The process 'dies' after the claim, before the POST left."""

    def delete_users(
        self, project: int, amplitude_ids: Sequence[int], user_ids: Sequence[str], requester: str
    ) -> DeletionReceipt:
        self.crashes += 1
        raise RuntimeError("killed before the POST was sent")


def test_a_post_that_never_left_is_sent_once_the_listing_shows_it_lost(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with service(database_url, tmp_path, clock) as h:
        subject = pick_clear(h, merged=False)
        rid = new_deletion(h, subject.user_id)
        real = h.app.privacy
        assert real is not None
        h.app.privacy = CrashBeforePost(real)
        assert h.tick().outcome == "error"
        assert deletion_posts(h) == [] and "submitting" in set(entries_of(h, rid).values())
        h.app.privacy = real
        clock.advance(timedelta(minutes=10))
        h.tick()  # the listing does not show them, but a late POST could still land: wait
        assert "submitting" in set(entries_of(h, rid).values())
        clock.advance(timedelta(hours=7))
        h.tick()  # not listed an hour after the claim: lost, back to pending
        clock.advance(timedelta(minutes=1))
        h.tick()  # and sent
        assert set(entries_of(h, rid).values()) == {"staging"}
        assert len(deletion_posts(h)) == len(subject.projects)
