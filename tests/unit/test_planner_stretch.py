"""The required poll gap under a long tail: stretched while the queue waits on the budget,
back to the configured gap when it does not, and never past the bound that keeps a finished
result fetched long before its 2-day expiry. Tables and a tick-by-tick replay; no database."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest

from dsar_scheduler.core.planner import (
    HOUR,
    STRETCH_CEILING_S,
    CompletionModel,
    Facts,
    Outstanding,
    PlannerConfig,
    next_required_poll,
    plan,
    poll_gap,
    steady_state,
)

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CONFIG = PlannerConfig()
#: Results are kept 2 days after a job finishes (documented); the service's default margin.
RETENTION = timedelta(days=2)
EXPIRY_MARGIN = timedelta(seconds=300)
#: The documented range, the seed's older 5 days, and jobs too fast for a gap to matter.
DOCUMENTED = CompletionModel.uniform(HOUR, 72 * HOUR)
SEED_5_DAYS = CompletionModel.uniform(HOUR, 120 * HOUR)
FAST = CompletionModel.uniform(0.5 * HOUR, 2 * HOUR)
TICK = timedelta(minutes=30)
HOURS_3 = timedelta(hours=3)


def facts(queued: int, model: CompletionModel = SEED_5_DAYS, headroom: int = 14_400) -> Facts:
    return Facts(
        now=NOW,
        interval_s=1800,
        limit=14_400,
        headroom=headroom,
        freed_before_next=0,
        outstanding=[],
        pending_files=0,
        queued=queued,
        files_per_new=26.0,
        model=model,
    )


def test_the_bound_leaves_most_of_the_retention_for_the_fetch() -> None:
    # a job finishing just after a poll is seen one gap (and at worst a tick) later
    seen_by = timedelta(seconds=STRETCH_CEILING_S) + timedelta(minutes=30)
    left = RETENTION - seen_by - EXPIRY_MARGIN
    assert left >= timedelta(hours=31)
    # the expiry alert (DsarResultsExpiringUnfetched) fires at 12 h left: far behind
    assert left - timedelta(hours=12) >= timedelta(hours=19)
    assert PlannerConfig().stretch_gap_s == STRETCH_CEILING_S == 16 * HOUR


@pytest.mark.parametrize(
    ("model", "queue_h", "config", "gap_h"),
    [
        # no queue, or one the budget clears within the hour: the configured gap
        (SEED_5_DAYS, 0.0, CONFIG, 8),
        (SEED_5_DAYS, 0.99, CONFIG, 8),
        (SEED_5_DAYS, 1.9, CONFIG, 8),
        # an hour longer per hour of queue beyond the first
        (SEED_5_DAYS, 2.0, CONFIG, 9),
        (SEED_5_DAYS, 5.5, CONFIG, 12),
        (DOCUMENTED, 5.5, CONFIG, 12),
        # up to the ceiling, however long the queue
        (SEED_5_DAYS, 9.0, CONFIG, 16),
        (SEED_5_DAYS, 1e6, CONFIG, 16),
        (DOCUMENTED, 1e6, CONFIG, 16),
        # jobs that finish within the gap need one poll whatever it is: no stretch
        (FAST, 1e6, CONFIG, 8),
        # only as far as it saves polls: jobs of 1-6 h need one poll from a 6 h gap on
        (
            CompletionModel.uniform(HOUR, 6 * HOUR),
            100.0,
            PlannerConfig(4 * HOUR, stretch_gap_s=8 * HOUR),
            6,
        ),
        (
            CompletionModel.uniform(HOUR, 12 * HOUR),
            100.0,
            PlannerConfig(4 * HOUR, stretch_gap_s=8 * HOUR),
            8,
        ),
        # a ceiling at or below the configured gap: never stretched
        (SEED_5_DAYS, 1e6, PlannerConfig(24 * HOUR, stretch_gap_s=24 * HOUR), 24),
        (SEED_5_DAYS, 1e6, PlannerConfig(8 * HOUR, stretch_gap_s=4 * HOUR), 8),
    ],
)
def test_the_gap_for_a_queue(
    model: CompletionModel, queue_h: float, config: PlannerConfig, gap_h: float
) -> None:
    assert poll_gap(model, queue_h, config) == gap_h * HOUR


@pytest.mark.parametrize(
    ("model", "polls_8h", "polls_16h", "rate_8h", "rate_16h"),
    [
        # uniform 1-72 h: E[ceil(T / gap)] polls a user
        (DOCUMENTED, 5.06, 2.80, 368.7, 391.3),
        # uniform 1-120 h: the long tail costs three more polls a user at 8 h
        (SEED_5_DAYS, 8.06, 4.29, 342.4, 376.0),
    ],
)
def test_what_the_stretch_saves(
    model: CompletionModel, polls_8h: float, polls_16h: float, rate_8h: float, rate_16h: float
) -> None:
    assert model.expected_polls(0, 8 * HOUR) == pytest.approx(polls_8h, abs=0.01)
    assert model.expected_polls(0, 16 * HOUR) == pytest.approx(polls_16h, abs=0.01)
    assert steady_state(model, 26.0, 14_400, CONFIG)[1] == pytest.approx(rate_8h, abs=0.1)
    at_16 = steady_state(model, 26.0, 14_400, CONFIG, gap_s=16 * HOUR)[1]
    assert at_16 == pytest.approx(rate_16h, abs=0.1)


@pytest.mark.parametrize(
    ("queued", "gap_h", "queue_h"),
    [
        (0, 8.0, 0.0),
        (300, 8.0, 0.9),  # under an hour of the budget
        (2_000, 12.0, 5.8),
        (100_000, 16.0, 292.1),
    ],
)
def test_the_plan_shows_its_gap_and_gives_it_to_the_next_poll(
    queued: int, gap_h: float, queue_h: float
) -> None:
    result = plan(facts(queued), CONFIG)
    assert result.gap_s == gap_h * HOUR
    assert result.summary()["gap_h"] == gap_h
    assert result.summary()["queue_h"] == pytest.approx(queue_h, abs=0.1)
    assert next_required_poll(NOW, CONFIG, result) == NOW + timedelta(hours=gap_h)
    # the plan's figures are the stretched gap's: fewer polls, more users an hour
    base_cost, base_rate, _ = steady_state(SEED_5_DAYS, 26.0, 14_400, CONFIG)
    assert result.cost_per_user == pytest.approx(
        steady_state(SEED_5_DAYS, 26.0, 14_400, CONFIG, gap_s=gap_h * HOUR)[0]
    )
    assert (result.rate_per_hour > base_rate) is (gap_h > 8)
    assert (result.cost_per_user < base_cost) is (gap_h > 8)


def test_before_any_plan_the_next_poll_is_the_configured_gap() -> None:
    assert next_required_poll(NOW, CONFIG) == NOW + timedelta(hours=8)


def test_a_stretched_plan_keeps_required_polls_first() -> None:
    """Stretching changes when a request is next due, never whether a due one is polled."""
    requests = [
        Outstanding(1, NOW - timedelta(hours=20), NOW - timedelta(hours=8), NOW, 26.0),
        Outstanding(2, NOW - timedelta(hours=30), NOW - timedelta(hours=9), None, 26.0),
        Outstanding(3, NOW - timedelta(hours=5), NOW - timedelta(hours=5), NOW + HOURS_3, 26.0),
    ]
    result = plan(replace(facts(100_000, headroom=0), outstanding=requests), CONFIG)
    assert result.gap_s == 16 * HOUR
    assert sorted(result.polls) == [1, 2]
    assert result.required == 2


class Replay(NamedTuple):
    #: (tick, the plan's gap) for every tick.
    gaps: list[tuple[datetime, float]]
    #: (tick, how long the request polled then had gone unpolled) for every poll.
    waits: list[tuple[datetime, timedelta]]
    #: From a job's finish to the poll that saw it, for every job seen done.
    seen_after: list[timedelta]


def _replay(seed: int, backlog_until: datetime, days: float) -> Replay:
    """Ticks every 30 minutes, three new jobs a tick taking 1-120 h, a queue of 100,000
    until ``backlog_until`` (none after), and a budget that covers required polls only."""
    rng = random.Random(seed)
    now = NOW
    # id -> (submitted, seen running, next required poll, finish)
    running: dict[int, tuple[datetime, datetime, datetime | None, datetime]] = {}
    out = Replay([], [], [])
    for tick in range(int(days * 48)):
        for k in range(3):
            finish = now + timedelta(hours=rng.uniform(1, 120))
            running[tick * 3 + k] = (now, now, None, finish)
        requests = [Outstanding(rid, *row[:3], 26.0) for rid, row in running.items()]
        required = sum(
            1 for o in requests if o.next_required_at is None or o.next_required_at <= now
        )
        queued = 100_000 if now < backlog_until else 0
        result = plan(
            Facts(now, 1800, 14_400, required, 0, requests, 0, queued, 26.0, SEED_5_DAYS), CONFIG
        )
        out.gaps.append((now, result.gap_s))
        for rid in result.polls:
            submitted, seen, _, finish = running[rid]
            out.waits.append((now, now - seen))
            if finish <= now:
                out.seen_after.append(now - finish)
                del running[rid]
            else:
                running[rid] = (submitted, now, next_required_poll(now, CONFIG, result), finish)
        now += TICK
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_under_a_backlog_no_finished_job_waits_past_the_bound(seed: int) -> None:
    replay = _replay(seed, NOW + timedelta(days=30), days=6)
    assert {gap for _, gap in replay.gaps} == {16 * HOUR}
    bound = timedelta(hours=16) + TICK
    assert timedelta(hours=15) < max(wait for _, wait in replay.waits) <= bound
    assert max(replay.seen_after) <= bound
    assert RETENTION - max(replay.seen_after) - EXPIRY_MARGIN > timedelta(hours=31)


def test_when_the_queue_empties_the_gap_shrinks_back() -> None:
    drained = NOW + timedelta(days=3)
    replay = _replay(4, drained, days=5)
    assert all(gap == 16 * HOUR for at, gap in replay.gaps if at < drained)
    assert all(gap == 8 * HOUR for at, gap in replay.gaps if at >= drained)
    # the gaps given before stay until each request's next poll, then 8 h (and a tick)
    settled = drained + timedelta(hours=16) + TICK
    assert max(wait for at, wait in replay.waits if at < settled) > timedelta(hours=15)
    assert max(wait for at, wait in replay.waits if at >= settled) <= timedelta(hours=8) + TICK
