"""The two policies (``core.policy``): the seed's baseline arithmetic case by case, and what
each asks of the ledger and answers, with a fake in the ledger's place."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest

from dsar_scheduler.core.planner import PlannerConfig
from dsar_scheduler.core.policy import (
    BASELINE_BATCH,
    UNLIMITED_BATCH,
    Baseline,
    Planner,
    Polls,
    Room,
    Submits,
    baseline_room,
    select_policy,
)
from dsar_scheduler.core.states import SUBMITTABLE, State

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headroom", "outstanding", "reserve_s", "expected"),
    [
        # the seed's hour of polls (two each at 30 min) against the next tick's one
        (11_520, 1000, 3600, Room(952, 2000, 9520)),
        (11_520, 1000, 1800, Room(1168, 1000, 10_520)),
        (1500, 1000, 1800, Room(55, 1000, 500)),
        (1500, 1000, 3600, Room(0, 2000, -500)),
    ],
)
def test_the_saturating_rival_reserves_only_the_next_ticks_polls(
    headroom: int, outstanding: int, reserve_s: float, expected: Room
) -> None:
    room = baseline_room(headroom, outstanding, 0, 1800, UNLIMITED_BATCH, reserve_s)
    assert room == expected


@pytest.mark.parametrize(
    ("headroom", "outstanding", "pending_files", "interval_s", "batch", "expected"),
    [
        # an idle service: a POST and two polls an hour reserved per new request
        (11_520, 0, 0, 1800, 20, Room(20, 0, 11_520)),
        (11_520, 1000, 0, 1800, 20, Room(20, 2000, 9520)),
        (100, 40, 10, 1800, 20, Room(1, 90, 10)),
        (99, 40, 10, 1800, 20, Room(0, 90, 9)),
        (50, 40, 0, 1800, 20, Room(0, 80, -30)),  # the reserve exceeds the headroom
        (140, 0, 0, 600, 20, Room(10, 0, 140)),  # six polls an hour: 14 per new request
        (90, 0, 0, 7200, 20, Room(10, 0, 90)),  # fewer than one poll an hour counts as one
        (1000, 0, 0, 1000, 20, Room(20, 0, 1000)),  # 3.6 polls an hour count as 4
        (11_520, 0, 0, 1800, 0, Room(0, 0, 11_520)),  # DSAR_SUBMIT_BATCH_SIZE=0
        (11_520, 0, 0, 1800, 500, Room(500, 0, 11_520)),
    ],
)
def test_the_baselines_submissions(
    headroom: int,
    outstanding: int,
    pending_files: int,
    interval_s: float,
    batch: int,
    expected: Room,
) -> None:
    assert baseline_room(headroom, outstanding, pending_files, interval_s, batch) == expected


class Candidate(NamedTuple):
    id: int
    submitted_at: datetime
    last_polled_at: datetime | None = None
    next_action_at: datetime | None = None
    errors: int = 0
    months: int = 1
    deadline: datetime | None = None


class Sample(NamedTuple):
    seconds: float
    seen_after: float = 0.0


class Samples(NamedTuple):
    samples: Sequence[Sample] = ()
    every: int = 1


@dataclass
class FakeReads:
    """The ledger's answers, and what was asked."""

    headroom_: int = 11_520
    submitted: int = 0
    waiting: int = 0
    pending_files: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    due: datetime | None = None
    frees: datetime | None = None
    budget_limit: int = 11_520
    asked: list[tuple[Any, ...]] = field(default_factory=list)

    def headroom(self, now: datetime) -> int:
        self.asked.append(("headroom",))
        return self.headroom_

    def freed_by(self, now: datetime, when: datetime) -> int:
        self.asked.append(("freed_by", when - now))
        return 0

    def count_in(self, states: Iterable[State]) -> int:
        states = tuple(states)
        self.asked.append(("count_in", states))
        return self.submitted if states == (State.SUBMITTED,) else self.waiting

    def count_pending_files(self) -> int:
        self.asked.append(("count_pending_files",))
        return self.pending_files

    def poll_candidates(self, due_by: datetime | None = None) -> Sequence[Candidate]:
        self.asked.append(("poll_candidates", due_by))
        return self.candidates

    def completion_samples(self, since: datetime, limit: int) -> Samples:
        self.asked.append(("completion_samples", NOW - since, limit))
        return Samples()

    def files_seen(self, since: datetime, limit: int) -> tuple[int, int]:
        self.asked.append(("files_seen", NOW - since, limit))
        return (0, 0)

    def submit_head_months(self, now: datetime, limit: int) -> Sequence[int]:
        self.asked.append(("submit_head_months", limit))
        return [1]

    def next_due(self, now: datetime) -> datetime | None:
        self.asked.append(("next_due",))
        return self.due

    def budget_frees_at(self, now: datetime, amount: int) -> datetime | None:
        self.asked.append(("budget_frees_at", amount))
        return self.frees


