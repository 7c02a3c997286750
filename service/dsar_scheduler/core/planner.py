"""The planner: each tick, which outstanding requests to poll and how many queued ones to
submit, from the budget left, the age of every request and the completion times seen so far.

Plain functions of plain facts (no database, no clock, no I/O), so that the tick, the
simulator and the tests run the same decisions.

Why it works this way (the documented API: POST 8, GET 1, 14,400 an hour, jobs finish within
3 days, results kept 2 days after that):

* One user costs at least 8 (POST) + 1 (the poll that sees ``done``) + one GET per file (about
  26): 35. Every other poll is the price of latency, and polls are the only cost a scheduler
  chooses. The seed's plan (poll everything every 30 minutes) spends ~150 polls a user.
* **Required polls** keep the promise about expiry: no request goes longer than
  ``max_gap`` (``DSAR_MAX_POLL_GAP_SECONDS``, 8 h) without a poll, so a finished job is seen
  within 8 h of finishing, its files are fetched at once (fetches go first in every tick), and
  40 h of the 48 are left as margin. Polling exactly that often is the fewest polls any
  schedule with that promise can make: a job that takes T needs at least ceil(T / gap) polls.
* **Submissions** are paced by commitment. Every outstanding request still owes its expected
  remaining required polls and its files (pending files of finished ones are owed too); the sum
  is the commitment ``C``. A steady stream of ``r`` users an hour carries, by Little's law,
  ``C* = r x integral of S(t) x (polls still owed at age t + files) dt``; with ``r`` the most
  the budget sustains (``budget x (1 - slack) / cost per user``) that is the target. A tick
  submits what brings ``C`` up to ``C*``, never more than the budget left after this tick's
  required work and a reserve for the next tick's. So a backlog is fed as fast as the budget
  will carry it in the long run, not as fast as the POSTs alone fit (which would bury the
  budget in fetches a day or two later).
* **Optional polls** spend what is still left: requests not polled for ``min_gap``
  (``DSAR_POLL_INTERVAL_SECONDS``) are polled in order of the probability that they finished
  since they were last seen running. When the budget is not binding that is every request,
  every tick (lower latency); when it is, there are none (more users per hour).
* The completion-time distribution comes from the ledger: Kaplan-Meier over requests done in
  the last weeks (their submit-to-done times, the finish placed between the last poll that saw
  them running and the one that saw them done) with running requests as censored
  observations, blended with a prior (uniform 1 h to 3 days, the documented range) that fades
  as observations accumulate.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

HOUR = 3600.0
#: Documented: jobs complete within 3 days; the emulator's default is uniform from 1 h.
PRIOR_MIN_S = HOUR
PRIOR_MAX_S = 3 * 86_400.0
#: The prior counts as this many observed completions.
PRIOR_WEIGHT = 20.0
#: Files per month of a request's date range before any is seen (the seed's example: two
#: projects, one file per month each), weighted as this many months of observations.
PRIOR_FILES_PER_MONTH = 2.0
PRIOR_MONTHS_WEIGHT = 24.0
GRID_STEP_S = 900.0
GRID_HORIZON_S = 7 * 86_400.0
POST_COST = 8
GET_COST = 1


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
        span = max(high_s - low_s, 1e-9)
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
        # One sort; events (0) before censorings (1) at the same time (the usual convention).
        timeline = sorted(
            [(max(0.0, t), 0) for t in done_s] + [(max(0.0, t), 1) for t in running_s]
        )
        at_risk = len(timeline)
        km_times: list[float] = []
        km_values: list[float] = []
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
                km_times.append(t)
                km_values.append(value)
            at_risk -= leaving
        # Beyond the oldest age seen (a finish or a request still running), Kaplan-Meier
        # knows nothing: its last value goes on with the prior's shape, not flat.
        last_seen = timeline[-1][0]
        prior_at_last = prior.at(last_seen)
        n = float(len(done_s))
        blended = []
        for k, prior_value in enumerate(prior.survival):
            t = k * prior.step_s
            j = bisect.bisect_right(km_times, t)
            km = 1.0 if j == 0 else km_values[j - 1]
            if t > last_seen:
                km *= prior_value / prior_at_last if prior_at_last > 1e-9 else 0.0
            blended.append((prior_weight * prior_value + n * km) / (prior_weight + n))
        return cls(tuple(blended), prior.step_s, len(done_s))

    @property
    def horizon_s(self) -> float:
        return (len(self.survival) - 1) * self.step_s

    def at(self, age_s: float) -> float:
        """``S(age_s)``, linear between grid points."""
        if age_s <= 0:
            return self.survival[0]
        x = age_s / self.step_s
        k = int(x)
        if k >= len(self.survival) - 1:
            return self.survival[-1]
        frac = x - k
        return self.survival[k] * (1.0 - frac) + self.survival[k + 1] * frac

    def p_done(self, seen_running_s: float, age_s: float) -> float:
        """Probability that a job seen running at age ``seen_running_s`` has finished by
        ``age_s``. A job older than everything the model knows is taken to be finished."""
        alive = self.at(seen_running_s)
        if alive <= 1e-9:
            return 1.0
        return min(1.0, max(0.0, 1.0 - self.at(age_s) / alive))

    def remaining_polls(self, seen_running_s: float, gap_s: float) -> float:
        """Expected polls still to make for a job seen running at ``seen_running_s`` when it
        is polled every ``gap_s`` from then: one for each next poll it is still running at,
        the one that sees it finish included. (From a table per model and gap, linear
        between grid points: a tick asks this for every outstanding request.)"""
        return _interpolate(_remaining_table(self, gap_s), seen_running_s / self.step_s)

    def _remaining_exact(self, seen_running_s: float, gap_s: float) -> float:
        alive = self.at(seen_running_s)
        if alive <= 1e-9:
            return 1.0
        total = 0.0
        t = seen_running_s
        while t <= self.horizon_s:
            total += self.at(t) / alive
            t += gap_s
        return max(1.0, total)

    def mean_s(self) -> float:
        """Mean completion time over the grid's horizon."""
        return sum(self.survival[:-1]) * self.step_s


