"""Retry delays: exponential with 'equal jitter' (half fixed, half random), so replicas and
requests that failed together do not retry together, yet never retry at once."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    source = rng if rng is not None else random.Random()
    jitter = source.uniform(0, ceiling / 2)
    return ceiling / 2 + jitter
