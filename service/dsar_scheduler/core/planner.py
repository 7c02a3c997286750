"""The planner: each tick, which outstanding requests to poll and how many queued ones to
submit, from the budget left, the age of every request and the completion times seen so far.

Plain functions of plain facts (no database, no clock, no I/O), so that the tick, the
simulator and the tests run the same decisions.

Why it works this way (the documented API: POST 8, GET 1, 14,400 an hour, jobs finish within
3 days (the seed said 5), results kept 2 days after that):

* One user costs at least 8 (POST) + 1 (the poll that sees ``done``) + one GET per file (about
  26): 35. Every other poll is the price of latency, and polls are the only cost a scheduler
  chooses. The seed's plan (poll everything every 30 minutes) spends ~150 polls a user.
* **Required polls** keep the promise about expiry: no request goes longer than
  ``max_gap`` (``DSAR_MAX_POLL_GAP_SECONDS``, 8 h) without a poll, so a finished job is seen
  within 8 h of finishing, its files are fetched at once (fetches go first in every tick), and
  40 h of the 48 are left as margin. Polling exactly that often is the fewest polls any
  schedule with that promise can make: a job that takes T needs at least ceil(T / gap) polls.
* **The gap stretches** while the queue waits on the budget: with the queue at more than an
  hour of the budget, required polls crowd out submissions, so the gap grows an hour for each
  further hour of queue, up to ``stretch_gap_s`` (16 h by default, never more than twice the
  configured gap nor past ``STRETCH_CEILING_S``), and only as far as it still saves polls
  (fast jobs need one poll whatever the gap). A finished job is then seen within 16 h (plus a
  tick) and fetched at once, 32 h before its results expire. The price is done-to-stored
  time: half the gap on average. The gap is this plan's, given to each request when it is
  next seen running; a shorter one applies from each request's next poll (and optional polls
  reach the rest as soon as the budget has room).
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
* **Legal deadlines** decide who is polled first when the budget binds
  (:mod:`dsar_scheduler.core.urgency`).
* The completion-time distribution ``S(t)`` is :mod:`dsar_scheduler.core.completion`'s.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from dsar_scheduler.core.completion import EPSILON, HOUR, PRIOR_WEIGHT, CompletionModel
from dsar_scheduler.core.costs import FETCH_COST, STATUS_COST, SUBMIT_COST
from dsar_scheduler.core.urgency import (
    NO_DEADLINE,
    OptionalPoll,
    RequiredPoll,
    optional_order,
    required_order,
)

__all__ = [
    "HOUR",
    "PRIOR_FILES_PER_MONTH",
    "PRIOR_MONTHS_WEIGHT",
    "PRIOR_WEIGHT",
    "STRETCH_CEILING_S",
    "CompletionModel",
    "Facts",
    "Outstanding",
    "Plan",
    "PlannerConfig",
    "budget_bound",
    "files_per_month",
    "next_required_poll",
    "plan",
    "poll_gap",
    "steady_state",
    "submits_now",
]

#: The longest the required gap ever stretches to: a third of the 48 h a result is kept, so a
#: finished job is seen with 32 h (less a tick) left to fetch it; the expiry alert fires at
#: 12 h left, far behind.
STRETCH_CEILING_S = 16 * HOUR
#: The gap grows this much per hour of queue beyond the first.
STRETCH_STEP_S = HOUR
#: Fewer polls per user than this saved: the longer gap is only latency.
MIN_POLLS_SAVED = 0.05

#: Files per month of a request's date range before any is seen (the seed's example: two
#: projects, one file per month each), weighted as this many months of observations.
PRIOR_FILES_PER_MONTH = 2.0
PRIOR_MONTHS_WEIGHT = 24.0


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
    #: Its legal deadline in force (``None``: it has none).
    deadline: datetime | None = None


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
    #: Cost that leaves the rolling hour before the next tick's work is done.
    freed_before_next: int
    outstanding: Sequence[Outstanding]
    #: Files of finished requests still to fetch.
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
    #: The longest the gap stretches to while the queue waits on the budget (at or below
    #: ``max_gap_s``: never stretched).
    stretch_gap_s: float = STRETCH_CEILING_S


@dataclass
class Plan:
    """One tick's decisions, and the figures they came from (for logs and the simulator)."""

    #: Request ids to poll, in order: required ones (``urgency.required_order``), then
    #: optional ones (most likely finished first).
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
    #: The required poll gap a request seen running now is given (stretched or not).
    gap_s: float = 8 * HOUR
    #: Hours of the whole budget the queue needs (at the unstretched gap's cost per user).
    queue_h: float = 0.0

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
            "gap_h": round(self.gap_s / HOUR, 2),
            "queue_h": round(self.queue_h, 1),
        }