def _interpolate(table: tuple[float, ...], x: float) -> float:
    if x <= 0:
        return table[0]
    k = int(x)
    if k >= len(table) - 1:
        return table[-1]
    frac = x - k
    return table[k] * (1.0 - frac) + table[k + 1] * frac


@functools.lru_cache(maxsize=16)
def _remaining_table(model: CompletionModel, gap_s: float) -> tuple[float, ...]:
    return tuple(
        model._remaining_exact(k * model.step_s, gap_s) for k in range(len(model.survival))
    )


class Outstanding(NamedTuple):
    """A submitted request, as the planner sees it."""

    id: int
    submitted_at: datetime
    #: The last moment Amplitude said it was still running (a poll, or the submission).
    seen_running_at: datetime
    #: When its next required poll is due (``None``: now); a poll error's retry time too.
    next_required_at: datetime | None
    expected_files: float
    #: A transient poll error set a retry time: optional polls leave it to that.
    retrying: bool = False


@dataclass(frozen=True)
class Facts:
    """What the planner decides from, read from the ledger at the start of a decision."""

    now: datetime
    #: Seconds until the next tick is expected.
    interval_s: float
    #: The service's limit per rolling hour (budget x fraction).
    limit: int
    #: Cost still available in the rolling hour now (0 while a 429 backoff holds).
    headroom: int
    #: Cost that leaves the rolling hour before the next tick.
    freed_before_next: int
    outstanding: Sequence[Outstanding]
    #: Files of finished requests still to fetch (each GET costs 1).
    pending_files: int
    #: Requests waiting to be (re)submitted.
    queued: int
    #: Expected files of a request about to be submitted.
    files_per_new: float
    model: CompletionModel
    #: Mean time from a job's finish to the poll that saw it (``None``: half the gap).
    discovery_delay_s: float | None = None


