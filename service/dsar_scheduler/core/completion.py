"""How long a job takes from submission to ``done``: the distribution the planner decides from.

Learnt from the ledger: Kaplan-Meier over requests done in the last weeks (their submit-to-done
times, the finish placed between the last poll that saw them running and the one that saw them
done) with running requests as censored observations, blended with a prior (uniform 1 h to
3 days, the documented range) that fades as observations accumulate.

A pure value: no database, no clock, no I/O.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

HOUR = 3600.0
#: Documented: jobs complete within 3 days; the emulator's default is uniform from 1 h.
PRIOR_MIN_S = HOUR
PRIOR_MAX_S = 3 * 86_400.0
#: The prior counts as this many observed completions.
PRIOR_WEIGHT = 20.0
GRID_STEP_S = 900.0
GRID_HORIZON_S = 7 * 86_400.0
#: Below this a probability is taken as zero (no division by a vanishing survival).
EPSILON = 1e-9


@dataclass(frozen=True)
class CompletionModel:
    """The distribution of a job's time from submission to ``done``: its survival function
    ``S(t) = P(still running at age t)`` on a grid, flat beyond the last point."""

    survival: tuple[float, ...]
    step_s: float = GRID_STEP_S
    #: Completions the model learnt from (0: the prior alone).
    observed: int = 0

    @classmethod
    def uniform(
        cls,
        low_s: float = PRIOR_MIN_S,
        high_s: float = PRIOR_MAX_S,
        step_s: float = GRID_STEP_S,
        horizon_s: float = GRID_HORIZON_S,
    ) -> CompletionModel:
        """Completion uniform on ``[low_s, high_s]`` (the prior)."""
        points = math.ceil(horizon_s / step_s) + 1
        span = max(high_s - low_s, EPSILON)
        values = []
        for k in range(points):
            t = k * step_s
            values.append(1.0 if t <= low_s else max(0.0, (high_s - t) / span))
        return cls(tuple(values), step_s, 0)

    @classmethod
    def fit(
        cls,
        done_s: Sequence[float],
        running_s: Sequence[float],
        prior: CompletionModel | None = None,
        prior_weight: float = PRIOR_WEIGHT,
    ) -> CompletionModel:
        """Kaplan-Meier over completion times ``done_s`` with ``running_s`` the ages at which
        still-running requests were last seen running (right-censored), blended with
        ``prior`` as if it were ``prior_weight`` completions."""
        prior = prior or cls.uniform()
        if not done_s:
            return prior
        km_times, km_values, last_seen = _kaplan_meier(done_s, running_s)
        # Beyond the oldest age seen (a finish or a request still running), Kaplan-Meier
        # knows nothing: its last value goes on with the prior's shape, not flat.
        prior_at_last = prior.at(last_seen)
        n = float(len(done_s))
        blended = []
        for k, prior_value in enumerate(prior.survival):
            t = k * prior.step_s
            j = bisect.bisect_right(km_times, t)
            km = 1.0 if j == 0 else km_values[j - 1]
            if t > last_seen:
                km *= prior_value / prior_at_last if prior_at_last > EPSILON else 0.0
            blended.append((prior_weight * prior_value + n * km) / (prior_weight + n))
        return cls(tuple(blended), prior.step_s, len(done_s))

    @property
    def horizon_s(self) -> float:
        return (len(self.survival) - 1) * self.step_s

    def at(self, age_s: float) -> float:
        """``S(age_s)``, linear between grid points."""
        return interpolate(self.survival, age_s / self.step_s)

    def p_done(self, seen_running_s: float, age_s: float) -> float:
        """Probability that a job seen running at age ``seen_running_s`` has finished by
        ``age_s``. A job older than everything the model knows is taken to be finished."""
        alive = self.at(seen_running_s)
        if alive <= EPSILON:
            return 1.0
        return min(1.0, max(0.0, 1.0 - self.at(age_s) / alive))

    def remaining_polls(self, seen_running_s: float, gap_s: float) -> float:
        """Expected polls still to make for a job seen running at ``seen_running_s`` when it
        is polled every ``gap_s`` from then: one for each next poll it is still running at,
        the one that sees it finish included."""
        return self.polls_owed(gap_s).at(seen_running_s)

    def expected_polls(self, seen_running_s: float, gap_s: float) -> float:
        """:meth:`remaining_polls` at one age, summed directly (no table: for comparing
        gaps)."""
        return _expected_polls(self, seen_running_s, gap_s)

    def polls_owed(self, gap_s: float) -> PollsOwed:
        """:meth:`remaining_polls` for every age at one gap, computed once per model and gap
        (a tick asks it for every outstanding request; hashing the model each time would
        cost more than the answer)."""
        return _polls_owed(self, gap_s)


@dataclass(frozen=True)
class PollsOwed:
    """Expected polls still owed by a job last seen running at a given age, polled every
    gap from then: a table on the model's grid, linear between its points."""

    table: tuple[float, ...]
    step_s: float

    def at(self, seen_running_s: float) -> float:
        return interpolate(self.table, seen_running_s / self.step_s)


def interpolate(table: tuple[float, ...], x: float) -> float:
    """``table`` at the fractional index ``x``: linear between points, flat beyond both ends."""
    if x <= 0:
        return table[0]
    k = int(x)
    if k >= len(table) - 1:
        return table[-1]
    frac = x - k
    return table[k] * (1.0 - frac) + table[k + 1] * frac


def _kaplan_meier(
    done_s: Sequence[float], running_s: Sequence[float]
) -> tuple[list[float], list[float], float]:
    """The Kaplan-Meier estimate as its steps (the times and the survival after each) and
    the oldest age observed, finished or still running."""
    # One sort; events (0) before censorings (1) at the same time (the usual convention).
    timeline = sorted([(max(0.0, t), 0) for t in done_s] + [(max(0.0, t), 1) for t in running_s])
    at_risk = len(timeline)
    times: list[float] = []
    values: list[float] = []
    value = 1.0
    i = 0
    while i < len(timeline):
        t = timeline[i][0]
        deaths = 0
        leaving = 0
        while i < len(timeline) and timeline[i][0] == t:
            deaths += 1 - timeline[i][1]
            leaving += 1
            i += 1
        if deaths and at_risk > 0:
            value *= 1.0 - deaths / at_risk
            times.append(t)
            values.append(value)
        at_risk -= leaving
    return times, values, timeline[-1][0]


@functools.lru_cache(maxsize=16)
def _polls_owed(model: CompletionModel, gap_s: float) -> PollsOwed:
    ages = (k * model.step_s for k in range(len(model.survival)))
    return PollsOwed(tuple(_expected_polls(model, age, gap_s) for age in ages), model.step_s)


def _expected_polls(model: CompletionModel, seen_running_s: float, gap_s: float) -> float:
    """The sum over the next polls of the chance the job is still running at each."""
    alive = model.at(seen_running_s)
    if alive <= EPSILON:
        return 1.0
    total = 0.0
    t = seen_running_s
    while t <= model.horizon_s:
        total += model.at(t) / alive
        t += gap_s
    return max(1.0, total)
