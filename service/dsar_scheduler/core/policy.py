"""What to poll and how much to submit each tick: the planner (``planner.py``), or the seed's
baseline (kept to measure the planner against, ``dsar simulate``). Chosen once from the
settings (``select_policy``); the tick asks, and never looks at which one it has.

A policy does no I/O of its own: it reads what it decides from through the ``PolicyReads`` it
is handed (the tick answers from the ledger), and holds one tick's plan between the poll
step, the submit step and the wake-up."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from dsar_scheduler.core import schedule
from dsar_scheduler.core.costs import SUBMIT_COST
from dsar_scheduler.core.planner import (
    PRIOR_WEIGHT,
    STRETCH_CEILING_S,
    CompletionModel,
    Facts,
    Outstanding,
    Plan,
    PlannerConfig,
    budget_bound,
    files_per_month,
    next_required_poll,
    plan,
    submits_now,
)
from dsar_scheduler.core.states import SUBMITTABLE, State

#: The seed's plan: this many submissions per tick (DSAR_SUBMIT_BATCH_SIZE overrides).
BASELINE_BATCH = 20
#: The saturating rival's batch: more than any budget carries in a tick.
UNLIMITED_BATCH = 1_000_000
#: The seed's plan keeps an hour of polls of every outstanding request in reserve.
SEED_RESERVE_S = 3600.0
#: Completion times the planner learns from: requests done within this window, at most
#: about this many (beyond it, every k-th request by id, and the running ones alike).
SAMPLE_WINDOW = timedelta(days=14)
MAX_SAMPLES = 5000
#: Recent requests whose files are counted to learn files per month of a date range.
FILE_SAMPLES = 500
#: The next requests to submit, whose date ranges estimate a new request's files.
SUBMIT_HEAD = 200
#: Months of a request's date range before any is known (the longest range admitted).
DEFAULT_MONTHS = 13.0


class Candidate(Protocol):
    """A submitted request, as the ledger lists it for polling."""

    @property
    def id(self) -> int: ...
    @property
    def submitted_at(self) -> datetime: ...
    @property
    def last_polled_at(self) -> datetime | None: ...
    @property
    def next_action_at(self) -> datetime | None: ...
    @property
    def errors(self) -> int: ...
    @property
    def months(self) -> int: ...
    @property
    def deadline(self) -> datetime | None: ...


class Sample(Protocol):
    """A recent completion: submission to finish, and finish to the poll that saw it."""

    @property
    def seconds(self) -> float: ...
    @property
    def seen_after(self) -> float: ...


class Samples(Protocol):
    """Recent completions, every ``every``-th request by id (1: all of them)."""

    @property
    def samples(self) -> Sequence[Sample]: ...
    @property
    def every(self) -> int: ...


class PolicyReads(Protocol):
    """What a policy reads (the tick answers each from the ledger)."""

    @property
    def budget_limit(self) -> int: ...
    def headroom(self, now: datetime) -> int: ...
    def freed_by(self, now: datetime, when: datetime) -> int: ...
    def count_in(self, states: Iterable[State]) -> int: ...
    def count_pending_files(self) -> int: ...
    def poll_candidates(self, due_by: datetime | None = None) -> Sequence[Candidate]: ...
    def completion_samples(self, since: datetime, limit: int) -> Samples: ...
    def files_seen(self, since: datetime, limit: int) -> tuple[int, int]: ...
    def submit_head_months(self, now: datetime, limit: int) -> Sequence[int]: ...
    def next_due(self, now: datetime) -> datetime | None: ...
    def budget_frees_at(self, now: datetime, amount: int) -> datetime | None: ...


class PolicySettings(Protocol):
    """The settings a policy is chosen and configured from (``config.Settings``)."""

    @property
    def policy(self) -> str: ...
    @property
    def poll_interval_seconds(self) -> float: ...
    @property
    def max_poll_gap_seconds(self) -> float: ...
    @property
    def submit_batch_size(self) -> int | None: ...
    @property
    def tick_interval_seconds(self) -> float: ...


@dataclass(frozen=True)
class Polls:
    """The requests to poll, in order, and the plan's figures for the tick's report."""

    ids: list[int]
    plan: dict[str, float | int] | None = None


@dataclass(frozen=True)
class Submits:
    """How many requests to submit now; when none, what to log about the wait (if any)."""

    count: int
    deferred: Mapping[str, float | int] | None = None


class Policy(Protocol):
    #: Submissions reserved and recorded in chunks (``False``: each POST on its own).
    batch_submits: bool

    def next_poll(self, now: datetime) -> datetime:
        """When a request seen running (or just submitted) now must be polled next."""
        ...

    def polls(self, reads: PolicyReads, now: datetime) -> Polls: ...

    def submits(self, reads: PolicyReads, now: datetime) -> Submits: ...

    def wake_at(self, reads: PolicyReads, now: datetime, budget_full: bool) -> datetime | None:
        """When there is work again before the next regular tick (``None``: not before)."""
        ...


def select_policy(settings: PolicySettings) -> Policy:
    """The policy the settings name."""
    if settings.policy == "planner":
        return Planner(planner_config(settings), settings.tick_interval_seconds)
    batch = settings.submit_batch_size
    interval = settings.poll_interval_seconds
    if settings.policy == "saturating":
        return Baseline(interval, UNLIMITED_BATCH if batch is None else batch, interval)
    return Baseline(interval, BASELINE_BATCH if batch is None else batch)


def planner_config(settings: PolicySettings) -> PlannerConfig:
    """The planner's settings; the gap may stretch to twice DSAR_MAX_POLL_GAP_SECONDS, never
    past ``STRETCH_CEILING_S`` (a gap set longer than that is never stretched)."""
    gap = settings.max_poll_gap_seconds
    batch = settings.submit_batch_size
    return PlannerConfig(
        max_gap_s=gap,
        stretch_gap_s=max(gap, min(2 * gap, STRETCH_CEILING_S)),
        min_gap_s=min(settings.poll_interval_seconds, gap),
        max_submits=PlannerConfig.max_submits if batch is None else batch,
    )


# -- the seed's baseline ---------------------------------------------------------------------


@dataclass(frozen=True)
class Room:
    """The baseline's submissions this tick, and the figures they come from."""

    count: int
    #: Cost kept for an hour of polls of every outstanding request, and the pending files.
    reserve: int
    #: Headroom left above that reserve.
    spare: int