@dataclass(frozen=True)
class FakeSettings:
    policy: str = "planner"
    poll_interval_seconds: float = 1800
    max_poll_gap_seconds: float = 8 * 3600
    submit_batch_size: int | None = None
    tick_interval_seconds: float = 1800


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (FakeSettings("baseline"), Baseline(1800, BASELINE_BATCH)),
        (FakeSettings("baseline", 600, submit_batch_size=7), Baseline(600, 7)),
        # the rival: no batch limit, only the next tick's polls in reserve
        (FakeSettings("saturating"), Baseline(1800, UNLIMITED_BATCH, 1800)),
        (FakeSettings("saturating", 600, submit_batch_size=9), Baseline(600, 9, 600)),
    ],
)
def test_the_settings_choose_the_baseline(settings: FakeSettings, expected: Baseline) -> None:
    assert select_policy(settings) == expected


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (FakeSettings(), PlannerConfig(max_gap_s=8 * 3600, min_gap_s=1800)),
        (
            FakeSettings(poll_interval_seconds=9 * 3600, submit_batch_size=5),
            PlannerConfig(max_gap_s=8 * 3600, min_gap_s=8 * 3600, max_submits=5),
        ),
        # the gap stretches to twice the setting, never past 16 h, never below the setting
        (
            FakeSettings(max_poll_gap_seconds=4 * 3600),
            PlannerConfig(4 * 3600, stretch_gap_s=8 * 3600),
        ),
        (
            FakeSettings(max_poll_gap_seconds=12 * 3600),
            PlannerConfig(12 * 3600, stretch_gap_s=16 * 3600),
        ),
        (
            FakeSettings(max_poll_gap_seconds=24 * 3600),
            PlannerConfig(24 * 3600, stretch_gap_s=24 * 3600),
        ),
        (
            FakeSettings(max_poll_gap_seconds=900),
            PlannerConfig(max_gap_s=900, stretch_gap_s=1800, min_gap_s=900),
        ),
    ],
)
def test_the_settings_configure_the_planner(
    settings: FakeSettings, expected: PlannerConfig
) -> None:
    policy = select_policy(settings)
    assert isinstance(policy, Planner)
    assert policy.config == expected
    assert policy.batch_submits


def test_the_baseline_polls_what_is_due_at_its_interval() -> None:
    reads = FakeReads(candidates=[Candidate(4, NOW), Candidate(2, NOW)])
    baseline = Baseline(1800, 20)
    assert baseline.polls(reads, NOW) == Polls([4, 2], None)
    assert reads.asked == [("poll_candidates", NOW)]
    assert baseline.next_poll(NOW) == NOW + timedelta(minutes=30)
    assert baseline.wake_at(reads, NOW, budget_full=True) is None
    assert not baseline.batch_submits


@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        (FakeReads(headroom_=100, submitted=40, pending_files=10), Submits(1)),
        (
            FakeReads(headroom_=99, submitted=40, pending_files=10, waiting=3),
            Submits(0, {"waiting": 3, "reserve": 90, "spare": 9}),
        ),
        (FakeReads(headroom_=99, submitted=40, pending_files=10), Submits(0)),
    ],
    ids=["room for one", "none, requests waiting: said", "none, nothing waiting: quiet"],
)
def test_the_baseline_submits(reads: FakeReads, expected: Submits) -> None:
    assert Baseline(1800, 20).submits(reads, NOW) == expected
    asked: list[tuple[Any, ...]] = [
        ("count_in", (State.SUBMITTED,)),
        ("count_pending_files",),
        ("headroom",),
    ]
    if expected.count == 0:
        asked.append(("count_in", SUBMITTABLE))
    assert reads.asked == asked


def planner(tick_interval_s: float = 1800) -> Planner:
    policy = select_policy(FakeSettings(tick_interval_seconds=tick_interval_s))
    assert isinstance(policy, Planner)
    return policy


