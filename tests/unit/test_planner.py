"""The planner on its own: the completion model, and each tick's decisions as properties that
must hold whatever the facts (hypothesis), plus the figures the design rests on."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsar_scheduler.core.costs import SUBMIT_COST
from dsar_scheduler.core.planner import (
    HOUR,
    CompletionModel,
    Facts,
    Outstanding,
    Plan,
    PlannerConfig,
    budget_bound,
    files_per_month,
    next_required_poll,
    plan,
    steady_state,
    submits_now,
)

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PRIOR = CompletionModel.uniform()
CONFIG = PlannerConfig()


def outstanding(
    rid: int,
    age_h: float,
    seen_h_ago: float,
    due_in_h: float | None,
    files: float = 26.0,
    retrying: bool = False,
) -> Outstanding:
    submitted = NOW - timedelta(hours=age_h)
    seen = max(submitted, NOW - timedelta(hours=seen_h_ago))
    return Outstanding(
        id=rid,
        submitted_at=submitted,
        seen_running_at=seen,
        next_required_at=None if due_in_h is None else NOW + timedelta(hours=due_in_h),
        expected_files=files,
        retrying=retrying,
    )


def facts(
    requests: list[Outstanding],
    headroom: int = 14_400,
    limit: int = 14_400,
    queued: int = 0,
    pending_files: int = 0,
    freed: int = 0,
    model: CompletionModel = PRIOR,
) -> Facts:
    return Facts(
        now=NOW,
        interval_s=1800,
        limit=limit,
        headroom=headroom,
        freed_before_next=freed,
        outstanding=requests,
        pending_files=pending_files,
        queued=queued,
        files_per_new=26.0,
        model=model,
    )


# -- the completion model ------------------------------------------------------------------


def test_the_prior_is_the_documented_range() -> None:
    assert PRIOR.at(0) == 1.0
    assert PRIOR.at(HOUR) == 1.0
    assert PRIOR.at(36.5 * HOUR) == pytest.approx(0.5, abs=0.01)
    assert PRIOR.at(72 * HOUR) == 0.0
    assert PRIOR.p_done(0, HOUR) == 0.0  # nothing finishes in the first hour
    assert PRIOR.p_done(36.5 * HOUR, 72 * HOUR) == pytest.approx(1.0)
    # a job older than the model knows is taken to be finished
    assert PRIOR.p_done(80 * HOUR, 81 * HOUR) == 1.0


def test_required_polls_per_user_at_an_eight_hour_gap() -> None:
    # polls at 8, 16, ... h: E[ceil(T / 8h)] = sum over k of S(8k h) = 1 + 288/71
    assert PRIOR.remaining_polls(0, 8 * HOUR) == pytest.approx(1 + 288 / 71, abs=0.01)
    # a job seen running at 70 h will be seen done at the next poll
    assert PRIOR.remaining_polls(70 * HOUR, 8 * HOUR) == pytest.approx(1.0)


def test_steady_state_figures_for_the_documented_api() -> None:
    cost, rate, target = steady_state(PRIOR, 26.0, 14_400, CONFIG)
    assert cost == pytest.approx(8 + 26 + 1 + 288 / 71, abs=0.02)  # ~39.1 per user
    assert rate == pytest.approx(14_400 * (1 - CONFIG.slack) / cost)
    assert rate > 330  # the target, at the model's cost
    # Little's law: users in flight ~ rate x (mean completion + discovery), each owing ~27+
    in_flight = rate * (36.5 + 4) * (26 + 1)
    assert 0.8 * in_flight < target < 1.4 * in_flight


def test_fit_without_completions_is_the_prior() -> None:
    assert CompletionModel.fit([], [5 * HOUR] * 10) == PRIOR


def test_fit_learns_a_fast_distribution() -> None:
    rng = random.Random(3)
    done = [rng.uniform(0.5 * HOUR, 2 * HOUR) for _ in range(2000)]
    model = CompletionModel.fit(done, [])
    assert model.observed == 2000
    assert model.at(2.5 * HOUR) < 0.02  # only the prior's small weight is left
    assert model.p_done(0.0, 2.5 * HOUR) > 0.98


def test_fit_counts_running_requests_as_censored() -> None:
    # 100 finished within an hour, 900 are still running at 10 h: most jobs are slow, and
    # a model that ignored the running ones would say everything finishes within an hour.
    model = CompletionModel.fit([0.5 * HOUR] * 100, [10 * HOUR] * 900, prior_weight=0)
    assert model.at(5 * HOUR) == pytest.approx(0.9, abs=0.001)
    # beyond the oldest age seen the prior's shape carries on: not flat, not zero
    assert 0.0 < model.at(40 * HOUR) < model.at(10 * HOUR)
    assert model.at(72 * HOUR) == 0.0


def test_files_per_month_starts_at_two_and_learns() -> None:
    assert files_per_month(0, 0) == 2.0
    assert files_per_month(3 * 10_000, 10_000) == pytest.approx(3.0, abs=0.01)


# -- decisions -----------------------------------------------------------------------------


def test_required_polls_come_first_most_overdue_first() -> None:
    requests = [
        outstanding(1, 20, 8.5, -0.5),
        outstanding(2, 30, 9, -1.0),
        outstanding(3, 10, 2, 6.0),
        outstanding(4, 5, 8, None),  # due now (never scheduled)
    ]
    result = plan(facts(requests, headroom=0), CONFIG)
    assert result.polls[:3] == [2, 1, 4]
    assert result.required == 3
    assert 3 not in result.polls  # no budget: no optional poll
    assert result.submits == 0


def test_light_load_polls_everything_past_the_minimum_gap() -> None:
    requests = [outstanding(i, 10 + i, 1.0, 7.0) for i in range(1, 50)]
    requests.append(outstanding(99, 10, 0.1, 7.9))  # polled 6 minutes ago: not yet
    result = plan(facts(requests, queued=3), CONFIG)
    assert sorted(result.polls) == list(range(1, 50))
    assert result.submits == 3


def test_optional_polls_go_to_the_likeliest_finished_first() -> None:
    # the budget allows a few optional polls; the old request is likelier done
    young = outstanding(1, 2, 1.0, 7.0)
    old = outstanding(2, 70, 1.0, 7.0)
    middle = outstanding(3, 40, 1.0, 7.0)
    result = plan(facts([young, old, middle], headroom=30, limit=14_400), CONFIG)
    assert result.polls[0] == 2
    assert result.polls.index(3) < result.polls.index(1) if 1 in result.polls else True


def test_a_request_in_retry_is_left_to_its_retry_time() -> None:
    result = plan(facts([outstanding(1, 20, 3, 0.2, retrying=True)]), CONFIG)
    assert result.polls == []


def test_submissions_stop_at_the_commitment_target() -> None:
    # the target at the gap this queue stretches to (the same queue, the same model)
    target = plan(facts([], queued=10_000), CONFIG).target
    crowd = int(target / 27) + 500  # more in flight than the budget carries
    requests = [outstanding(i, 1 + (i % 60), 0.5, 7.5) for i in range(crowd)]
    result = plan(facts(requests, queued=10_000), CONFIG)
    assert result.commitment > result.target
    assert result.submits == 0


def test_an_empty_pipeline_is_filled_within_the_budget_and_the_cap() -> None:
    result = plan(facts([], headroom=14_400, queued=100_000), CONFIG)
    assert result.submits == min(CONFIG.max_submits, (14_400 - result.reserve_next) // 8)
    capped = plan(facts([], queued=100_000), PlannerConfig(max_submits=20))
    assert capped.submits == 20


def test_submissions_after_the_polls_follow_the_queue_and_the_budget() -> None:
    result = plan(facts([], headroom=1000, queued=2), CONFIG)
    assert result.submits == 2
    assert submits_now(result, headroom=1000, freed_before_next=0, queued=5) == 5
    # 32 left, 16 of them kept for the next tick's two submissions: room for two now
    assert submits_now(result, headroom=32, freed_before_next=0, queued=5) == 2
    assert submits_now(result, headroom=0, freed_before_next=0, queued=5) == 0


@pytest.mark.parametrize(
    ("headroom", "queued", "pending_files", "cap", "count", "bound"),
    [
        (1000, 5, 0, 2000, 5, False),  # the whole queue went
        (32, 5, 0, 2000, 2, True),  # the budget held three back: more go when it has room
        (0, 5, 0, 2000, 0, True),
        (1000, 0, 0, 2000, 0, False),  # nothing waits
        (1000, 5, 0, 2, 2, False),  # the cap, not the budget
        (1000, 5, 10**7, 2000, 0, False),  # the commitment is past its target
    ],
)  # fmt: skip
def test_submissions_held_back_by_the_budget_are_told_apart(
    headroom: int, queued: int, pending_files: int, cap: int, count: int, bound: bool
) -> None:
    config = PlannerConfig(max_submits=cap)
    result = plan(facts([], headroom=1000, queued=2, pending_files=pending_files), config)
    assert submits_now(result, headroom=headroom, freed_before_next=0, queued=queued) == count
    assert budget_bound(result, queued, count) is bound


def test_the_next_required_poll_is_the_gap_away() -> None:
    assert next_required_poll(NOW, CONFIG) - NOW == timedelta(hours=8)


# -- properties ----------------------------------------------------------------------------

request_strategy = st.builds(
    outstanding,
    rid=st.integers(1, 10**6),
    age_h=st.floats(0, 120),
    seen_h_ago=st.floats(0, 12),
    due_in_h=st.none() | st.floats(-10, 8),
    files=st.floats(1, 60),
    retrying=st.booleans(),
)


def _optional_cost(result: Plan, f: Facts) -> float:
    """What the plan's optional polls are expected to cost (each 1 + p x files)."""
    by_id = {o.id: o for o in f.outstanding}
    total = 0.0
    for rid in result.polls[result.required :]:
        o = by_id[rid]
        seen = (o.seen_running_at - o.submitted_at).total_seconds()
        age = (f.now - o.submitted_at).total_seconds()
        total += 1 + f.model.p_done(seen, age) * o.expected_files
    return total


