"""The completion model under the seed's older statement ("within 5 days"): the prior follows
the documented 3 days, and completions, with the requests still running as censored
observations, carry the model past it. No database: completions drawn in the test."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from dsar_scheduler.core.completion import GRID_HORIZON_S, PRIOR_MAX_S, PRIOR_MIN_S
from dsar_scheduler.core.planner import (
    HOUR,
    CompletionModel,
    Facts,
    Outstanding,
    PlannerConfig,
    plan,
    steady_state,
)

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def five_day_tail(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(HOUR, 120 * HOUR) for _ in range(n)]


def young_service(seed: int) -> tuple[list[float], list[float]]:
    """Four days of 20 submissions an hour, jobs of 1-120 h: the ones done (their times)
    and the ones still running (their ages). No finished job can be older than 4 days."""
    rng = random.Random(seed)
    done: list[float] = []
    running: list[float] = []
    for _ in range(96 * 20):
        age, takes = rng.uniform(0, 96 * HOUR), rng.uniform(HOUR, 120 * HOUR)
        if takes <= age:
            done.append(takes)
        else:
            running.append(age)
    return done, running


def truth(t_h: float) -> float:
    """Survival of uniform 1-120 h."""
    return min(1.0, max(0.0, (120 - t_h) / 119))


def test_the_prior_is_the_documented_range_on_a_grid_past_five_days() -> None:
    assert (PRIOR_MIN_S, PRIOR_MAX_S) == (HOUR, 72 * HOUR)
    # the grid covers the seed's 5 days and the 2 days a result is kept
    assert GRID_HORIZON_S >= 120 * HOUR + 48 * HOUR


@pytest.mark.parametrize("t_h", [12, 24, 48, 72, 84, 96, 108])
def test_completions_past_three_days_are_learnt(t_h: float) -> None:
    model = CompletionModel.fit(five_day_tail(3000, seed=1), [])
    assert model.observed == 3000
    assert model.at(t_h * HOUR) == pytest.approx(truth(t_h), abs=0.03)


def test_a_job_running_at_four_days_still_has_a_real_chance_of_running_on() -> None:
    model = CompletionModel.fit(five_day_tail(3000, seed=2), [])
    # seen running at 100 h: half finish by 110 h (uniform 1-120 h), not all of them
    assert model.p_done(100 * HOUR, 110 * HOUR) == pytest.approx(0.5, abs=0.1)
    # polled every 8 h from 100 h: at 108 h, then at 116 h if still running (S(108) / S(100)
    # = 0.6), then at 124 h if still running at 116 h (0.2): 1.8
    assert model.remaining_polls(100 * HOUR, 8 * HOUR) == pytest.approx(1.8, abs=0.1)
    # at 8 h a user costs three more polls than under the documented 3 days
    polls = model.expected_polls(0, 8 * HOUR)
    assert polls == pytest.approx(
        CompletionModel.uniform().expected_polls(0, 8 * HOUR) + 3, abs=0.2
    )


@pytest.mark.parametrize("t_h", [24, 48, 72])
def test_running_requests_carry_the_tail_while_no_completion_is_that_old(t_h: float) -> None:
    done, running = young_service(seed=5)
    assert max(done) < 96 * HOUR < 120 * HOUR
    censored = CompletionModel.fit(done, running)
    assert censored.at(t_h * HOUR) == pytest.approx(truth(t_h), abs=0.05)
    assert censored.at(84 * HOUR) > 0.15  # past the prior's 3 days, the tail is still there
    # counting only what finished, a young service would believe the jobs are fast
    naive = CompletionModel.fit(done, [])
    assert naive.at(t_h * HOUR) < truth(t_h) - 0.15


def test_beyond_everything_seen_a_job_is_taken_as_finished() -> None:
    """Past the oldest age seen and the prior's 3 days nothing is known: such a job's next
    poll is expected to be its last (finite owed polls) and, for optional polls, the likeliest
    finished."""
    done, running = young_service(seed=6)
    model = CompletionModel.fit(done, running)
    oldest = max(done + running)
    assert model.at(oldest + HOUR) == 0.0
    assert model.p_done(oldest + HOUR, oldest + 2 * HOUR) == 1.0
    assert model.remaining_polls(oldest + HOUR, 8 * HOUR) == 1.0
    assert model.remaining_polls(200 * HOUR, 8 * HOUR) == 1.0  # past the grid too
    cost, rate, target = steady_state(model, 26.0, 14_400, PlannerConfig())
    assert all(math.isfinite(x) and x > 0 for x in (cost, rate, target))


@pytest.mark.parametrize("prior_only", [True, False], ids=["prior alone", "fitted"])
def test_the_plan_handles_requests_older_than_three_and_five_days(prior_only: bool) -> None:
    model = CompletionModel.uniform() if prior_only else CompletionModel.fit(*young_service(7))
    ages_h = [10, 70, 80, 100, 119, 130, 200]
    requests = [
        Outstanding(
            id=i,
            submitted_at=NOW - timedelta(hours=age),
            seen_running_at=NOW - timedelta(hours=1),
            # the two oldest are due; the rest were just scheduled
            next_required_at=NOW if age >= 130 else NOW + timedelta(hours=7),
            expected_files=26.0,
        )
        for i, age in enumerate(ages_h)
    ]
    facts = Facts(NOW, 1800, 14_400, 14_400, 0, requests, 0, 0, 26.0, model)
    result = plan(facts, PlannerConfig())
    assert result.polls[: result.required] == [5, 6]
    assert sorted(result.polls) == list(range(7))  # the budget has room: all of them
    # optional polls go to the likeliest finished first (the youngest last)
    p_done = [
        model.p_done(3600 * (ages_h[rid] - 1), 3600 * ages_h[rid])
        for rid in result.polls[result.required :]
    ]
    assert p_done == sorted(p_done, reverse=True)
    assert result.polls[-1] == 0  # 10 h old
    assert all(math.isfinite(v) for v in result.summary().values())
