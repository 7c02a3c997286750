"""The planner's completion model when more requests finished than it reads
(``policy.MAX_SAMPLES``): completions and running requests are thinned by the same ids, so
the model is the one every observation would give, not one that makes jobs look slower.

A population drawn as a backlog makes it: submissions spread over six days, jobs done
uniformly within 1-120 h, the running ones last seen a quarter of an hour ago."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from dsar_scheduler.core.completion import HOUR, CompletionModel
from tests.unit.test_policy import NOW, Candidate, FakeReads, Sample, Samples, planner

EVERY = 4


@dataclass
class Population:
    done: list[tuple[int, float, float]]  # (id, seconds, finished hours ago)
    running: list[Candidate]


def population(n: int = 4000, seed: int = 3) -> Population:
    rng = random.Random(seed)
    done, running = [], []
    for rid in range(1, n + 1):
        age_h = rng.uniform(0, 144)
        took_h = rng.uniform(1, 120)
        if took_h <= age_h:
            done.append((rid, took_h * HOUR, age_h - took_h))
        else:
            submitted = NOW - timedelta(hours=age_h)
            running.append(Candidate(rid, submitted, NOW - timedelta(minutes=15)))
    return Population(done, running)


@dataclass
class ThinnedReads(FakeReads):
    """The ledger's answer as ``Facts.completion_samples`` gives it: every ``EVERY``-th
    completion by id."""

    thinned: Samples = field(default_factory=Samples)

    def completion_samples(self, since: object, limit: int) -> Samples:
        return self.thinned


def running_ages(p: Population) -> list[float]:
    return [(NOW - timedelta(minutes=15) - c.submitted_at).total_seconds() for c in p.running]


def every_observation(p: Population) -> CompletionModel:
    return CompletionModel.fit([s for _, s, _ in p.done], running_ages(p))


@pytest.mark.parametrize("hours", [24, 48, 72, 96])
def test_thinned_alike_the_model_is_every_observations(hours: int) -> None:
    p = population()
    thinned = Samples([Sample(s) for rid, s, _ in p.done if rid % EVERY == 0], EVERY)
    model = planner().facts(ThinnedReads(candidates=p.running, thinned=thinned), NOW).model
    assert model.at(hours * HOUR) == pytest.approx(every_observation(p).at(hours * HOUR), abs=0.04)


def test_the_latest_completions_against_every_running_request_would_not_be() -> None:
    """What the planner did before: the cap kept the most recent completions, set against
    every running request. Jobs then look slower than they are."""
    p = population()
    latest = sorted(p.done, key=lambda d: d[2])[: len(p.done) // EVERY]
    biased = CompletionModel.fit([s for _, s, _ in latest], running_ages(p))
    truth = 1 - (72 - 1) / 119  # uniform 1-120 h, still running at 72 h
    assert every_observation(p).at(72 * HOUR) == pytest.approx(truth, abs=0.05)
    assert biased.at(72 * HOUR) > truth + 0.1