@functools.lru_cache(maxsize=64)
def steady_state(
    model: CompletionModel,
    files: float,
    limit: int,
    config: PlannerConfig,
    discovery_delay_s: float | None = None,
    gap_s: float | None = None,
) -> tuple[float, float, float]:
    """(cost per user, users per hour the budget sustains, the commitment they carry), with
    required polls every ``gap_s`` (default: the configured gap).

    A request is committed from its submission until its files are fetched: while it runs
    (the model's survival) and then until a poll sees it finished (``discovery_delay_s``, by
    default half the required gap), owing one poll and its files meanwhile."""
    gap_s = config.max_gap_s if gap_s is None else gap_s
    owed_polls = model.polls_owed(gap_s)
    per_new = owed_polls.at(0.0) * STATUS_COST + files * FETCH_COST
    cost = SUBMIT_COST + per_new
    rate = limit * (1.0 - config.slack) / cost
    # integral over age of S(t) x (polls still owed at t + files): by grid sums
    owed = 0.0
    step = model.step_s
    for k, alive in enumerate(model.survival[:-1]):
        if alive <= EPSILON:
            continue
        owed += alive * (owed_polls.at(k * step) * STATUS_COST + files * FETCH_COST) * step
    delay = gap_s / 2 if discovery_delay_s is None else discovery_delay_s
    owed += delay * (files * FETCH_COST + STATUS_COST)
    return cost, rate, rate / HOUR * owed


class _Workload(NamedTuple):
    """What the outstanding requests ask of this tick and the next."""

    #: Every request whose required poll is due now.
    required: list[RequiredPoll]
    #: Every one an optional poll may see.
    optional: list[OptionalPoll]
    #: The cost the outstanding requests and the pending files still owe.
    commitment: float
    #: This tick's required cost.
    mandatory: float
    #: The next tick's required cost.
    due_next: float
    #: The earliest moment a request not yet eligible for an optional poll becomes so.
    next_eligible: datetime | None


def _workload(facts: Facts, config: PlannerConfig, gap_s: float) -> _Workload:
    """Sort the outstanding requests into required and optional polls, and add up what they
    owe now, later and in all (polled every ``gap_s`` from now on)."""
    now, model = facts.now, facts.model
    next_tick = now + timedelta(seconds=facts.interval_s)
    owed_polls = model.polls_owed(gap_s)
    required: list[RequiredPoll] = []
    optional: list[OptionalPoll] = []
    commitment = float(facts.pending_files * FETCH_COST)
    mandatory = float(facts.pending_files * FETCH_COST)
    due_next = 0.0
    next_eligible: datetime | None = None
    for o in facts.outstanding:
        seen = (o.seen_running_at - o.submitted_at).total_seconds()
        age = (now - o.submitted_at).total_seconds()
        commitment += owed_polls.at(seen) * STATUS_COST + o.expected_files * FETCH_COST
        deadline = o.deadline or NO_DEADLINE
        if o.next_required_at is None or o.next_required_at <= now:
            required.append((o.next_required_at or now, o.id, deadline))
            mandatory += STATUS_COST + model.p_done(seen, age) * o.expected_files * FETCH_COST
            continue
        if o.next_required_at <= next_tick:
            later = (o.next_required_at - o.submitted_at).total_seconds()
            due_next += STATUS_COST + model.p_done(seen, later) * o.expected_files * FETCH_COST
        if o.retrying:
            continue
        eligible_at = o.seen_running_at + timedelta(seconds=config.min_gap_s)
        if eligible_at <= now:
            p = model.p_done(seen, age)
            cost = STATUS_COST + p * o.expected_files * FETCH_COST
            optional.append((p, o.id, cost, deadline))
        elif next_eligible is None or eligible_at < next_eligible:
            next_eligible = eligible_at
    return _Workload(required, optional, commitment, mandatory, due_next, next_eligible)


