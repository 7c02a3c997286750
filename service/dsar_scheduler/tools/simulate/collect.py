"""The end of a run: the ledger, the emulator and the transport read into one ``Result``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from dsar_scheduler.adapters.db import ApiCall, Event, Request
from dsar_scheduler.core.states import State
from dsar_scheduler.runtime.app import App
from dsar_scheduler.tools.emulator import Emulator
from dsar_scheduler.tools.simulate.result import Result, Sample
from dsar_scheduler.tools.simulate.transport import InProcessTransport
from dsar_scheduler.tools.simulate.workload import HOUR, START, Workload


@dataclass
class Trace:
    """What the run noted tick by tick."""

    samples: list[Sample] = field(default_factory=list)
    #: When each request was stored, and seconds from Amplitude's finish (the emulator's
    #: clock) to then, by request id.
    finish_times: dict[int, tuple[datetime, float]] = field(default_factory=dict)
    ticks: int = 0
    #: Virtual seconds from each tick's start to its end (its calls and downloads included).
    tick_seconds: list[float] = field(default_factory=list)
    #: Downloads made and the nominal bytes they stood for.
    downloads: int = 0
    nominal_bytes: int = 0
    #: Virtual seconds of work on the lanes, all lanes together.
    lane_seconds: float = 0.0


@dataclass(frozen=True)
class _LedgerFigures:
    stored_rows: list[Any]  # (id, queued_at, stored_at) of every stored request
    submitted: int
    steady_cost_by_kind: dict[str, int]
    ledger_cost: int
    transitions: dict[str, int]
    dead: int


def collect(
    w: Workload,
    app: App,
    emulator: Emulator,
    trace: Trace,
    began: float,
    transport: InProcessTransport,
) -> Result:
    steady_from = START + timedelta(hours=w.warmup)
    stop_at = START + timedelta(hours=w.hours)
    steady_hours = max(1e-9, (stop_at - steady_from).total_seconds() / HOUR)
    ledger = _ledger_figures(app, steady_from, stop_at)
    stored_rows = ledger.stored_rows
    users = sum(1 for r in stored_rows if r.stored_at and r.stored_at >= steady_from)
    steady_cost = sum(ledger.steady_cost_by_kind.values())
    limit = app.settings.budget_limit
    deadlines, missed = app.ledger.deadlines.misses(stop_at)
    return Result(
        workload=w,
        users_per_hour=users / steady_hours * w.scale,
        users_per_hour_overall=len(stored_rows) / w.hours * w.scale,
        users_stored=len(stored_rows),
        users_submitted=ledger.submitted,
        cost_per_user=_cost_per_user(ledger.steady_cost_by_kind, users),
        rate_limited=emulator.rate_limited_count(),
        late_overruns=emulator.late_overruns(),
        lost_to_expiry=ledger.transitions.get(State.EXPIRED, 0),
        failed_jobs=ledger.transitions.get(State.FAILED, 0),
        dead=ledger.dead,
        done_to_stored_s=[d for at, d in trace.finish_times.values() if at >= steady_from],
        queue_to_stored_s=_queue_to_stored(stored_rows, steady_from),
        budget_use=steady_cost / (limit * steady_hours),
        limit=limit,
        ledger_cost=ledger.ledger_cost,
        emulator_cost=emulator.cost_spent_total(),
        emulator_errors=emulator.internal_errors,
        ticks=trace.ticks,
        tick_seconds=trace.tick_seconds,
        downloads=trace.downloads,
        nominal_bytes=trace.nominal_bytes,
        lane_seconds=trace.lane_seconds,
        api_calls=transport.requests,
        wall_seconds=time.monotonic() - began,
        samples=trace.samples,
        deadlines=deadlines,
        deadlines_missed=missed,
    )


def _queue_to_stored(stored_rows: list[Any], steady_from: datetime) -> list[float]:
    """Queued to stored, in seconds, of each request stored in the steady window."""
    return [
        (r.stored_at - r.queued_at).total_seconds()
        for r in stored_rows
        if r.stored_at is not None and r.stored_at >= steady_from
    ]


def _cost_per_user(by_kind: dict[str, int], users: int) -> dict[str, float]:
    per_user = {
        "submit": by_kind.get("submit", 0) / users if users else 0.0,
        "poll": by_kind.get("status", 0) / users if users else 0.0,
        "fetch": by_kind.get("fetch", 0) / users if users else 0.0,
    }
    per_user["total"] = sum(per_user.values())
    return per_user


def _ledger_figures(app: App, steady_from: datetime, stop_at: datetime) -> _LedgerFigures:
    with app.sessions() as session:
        stored_rows = session.execute(
            select(Request.id, Request.queued_at, Request.stored_at).where(
                Request.state == State.STORED
            )
        ).all()
        submitted = session.scalar(
            select(func.count()).select_from(Request).where(Request.first_submitted_at.is_not(None))
        )
        by_kind = session.execute(
            select(ApiCall.kind, func.coalesce(func.sum(ApiCall.cost), 0))
            .where(ApiCall.reserved_at >= steady_from, ApiCall.reserved_at < stop_at)
            .group_by(ApiCall.kind)
        ).all()
        ledger_cost = session.scalar(select(func.coalesce(func.sum(ApiCall.cost), 0)))
        transitions = session.execute(
            select(Event.to_state, func.count()).group_by(Event.to_state)
        ).all()
        dead = session.scalar(
            select(func.count()).select_from(Request).where(Request.state == State.DEAD)
        )
    return _LedgerFigures(
        stored_rows=list(stored_rows),
        submitted=int(submitted or 0),
        steady_cost_by_kind={kind: int(cost) for kind, cost in by_kind},
        ledger_cost=int(ledger_cost or 0),
        transitions={state: int(count) for state, count in transitions},
        dead=int(dead or 0),
    )
