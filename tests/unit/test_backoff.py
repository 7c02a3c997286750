"""The retry delay on its own: exponential up to the cap, half of it fixed, half jitter."""

from __future__ import annotations

import random

import pytest

from dsar_scheduler.core.backoff import backoff_delay


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 10.0), (1, 10.0), (2, 20.0), (3, 40.0), (5, 160.0), (6, 300.0), (40, 300.0)],
)
def test_the_delay_lies_between_half_the_ceiling_and_the_ceiling(
    attempt: int, ceiling: float
) -> None:
    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, base=10, cap=300, rng=rng) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    # the jitter spreads retries over the upper half, not onto one moment
    assert max(delays) - min(delays) > ceiling / 4


def test_the_same_random_source_gives_the_same_delays() -> None:
    first = [backoff_delay(3, 5, 60, random.Random(7)) for _ in range(3)]
    again = [backoff_delay(3, 5, 60, random.Random(7)) for _ in range(3)]
    assert first == again