@dataclass(frozen=True)
class PlannerConfig:
    max_gap_s: float = 8 * HOUR
    min_gap_s: float = 1800.0
    #: Share of the budget the steady state leaves unplanned (for estimates that are off;
    #: each tick's hard limits already keep required work first, so none by default).
    slack: float = 0.0
    #: The commitment may exceed the steady state's by this factor: the target only has to
    #: stop the bulge an empty pipeline would otherwise take in; the budget left after each
    #: tick's required work is what paces submissions in the long run.
    overcommit: float = 1.1
    #: Most submissions in one tick (bounds a tick's work).
    max_submits: int = 2000


@dataclass
class Plan:
    """One tick's decisions, and the figures they came from (for logs and the simulator)."""

    #: Request ids to poll, in order: required ones (most overdue first), then optional ones
    #: (most likely finished first).
    polls: list[int] = field(default_factory=list)
    required: int = 0
    submits: int = 0
    #: Cost the tick may spend now without starving the next tick's required work.
    spendable: float = 0.0
    #: This tick's required cost: pending fetches, required polls and the fetches they lead to.
    mandatory: float = 0.0
    #: Cost kept for the next tick (its required polls, their fetches, its submissions).
    reserve_next: float = 0.0
    commitment: float = 0.0
    target: float = 0.0
    cost_per_user: float = 0.0
    #: The most users an hour the budget sustains, at the model's cost per user.
    rate_per_hour: float = 0.0
    queued: int = 0
    #: Expected cost a new request still owes once its POST is paid (polls and files).
    per_new: float = 0.0
    max_submits: int = 0
    #: Every eligible optional poll fitted (the budget did not bind), and the next moment
    #: another request becomes eligible: a reason to wake before the next regular tick.
    next_optional_at: datetime | None = None

    def summary(self) -> dict[str, float | int]:
        return {
            "polls": len(self.polls),
            "required": self.required,
            "submits": self.submits,
            "spendable": round(self.spendable),
            "mandatory": round(self.mandatory),
            "commitment": round(self.commitment),
            "target": round(self.target),
            "cost_per_user": round(self.cost_per_user, 1),
            "rate_per_hour": round(self.rate_per_hour, 1),
        }


@functools.lru_cache(maxsize=64)
def steady_state(
    model: CompletionModel,
    files: float,
    limit: int,
    config: PlannerConfig,
    discovery_delay_s: float | None = None,
) -> tuple[float, float, float]:
    """(cost per user, users per hour the budget sustains, the commitment they carry).

    A request is committed from its submission until its files are fetched: while it runs
    (the model's survival) and then until a poll sees it finished (``discovery_delay_s``, by
    default half the required gap), owing one poll and its files meanwhile."""
    gap = config.max_gap_s
    per_new = model.remaining_polls(0.0, gap) + files
    cost = POST_COST + per_new * GET_COST
    rate = limit * (1.0 - config.slack) / cost
    # integral over age of S(t) x (polls still owed at t + files): by grid sums
    owed = 0.0
    step = model.step_s
    for k, alive in enumerate(model.survival[:-1]):
        if alive <= 1e-9:
            continue
        owed += alive * (model.remaining_polls(k * step, gap) + files) * step
    delay = gap / 2 if discovery_delay_s is None else discovery_delay_s
    owed += delay * (files + GET_COST)
    return cost, rate, rate / HOUR * owed