def test_the_planner_submits_nothing_before_it_planned() -> None:
    reads = FakeReads(waiting=10)
    assert planner().submits(reads, NOW) == Submits(0)
    assert reads.asked == []


@pytest.mark.parametrize(("waiting", "gap_h"), [(0, 8), (50, 8), (100_000, 16)])
def test_the_next_poll_is_the_plans_gap(waiting: int, gap_h: float) -> None:
    """The gap a request seen running (or submitted) in this tick is given: stretched while
    the queue waits on the budget, the setting when it does not and before any plan."""
    policy = planner()
    assert policy.next_poll(NOW) == NOW + timedelta(hours=8)
    polls = policy.polls(FakeReads(waiting=waiting), NOW)
    assert polls.plan is not None and polls.plan["gap_h"] == gap_h
    assert policy.next_poll(NOW) == NOW + timedelta(hours=gap_h)


def test_the_planner_plans_from_the_ledgers_facts_in_clock_seconds() -> None:
    reads = FakeReads(candidates=[Candidate(7, NOW - timedelta(hours=9))], waiting=1)
    policy = planner(tick_interval_s=1800 * 60)  # DSAR_TICK_INTERVAL_SECONDS: clock seconds
    polls = policy.polls(reads, NOW)
    assert polls.ids == [7]  # never polled in 9 h: required
    assert polls.plan is not None and polls.plan["required"] == 1
    # what leaves the window by the end of the next tick (within two intervals)
    assert ("freed_by", timedelta(seconds=2 * 1800 * 60)) in reads.asked
    assert [a[0] for a in reads.asked][:4] == [
        "poll_candidates",
        "completion_samples",
        "files_seen",
        "submit_head_months",
    ]
    assert policy.submits(reads, NOW).count == 1
    assert policy.next_poll(NOW) == NOW + timedelta(hours=8)


@pytest.mark.parametrize(
    ("due", "frees", "budget_full", "expected", "share_asked"),
    [
        (None, None, False, None, False),
        (NOW + timedelta(minutes=5), None, False, NOW + timedelta(minutes=5), False),
        (NOW + timedelta(seconds=10), None, False, NOW + timedelta(seconds=60), False),
        (NOW + timedelta(minutes=31), None, False, None, False),  # the regular tick is sooner
        (None, NOW + timedelta(minutes=3), False, None, False),  # the budget was not full
        (None, NOW + timedelta(minutes=3), True, NOW + timedelta(minutes=3), True),
        (NOW + timedelta(minutes=9), NOW + timedelta(minutes=3), True,
         NOW + timedelta(minutes=3), True),
    ],
)  # fmt: skip
def test_the_planner_wakes_when_work_falls_due(
    due: datetime | None,
    frees: datetime | None,
    budget_full: bool,
    expected: datetime | None,
    share_asked: bool,
) -> None:
    reads = FakeReads(due=due, frees=frees, budget_limit=11_520)
    assert planner().wake_at(reads, NOW, budget_full) == expected
    assert (("budget_frees_at", 576) in reads.asked) is share_asked


@pytest.mark.parametrize(
    ("headroom", "expected"),
    [
        (576, NOW + timedelta(seconds=60)),  # a share left the window while the tick ran: soon
        (575, None),  # less than a share free, and nothing counted to leave it
    ],
)
def test_a_tick_stopped_on_a_full_window_wakes_for_room_freed_meanwhile(
    headroom: int, expected: datetime | None
) -> None:
    reads = FakeReads(headroom_=headroom, frees=None, budget_limit=11_520)
    assert planner().wake_at(reads, NOW, budget_full=True) == expected


@pytest.mark.parametrize(
    ("headroom", "waiting", "expected", "share_asked"),
    [
        # the budget cut the submissions: wake when a share of it leaves the window
        (20, 1000, NOW + timedelta(minutes=3), True),
        (11_520, 1, None, False),  # the whole queue went: nothing to wake for
    ],
)
def test_the_planner_wakes_when_the_budget_cut_its_submissions(
    headroom: int, waiting: int, expected: datetime | None, share_asked: bool
) -> None:
    reads = FakeReads(
        headroom_=headroom, waiting=waiting, frees=NOW + timedelta(minutes=3), budget_limit=11_520
    )
    policy = planner()
    policy.polls(reads, NOW)
    policy.submits(reads, NOW)
    assert policy.wake_at(reads, NOW, budget_full=False) == expected
    assert (("budget_frees_at", 576) in reads.asked) is share_asked