@settings(max_examples=300, deadline=None)
@given(
    requests=st.lists(request_strategy, max_size=60, unique_by=lambda o: o.id),
    headroom=st.integers(0, 14_400),
    queued=st.integers(0, 5_000),
    pending=st.integers(0, 3_000),
    freed=st.integers(0, 14_400),
)
def test_never_plans_beyond_the_headroom(
    requests: list[Outstanding], headroom: int, queued: int, pending: int, freed: int
) -> None:
    f = facts(requests, headroom=headroom, queued=queued, pending_files=pending, freed=freed)
    result = plan(f, CONFIG)
    assert result.spendable <= headroom
    optional = _optional_cost(result, f)
    assert SUBMIT_COST * result.submits + optional <= max(0.0, result.spendable - result.mandatory)
    assert result.submits <= queued
    # every request whose required poll is due is planned, first
    due = {o.id for o in requests if o.next_required_at is None or o.next_required_at <= NOW}
    assert set(result.polls[: result.required]) == due
    assert len(result.polls) == len(set(result.polls))


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    headroom=st.integers(0, 2_000),
    arrivals=st.integers(1, 4),
)
def test_no_poll_gap_exceeds_the_bound_while_the_budget_covers_required_work(
    seed: int, headroom: int, arrivals: int
) -> None:
    """Ticks every 30 minutes for three and a half days; whatever the budget for optional
    work, a running request is never left unpolled longer than the gap plus one tick."""
    rng = random.Random(seed)
    interval = timedelta(minutes=30)
    now = NOW
    running: dict[int, tuple[datetime, datetime, datetime | None, float]] = {}
    last_poll: dict[int, datetime] = {}
    worst = timedelta(0)
    next_id = 1
    for _ in range(7 * 24):
        for _ in range(arrivals):
            finish = now + timedelta(hours=rng.uniform(1, 72))
            running[next_id] = (now, now, now + timedelta(hours=8), finish.timestamp())
            last_poll[next_id] = now
            next_id += 1
        requests = [
            Outstanding(rid, sub, seen, due, 26.0) for rid, (sub, seen, due, _) in running.items()
        ]
        required_cost = sum(1 for o in requests if o.next_required_at and o.next_required_at <= now)
        f = Facts(
            now=now,
            interval_s=1800,
            limit=14_400,
            headroom=required_cost + headroom,
            freed_before_next=0,
            outstanding=requests,
            pending_files=0,
            queued=0,
            files_per_new=26.0,
            model=PRIOR,
        )
        for rid in plan(f, CONFIG).polls:
            worst = max(worst, now - last_poll[rid])
            last_poll[rid] = now
            sub, _, _, finish_ts = running[rid]
            if now.timestamp() >= finish_ts:
                del running[rid]  # seen done
            else:
                running[rid] = (sub, now, next_required_poll(now, CONFIG), finish_ts)
        now += interval
        for rid in running:
            worst = max(worst, now - last_poll[rid] - interval)  # still waiting
    assert worst <= timedelta(hours=8) + interval