def plan(facts: Facts, config: PlannerConfig) -> Plan:
    """Decide this tick's polls and submissions (see the module's docstring)."""
    now, model = facts.now, facts.model
    gap = config.max_gap_s
    next_tick = now + timedelta(seconds=facts.interval_s)
    remaining = _remaining_table(model, gap)
    step = model.step_s
    required: list[tuple[datetime, int, float]] = []
    optional: list[tuple[float, int, float]] = []
    commitment = float(facts.pending_files)
    mandatory = float(facts.pending_files)
    due_next = 0.0
    next_eligible: datetime | None = None
    for o in facts.outstanding:
        seen = (o.seen_running_at - o.submitted_at).total_seconds()
        age = (now - o.submitted_at).total_seconds()
        commitment += _interpolate(remaining, seen / step) + o.expected_files
        if o.next_required_at is None or o.next_required_at <= now:
            p = model.p_done(seen, age)
            required.append((o.next_required_at or now, o.id, p))
            mandatory += GET_COST + p * o.expected_files
            continue
        if o.next_required_at <= next_tick:
            later = (o.next_required_at - o.submitted_at).total_seconds()
            due_next += GET_COST + model.p_done(seen, later) * o.expected_files
        if o.retrying:
            continue
        eligible_at = o.seen_running_at + timedelta(seconds=config.min_gap_s)
        if eligible_at <= now:
            p = model.p_done(seen, age)
            optional.append((p, o.id, GET_COST + p * o.expected_files))
        elif next_eligible is None or eligible_at < next_eligible:
            next_eligible = eligible_at

    cost, rate, target = steady_state(
        model, facts.files_per_new, facts.limit, config, facts.discovery_delay_s
    )
    target *= config.overcommit
    per_new = cost - POST_COST
    next_submits = min(float(facts.queued), rate * facts.interval_s / HOUR)
    reserve_next = due_next + POST_COST * next_submits
    headroom = float(facts.headroom)
    spendable = max(0.0, min(headroom, headroom + facts.freed_before_next - reserve_next))
    left = spendable - mandatory

    submits = _submits(facts.queued, config.max_submits, target, commitment, per_new, left)
    left -= submits * POST_COST

    required.sort()
    polls = [rid for _, rid, _ in required]
    optional.sort(key=lambda item: (-item[0], item[1]))
    all_fit = True
    for _, rid, expected_cost in optional:
        if expected_cost > left:
            all_fit = False
            break
        left -= expected_cost
        polls.append(rid)
    return Plan(
        polls=polls,
        required=len(required),
        submits=submits,
        spendable=spendable,
        mandatory=mandatory,
        reserve_next=reserve_next,
        commitment=commitment,
        target=target,
        cost_per_user=cost,
        rate_per_hour=rate,
        queued=facts.queued,
        per_new=per_new,
        max_submits=config.max_submits,
        next_optional_at=next_eligible if all_fit else None,
    )


def _submits(
    queued: int, cap: int, target: float, commitment: float, per_new: float, room: float
) -> int:
    """Enough to bring the commitment up to the target, within the queue, the cap and the
    budget ``room``."""
    if queued <= 0 or room < POST_COST or target <= commitment:
        return 0
    by_commitment = int((target - commitment) // max(per_new, 1.0)) + 1
    return max(0, min(queued, cap, by_commitment, int(room // POST_COST)))


def submits_now(plan_: Plan, headroom: int, freed_before_next: int, queued: int) -> int:
    """Submissions once this tick's polls and fetches are paid: the queue may have grown (a
    poll found a failed job to resubmit) and the budget shrunk (more finished than expected).
    The commitment is the plan's, less nothing: polls only ever lower it."""
    room = min(headroom, headroom + freed_before_next - plan_.reserve_next)
    return _submits(queued, plan_.max_submits, plan_.target, plan_.commitment, plan_.per_new, room)


def next_required_poll(now: datetime, config: PlannerConfig) -> datetime:
    """When a request just seen running must next be polled."""
    return now + timedelta(seconds=config.max_gap_s)


def files_per_month(observed_files: int, observed_months: int) -> float:
    """Files per month of a request's date range, the prior blended with what was seen."""
    return (observed_files + PRIOR_FILES_PER_MONTH * PRIOR_MONTHS_WEIGHT) / (
        observed_months + PRIOR_MONTHS_WEIGHT
    )
