"""Retry delays: exponential with 'equal jitter' (half fixed, half random), so replicas and
requests that failed together do not retry together, yet never retry at once.

The caller passes the random source (the tick seeds one per process, tests a fixed one), so
the rule draws no entropy of its own."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