def plan(facts: Facts, config: PlannerConfig) -> Plan:
    """Decide this tick's polls and submissions (see the module's docstring)."""
    model, files, delay = facts.model, facts.files_per_new, facts.discovery_delay_s
    base_rate = steady_state(model, files, facts.limit, config, delay)[1]
    queue_h = facts.queued / max(base_rate, EPSILON)
    gap = poll_gap(model, queue_h, config)
    work = _workload(facts, config, gap)
    cost, rate, target = steady_state(model, files, facts.limit, config, delay, gap)
    target *= config.overcommit
    per_new = cost - SUBMIT_COST
    next_submits = min(float(facts.queued), rate * facts.interval_s / HOUR)
    reserve_next = work.due_next + SUBMIT_COST * next_submits
    spendable = max(0.0, _room(float(facts.headroom), facts.freed_before_next, reserve_next))
    left = spendable - work.mandatory
    submits = _submits(facts.queued, config.max_submits, target, work.commitment, per_new, left)
    left -= submits * SUBMIT_COST
    optional_polls = _optional_polls_that_fit(work.optional, left)
    all_fit = len(optional_polls) == len(work.optional)
    return Plan(
        polls=required_order(work.required, facts.now, gap) + optional_polls,
        required=len(work.required),
        submits=submits,
        spendable=spendable,
        mandatory=work.mandatory,
        reserve_next=reserve_next,
        commitment=work.commitment,
        target=target,
        cost_per_user=cost,
        rate_per_hour=rate,
        queued=facts.queued,
        per_new=per_new,
        max_submits=config.max_submits,
        next_optional_at=work.next_eligible if all_fit else None,
        gap_s=gap,
        queue_h=queue_h,
    )


def poll_gap(model: CompletionModel, queue_h: float, config: PlannerConfig) -> float:
    """The required poll gap for a queue that needs ``queue_h`` hours of the budget: the
    configured gap up to an hour of queue, then a step longer per further hour, up to
    ``stretch_gap_s``; of those, the shortest within ``MIN_POLLS_SAVED`` of the fewest
    polls per user (a stretch that saves no poll would only add latency)."""
    base = config.max_gap_s
    steps = max(0, int(queue_h - 1.0))  # whole hours of queue beyond the first
    longest = min(max(base, config.stretch_gap_s), base + STRETCH_STEP_S * steps)
    gaps = [base]
    while gaps[-1] < longest:
        gaps.append(min(longest, gaps[-1] + STRETCH_STEP_S))
    polls = [model.expected_polls(0.0, gap) for gap in gaps]
    fewest = min(polls)
    return next(gap for gap, n in zip(gaps, polls, strict=True) if n <= fewest + MIN_POLLS_SAVED)


def _optional_polls_that_fit(optional: list[OptionalPoll], room: float) -> list[int]:
    """The likeliest finished first (the nearest deadline first among equals), until the next
    one's expected cost no longer fits."""
    polls: list[int] = []
    for _, rid, expected_cost, _ in optional_order(optional):
        if expected_cost > room:
            break
        room -= expected_cost
        polls.append(rid)
    return polls


def _room(headroom: float, freed_before_next: float, reserve_next: float) -> float:
    """What may be spent now: the headroom, less what the next tick needs beyond what leaves
    the rolling hour before its work is done."""
    return min(headroom, headroom + freed_before_next - reserve_next)


def _submits(
    queued: int, cap: int, target: float, commitment: float, per_new: float, room: float
) -> int:
    """Enough to bring the commitment up to the target, within the queue, the cap and the
    budget ``room``."""
    if queued <= 0 or room < SUBMIT_COST or target <= commitment:
        return 0
    by_commitment = int((target - commitment) // max(per_new, 1.0)) + 1
    return max(0, min(queued, cap, by_commitment, int(room // SUBMIT_COST)))


def budget_bound(plan_: Plan, queued: int, count: int) -> bool:
    """Whether the budget, not the commitment, the queue or the cap, held submissions at
    ``count``: more go as soon as the budget has room."""
    unbounded = float(SUBMIT_COST * queued)  # room for the whole queue
    p = plan_
    return count < _submits(queued, p.max_submits, p.target, p.commitment, p.per_new, unbounded)


def submits_now(plan_: Plan, headroom: int, freed_before_next: int, queued: int) -> int:
    """Submissions once this tick's polls and fetches are paid: the queue may have grown (a
    poll found a failed job to resubmit) and the budget shrunk (more finished than expected).
    The commitment is the plan's, less nothing: polls only ever lower it."""
    room = _room(headroom, freed_before_next, plan_.reserve_next)
    return _submits(queued, plan_.max_submits, plan_.target, plan_.commitment, plan_.per_new, room)


def next_required_poll(now: datetime, config: PlannerConfig, plan_: Plan | None = None) -> datetime:
    """When a request just seen running must next be polled: the plan's gap (stretched or
    not), or the configured one before any plan."""
    return now + timedelta(seconds=config.max_gap_s if plan_ is None else plan_.gap_s)


def files_per_month(observed_files: int, observed_months: int) -> float:
    """Files per month of a request's date range, the prior blended with what was seen."""
    return (observed_files + PRIOR_FILES_PER_MONTH * PRIOR_MONTHS_WEIGHT) / (
        observed_months + PRIOR_MONTHS_WEIGHT
    )