def baseline_room(
    headroom: int,
    outstanding: int,
    pending_files: int,
    poll_interval_s: float,
    batch: int,
    reserve_s: float = SEED_RESERVE_S,
) -> Room:
    """Submissions that fit after reserving ``reserve_s`` of polls of every outstanding
    request (the seed's plan: an hour; the saturating rival: the next tick's, one poll
    interval) and a GET per pending file; each new request reserves its POST and its own
    polls. At most ``batch``."""
    polls_ahead = math.ceil(reserve_s / poll_interval_s)
    reserve = outstanding * polls_ahead + pending_files
    spare = headroom - reserve
    room = max(0, spare // (SUBMIT_COST + polls_ahead))
    return Room(min(batch, room), reserve, spare)


@dataclass
class Baseline:
    """The seed's plan: poll every outstanding request every DSAR_POLL_INTERVAL_SECONDS, and
    submit up to a fixed number a tick, one by one, as the budget left after polls allows.
    With no batch limit and only the next tick's polls kept in reserve, the strongest simple
    rival to the planner (``saturating``): the same polling, every submission it can fit."""

    poll_interval_s: float
    batch: int
    reserve_s: float = SEED_RESERVE_S
    batch_submits: bool = False

    def next_poll(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.poll_interval_s)

    def polls(self, reads: PolicyReads, now: datetime) -> Polls:
        return Polls([c.id for c in reads.poll_candidates(due_by=now)])

    def submits(self, reads: PolicyReads, now: datetime) -> Submits:
        outstanding = reads.count_in([State.SUBMITTED])
        pending_files = reads.count_pending_files()
        room = baseline_room(
            reads.headroom(now),
            outstanding,
            pending_files,
            self.poll_interval_s,
            self.batch,
            self.reserve_s,
        )
        if room.count > 0:
            return Submits(room.count)
        waiting = reads.count_in(SUBMITTABLE)
        if not waiting:
            return Submits(0)
        return Submits(0, {"waiting": waiting, "reserve": room.reserve, "spare": room.spare})

    def wake_at(self, reads: PolicyReads, now: datetime, budget_full: bool) -> datetime | None:
        return None  # the seed's daemon ticked at its interval only


# -- the planner -----------------------------------------------------------------------------


class Planner:
    """``planner.plan`` each tick, from facts read at the poll step (see ``planner.py``)."""

    batch_submits = True

    def __init__(self, config: PlannerConfig, tick_interval_s: float) -> None:
        self.config = config
        #: Clock seconds until the next regular tick (DSAR_TICK_INTERVAL_SECONDS).
        self.interval_s = tick_interval_s
        self.plan: Plan | None = None
        #: The budget, not the commitment, cut this tick's submissions (``submits``).
        self.starved = False

    def next_poll(self, now: datetime) -> datetime:
        """This tick's gap (stretched while the queue waits on the budget) from now."""
        return next_required_poll(now, self.config, self.plan)

    def polls(self, reads: PolicyReads, now: datetime) -> Polls:
        self.plan = plan(self.facts(reads, now), self.config)
        return Polls(self.plan.polls, self.plan.summary())

    def submits(self, reads: PolicyReads, now: datetime) -> Submits:
        """What the plan allows, cut to what still fits after this tick's polls and fetches."""
        if self.plan is None:
            return Submits(0)
        queued = reads.count_in(SUBMITTABLE)
        count = submits_now(
            self.plan, reads.headroom(now), reads.freed_by(now, self._next_done(now)), queued
        )
        self.starved = budget_bound(self.plan, queued, count)
        deferred = self.plan.summary() if count == 0 and self.plan.queued else None
        return Submits(count, deferred)

    def wake_at(self, reads: PolicyReads, now: datetime, budget_full: bool) -> datetime | None:
        """A required poll or a retry falling due, a request becoming eligible for an optional
        poll while the budget is not binding, or enough of the budget leaving the rolling
        hour when the tick stopped on a full window or the budget cut its submissions (room
        that frees between ticks is otherwise left unused until the next one)."""
        due = [reads.next_due(now)]
        if self.plan is not None:
            due.append(self.plan.next_optional_at)
        if budget_full:
            due.append(_budget_wake(reads, now))
        elif self.starved:
            due.append(reads.budget_frees_at(now, schedule.budget_share(reads.budget_limit)))
        return schedule.wake_at(now, due, self.interval_s)

    def _next_done(self, now: datetime) -> datetime:
        """When the next tick's work is done: it starts within an interval and, not
        overrunning, ends within the next. What leaves the rolling hour by then is there for
        it: calls take time, so the calls of the tick an hour before the next one land just
        after that tick began and leave while the next one runs, not before it starts."""
        return now + timedelta(seconds=2 * self.interval_s)

    def facts(self, reads: PolicyReads, now: datetime) -> Facts:
        """What the planner decides from (one read each)."""
        candidates = reads.poll_candidates()
        samples = reads.completion_samples(now - SAMPLE_WINDOW, MAX_SAMPLES)
        per_month = files_per_month(*reads.files_seen(now - SAMPLE_WINDOW, FILE_SAMPLES))
        model = _completion_model(candidates, samples)
        head = reads.submit_head_months(now, SUBMIT_HEAD)
        months = sum(head) / len(head) if head else DEFAULT_MONTHS
        return Facts(
            now=now,
            interval_s=self.interval_s,
            limit=reads.budget_limit,
            headroom=reads.headroom(now),
            freed_before_next=reads.freed_by(now, self._next_done(now)),
            outstanding=[_outstanding(c, per_month) for c in candidates],
            pending_files=reads.count_pending_files(),
            queued=reads.count_in(SUBMITTABLE),
            files_per_new=months * per_month,
            model=model,
            discovery_delay_s=_discovery_delay(samples, self.config.max_gap_s / 2),
        )


def _budget_wake(reads: PolicyReads, now: datetime) -> datetime | None:
    """When a tick that stopped on a full window has room again: as soon as a share of the
    limit has left the window, or now if that share already has while the tick's last calls
    were still running (calls take time, and the window moves meanwhile)."""
    share = schedule.budget_share(reads.budget_limit)
    frees = reads.budget_frees_at(now, share)
    if frees is None and reads.headroom(now) >= share:
        return now
    return frees


def _completion_model(candidates: Sequence[Candidate], thinned: Samples) -> CompletionModel:
    """Completion times seen, with the requests still running as censored observations,
    thinned by the same ids as the completions (every ``every``-th), and the prior weighed
    as the same number of real completions whatever the thinning."""
    every = thinned.every
    return CompletionModel.fit(
        [x.seconds for x in thinned.samples],
        [
            ((c.last_polled_at or c.submitted_at) - c.submitted_at).total_seconds()
            for c in candidates
            if c.id % every == 0
        ],
        prior_weight=PRIOR_WEIGHT / every,
    )


def _outstanding(c: Candidate, files_per_month_: float) -> Outstanding:
    return Outstanding(
        id=c.id,
        submitted_at=c.submitted_at,
        seen_running_at=c.last_polled_at or c.submitted_at,
        next_required_at=c.next_action_at,
        expected_files=c.months * files_per_month_,
        retrying=c.errors > 0,
        deadline=c.deadline,
    )


def _discovery_delay(thinned: Samples, half_gap: float) -> float:
    """Mean time from a finish to the poll that saw it, the prior (half the gap) blended in."""
    weight = PRIOR_WEIGHT / thinned.every
    samples = thinned.samples
    return (sum(x.seen_after for x in samples) + half_gap * weight) / (len(samples) + weight)
