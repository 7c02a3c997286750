"""A scaled run divides the service's bounds counted in requests, calls or completions
(``tools.simulate.bounds``): while it runs, the tick and the planner read the divided
values, and everything is put back after it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from dsar_scheduler.core import completion, policy
from dsar_scheduler.core.completion import HOUR, CompletionModel
from dsar_scheduler.tick import limits
from dsar_scheduler.tools.simulate.bounds import at_scale, bounds_at_scale, scaled_bounds
from dsar_scheduler.tools.simulate.run import _batch_size
from dsar_scheduler.tools.simulate.workload import Workload
from tests.unit.test_policy import NOW, FakeReads, Sample, Samples, planner


def current() -> tuple[object, ...]:
    return (
        limits.CHUNK,
        limits.SUBMIT_FLUSH,
        limits.ADMIT_BATCH,
        getattr(policy, "PRIOR_WEIGHT"),  # noqa: B009 (imported there, not exported)
    )


def test_a_run_at_1_20_divides_the_bounds_and_puts_them_back() -> None:
    before = current()
    with bounds_at_scale(20):
        assert current() == (5, 1, 25, 1.0)
        assert limits.PAGE == 200  # a page of fetches keeps its size (see the module)
        assert policy.FILE_SAMPLES == 500  # and so do the plain means
        assert policy.MAX_SAMPLES == 5000  # the planner thins by id beyond it: no bias
    assert current() == before


def test_the_bounds_are_put_back_when_the_run_fails() -> None:
    before = current()
    with pytest.raises(RuntimeError), bounds_at_scale(4):
        assert limits.CHUNK == 25
        raise RuntimeError("the run broke")
    assert current() == before


def test_full_scale_changes_nothing() -> None:
    before = current()
    with bounds_at_scale(1):
        assert current() == before


@pytest.mark.parametrize(
    ("count", "scale", "expected"), [(100, 20, 5), (25, 20, 1), (5000, 3, 1667), (1, 50, 1)]
)
def test_a_count_at_scale_is_rounded_never_zero(count: int, scale: float, expected: int) -> None:
    assert at_scale(count, scale) == expected


def test_the_report_names_each_bound_at_full_scale_and_scaled() -> None:
    bounds = scaled_bounds(20)
    assert "policy.MAX_SAMPLES" not in bounds
    assert bounds["limits.CHUNK"] == (100, 5)
    assert bounds["policy.PRIOR_WEIGHT"] == (20.0, 1.0)
    with bounds_at_scale(20):  # read from the service's own values, not the divided ones
        assert scaled_bounds(20) == bounds
    assert "CHUNK 100 -> 5" in Workload(scale=20).assumptions()["distributions"]["scale"]


@dataclass
class ReadsWithSamples(FakeReads):
    """The fake ledger, with completions to learn from."""

    samples: Sequence[Sample] = ()

    def completion_samples(self, since: datetime, limit: int) -> Samples:
        super().completion_samples(since, limit)
        return Samples(self.samples[:limit])


def planners_model(reads: ReadsWithSamples) -> CompletionModel:
    return planner().facts(reads, NOW).model


def test_the_planner_learns_with_the_divided_prior() -> None:
    """300 completions at 10 h: the planner's model blends them with the prior (uniform
    1-72 h), weighed as 20 completions at full scale and as 1 at 1/20; the cap is the same."""
    reads = ReadsWithSamples(samples=[Sample(10 * HOUR)] * 300)
    prior_at_36h = completion.CompletionModel.uniform().at(36 * HOUR)
    full = planners_model(reads)
    assert reads.asked[1] == ("completion_samples", timedelta(days=14), 5000)
    assert full.observed == 300
    assert full.at(36 * HOUR) == pytest.approx(20 * prior_at_36h / 320)
    with bounds_at_scale(20):
        reads.asked.clear()
        scaled = planners_model(reads)
        assert reads.asked[1] == ("completion_samples", timedelta(days=14), 5000)
    assert scaled.observed == 300
    assert scaled.at(36 * HOUR) == pytest.approx(1 * prior_at_36h / 301)


def test_the_planners_most_submissions_per_tick_scale_with_the_run() -> None:
    assert _batch_size(Workload()) is None  # full scale: the planner's own
    assert _batch_size(Workload(scale=20)) == 100  # 2,000 a tick at full scale
    assert _batch_size(Workload(policy="baseline", scale=20)) == 1  # the seed's 20
    assert _batch_size(Workload(submit_batch_size=300, scale=20)) == 15
