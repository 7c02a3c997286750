"""``dsar simulate``: the real tick (planner, ledger, Amplitude client, verification) against
the emulator on a virtual clock, so that days of traffic take minutes.

What is real: every tick is ``Tick.run`` as the daemon runs it, on a real database (SQLite in a
temporary folder, or ``--database-url``), the ``AmplitudeClient`` with its trust rules, the
emulator's request handling (budget with 429s, completion times, failures, pre-signed URLs),
and every downloaded file verified by ``GzipJsonLinesVerifier``. What is not: there are no
sockets (an in-process httpx transport hands requests to the emulator), files are verified and
dropped (``SinkStorage``), files hold a few events each, and time moves only when told to (a
tick takes no time unless ``latency_ms`` says each call does).
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, insert, select

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import ApiCall, Event, QueueRow, Request
from dsar_scheduler.config import Settings, load_settings
from dsar_scheduler.core.states import State
from dsar_scheduler.logs import configure
from dsar_scheduler.metrics import Metrics
from dsar_scheduler.runtime.app import App, build_app
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.tick import BASELINE_BATCH
from dsar_scheduler.tools.emulator import API_PATH, Emulator, EmulatorConfig
from dsar_scheduler.tools.simulate.storage import SinkStorage
from dsar_scheduler.tools.simulate.transport import InProcessTransport

API_HOST = "amplitude.sim"
S3_HOST = "s3.sim"
KEY, SECRET = "simulated-org-key", "simulated-org-secret"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
HOUR = 3600.0


@dataclass(frozen=True)
class Workload:
    """The simulated traffic and service. Defaults: the documented API and the service's own
    defaults, with the whole org budget (fraction 1)."""

    hours: float = 72.0
    #: Subjects arriving per hour (Poisson), and subjects queued at the start.
    arrivals_per_hour: float = 0.0
    backlog: int = 0
    #: Calendar months of each request's date range, and projects per subject: files per
    #: request are months x projects (13 x 2 = 26 by default, the seed's example).
    months: int = 13
    projects: int = 2
    #: Completion delays: uniform on [min, max] hours, or triangular with ``completion_mode_h``.
    completion_min_h: float = 1.0
    completion_max_h: float = 72.0
    completion_mode_h: float | None = None
    fail_rate: float = 0.0
    budget: int = 14_400
    fraction: float = 1.0
    policy: Literal["planner", "baseline"] = "planner"
    tick_minutes: float = 30.0
    poll_interval_minutes: float = 30.0
    max_poll_gap_hours: float = 8.0
    submit_batch_size: int | None = None
    #: Virtual time each API or download request takes (0: ticks are instantaneous).
    latency_ms: float = 0.0
    #: Tick again as soon as the tick says there is work (as the daemon does), or only on
    #: the regular interval.
    wake_early: bool = True
    #: Steady state is measured from this hour on (default: half the run).
    warmup_hours: float | None = None
    seed: int = 1
    #: Run at 1/scale of the budget and traffic, report users per hour x scale (the dynamics
    #: are linear in both; a quick look at a large deployment).
    scale: float = 1.0

    @property
    def warmup(self) -> float:
        return self.hours / 2 if self.warmup_hours is None else self.warmup_hours

    def describe(self, policy: str | None = None) -> str:
        """One line for reports and charts (``policy``: to name several runs at once)."""
        traffic = []
        if self.backlog:
            traffic.append(f"backlog {self.backlog:,} at start")
        if self.arrivals_per_hour:
            traffic.append(f"{self.arrivals_per_hour:g} arriving per hour")
        shape = (
            "uniform"
            if self.completion_mode_h is None
            else f"triangular (mode {self.completion_mode_h:g} h)"
        )
        scale = f"; run at 1/{self.scale:g} scale" if self.scale != 1 else ""
        return (
            f"policy {policy or self.policy}, {self.hours:g} h, "
            f"{', '.join(traffic) or 'no traffic'}; "
            f"{self.months} months x {self.projects} projects; completion {shape} "
            f"{self.completion_min_h:g}-{self.completion_max_h:g} h; fail rate "
            f"{self.fail_rate:.0%}; budget {self.budget:,}/h x {self.fraction:g}; tick "
            f"{self.tick_minutes:g} min; latency {self.latency_ms:g} ms{scale}"
        )


@dataclass
class Sample:
    """The service's state after one tick."""

    hours: float
    cost_in_window: int
    stored: int
    outstanding: int
    waiting: int


@dataclass
class Result:
    workload: Workload
    #: Requests stored per hour from the warm-up to the end (x scale).
    users_per_hour: float
    users_per_hour_overall: float
    users_stored: int
    users_submitted: int
    #: Cost per stored user in the steady window, by kind of call.
    cost_per_user: dict[str, float]
    rate_limited: int
    lost_to_expiry: int
    failed_jobs: int
    dead: int
    #: Amplitude's finish (the emulator's clock) to every file stored.
    done_to_stored_s: list[float]
    queue_to_stored_s: list[float]
    #: Share of the service's limit used in the steady window.
    budget_use: float
    limit: int
    ledger_cost: int
    emulator_cost: int
    emulator_errors: list[str]
    ticks: int
    api_calls: int
    wall_seconds: float
    samples: list[Sample] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """The figures as one JSON-able object (``dsar simulate --json``)."""
        d2s, q2s = self.done_to_stored_s, self.queue_to_stored_s
        return {
            "users_per_hour": round(self.users_per_hour, 2),
            "users_per_hour_overall": round(self.users_per_hour_overall, 2),
            "users_stored": self.users_stored,
            "users_submitted": self.users_submitted,
            "cost_per_user": {k: round(v, 2) for k, v in self.cost_per_user.items()},
            "rate_limited": self.rate_limited,
            "lost_to_expiry": self.lost_to_expiry,
            "failed_jobs": self.failed_jobs,
            "dead": self.dead,
            "done_to_stored_p50_s": _q(d2s, 0.5),
            "done_to_stored_p95_s": _q(d2s, 0.95),
            "done_to_stored_max_s": round(max(d2s), 1) if d2s else None,
            "queue_to_stored_p50_s": _q(q2s, 0.5),
            "queue_to_stored_p95_s": _q(q2s, 0.95),
            "queue_to_stored_max_s": round(max(q2s), 1) if q2s else None,
            "budget_use": round(self.budget_use, 4),
            "limit_per_hour": self.limit,
            "ledger_cost": self.ledger_cost,
            "emulator_cost": self.emulator_cost,
            "emulator_errors": self.emulator_errors,
            "ticks": self.ticks,
            "api_calls": self.api_calls,
            "wall_seconds": round(self.wall_seconds, 1),
            "budget_series": [[round(s.hours, 3), s.cost_in_window] for s in self.samples],
            "workload": asdict(self.workload),
        }


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 1)


def _settings(w: Workload, database_url: str) -> Settings:
    return load_settings(
        database_url=database_url,
        storage_url="file:///nonexistent/dsar-simulator",  # replaced by SinkStorage
        api_base_url=f"https://{API_HOST}{API_PATH}",
        AMPLITUDE_API_KEY=KEY,
        AMPLITUDE_SECRET_KEY=SECRET,
        cost_budget_per_hour=max(1, round(w.budget / w.scale)),
        budget_fraction=w.fraction,
        policy=w.policy,
        tick_interval_seconds=w.tick_minutes * 60,
        poll_interval_seconds=w.poll_interval_minutes * 60,
        max_poll_gap_seconds=w.max_poll_gap_hours * HOUR,
        submit_batch_size=_batch_size(w),
        # the whole run's calls stay in the ledger: the report reconciles them all
        call_retention_days=max(30.0, w.hours / 24 + 1),
        log_format="console",
        log_level="error",
    )


def _batch_size(w: Workload) -> int | None:
    """The seed's 20 per tick scales with the run (2 per tick at 1/10 scale)."""
    if w.submit_batch_size is not None:
        return max(1, round(w.submit_batch_size / w.scale))
    if w.policy == "baseline" and w.scale != 1:
        return max(1, round(BASELINE_BATCH / w.scale))
    return None


def _emulator(w: Workload, clock: FakeClock) -> Emulator:
    config = EmulatorConfig(
        api_key=KEY,
        secret_key=SECRET,
        seed=w.seed,
        api_public_origin=f"https://{API_HOST}",
        s3_public_origin=f"https://{S3_HOST}",
        completion_min_s=w.completion_min_h * HOUR,
        completion_max_s=w.completion_max_h * HOUR,
        completion_mode_s=None if w.completion_mode_h is None else w.completion_mode_h * HOUR,
        fail_rate=w.fail_rate,
        projects_per_subject=w.projects,
        events_per_file=(1, 3),
        cache_files=False,
        budget_per_hour=max(1, round(w.budget / w.scale)),
        record_calls=False,
        forget_after_s=6 * HOUR,
    )
    return Emulator(config, clock)


def _date_range(months: int, today: date) -> tuple[date, date]:
    """A range that touches exactly ``months`` calendar months and ends last month."""
    end = today.replace(day=1) - timedelta(days=1)
    index = end.year * 12 + end.month - 1 - (months - 1)
    return date(index // 12, index % 12 + 1, 1), end


def _arrival_times(w: Workload, rng: random.Random) -> list[float]:
    """Seconds from the start at which subjects arrive: the backlog at 0, then Poisson."""
    times = [0.0] * round(w.backlog / w.scale)
    rate = w.arrivals_per_hour / w.scale / HOUR
    t = 0.0
    while rate > 0:
        t += rng.expovariate(rate)
        if t >= w.hours * HOUR:
            break
        times.append(t)
    return times


def _fresh_database(url: str) -> None:
    upgrade(url)
    from dsar_scheduler.adapters.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if conn.scalar(select(func.count()).select_from(QueueRow)):
                raise SystemExit(
                    "dsar simulate: the database already holds queue rows; "
                    "give an empty one (or leave --database-url out for a temporary SQLite)"
                )
    finally:
        engine.dispose()


def simulate(
    w: Workload,
    database_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """Run the workload; ``progress`` gets a line every simulated 6 hours."""
    configure("console", "error")
    with tempfile.TemporaryDirectory(prefix="dsar-sim-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'sim.db'}"
        _fresh_database(url)
        return _run(w, url, progress)


def _run(w: Workload, url: str, progress: Callable[[str], None] | None) -> Result:
    began = time.monotonic()
    clock = FakeClock(START)
    emulator = _emulator(w, clock)
    transport = InProcessTransport(
        {API_HOST: emulator.handle_api, S3_HOST: emulator.handle_s3},
        clock=clock,
        latency_s=w.latency_ms / 1000,
    )
    settings = _settings(w, url)
    app = build_app(
        settings,
        clock=clock,
        metrics=Metrics(),
        transport=transport,
        download_transport=transport,
        rng=random.Random(w.seed),
    )
    app.storage = SinkStorage()
    rng = random.Random(f"arrivals:{w.seed}")
    arrivals = _arrival_times(w, rng)
    start, end = _date_range(w.months, START.date())
    finish_times: dict[int, float] = {}
    samples: list[Sample] = []
    ticks = 0
    next_arrival = 0
    next_tick = START
    stop_at = START + timedelta(hours=w.hours)
    next_report = 6.0
    try:
        while True:
            if clock.now() < next_tick:
                clock.set(next_tick)
            if clock.now() >= stop_at:
                break
            elapsed = (clock.now() - START).total_seconds()
            upto = next_arrival
            while upto < len(arrivals) and arrivals[upto] <= elapsed:
                upto += 1
            _enqueue(app, next_arrival, upto, start, end)
            next_arrival = upto
            tick_start = clock.now()
            report = app.tick()
            ticks += 1
            _note_finishes(app, emulator, tick_start, finish_times)
            samples.append(_sample(app, clock.now()))
            regular = tick_start + timedelta(minutes=w.tick_minutes)
            wake = report.wake_at if report.wake_at and w.wake_early else regular
            next_tick = max(min(regular, wake), clock.now())
            if progress is not None and samples[-1].hours >= next_report:
                s = samples[-1]
                progress(
                    f"h {s.hours:6.1f}/{w.hours:g}: stored {s.stored:,}, outstanding "
                    f"{s.outstanding:,}, waiting {s.waiting:,}, cost in window "
                    f"{s.cost_in_window:,}, {time.monotonic() - began:.0f} s"
                )
                next_report += 6.0
        return _result(w, app, emulator, samples, finish_times, ticks, began, transport)
    finally:
        app.close()


def _enqueue(app: App, first: int, upto: int, start: date, end: date) -> None:
    if upto <= first:
        return
    rows = [
        {
            "amplitude_id": 1_000_000 + n,
            "start_date": start,
            "end_date": end,
            "external_ref": f"SIM-{n}",
        }
        for n in range(first, upto)
    ]
    with app.sessions() as session, session.begin():
        session.execute(insert(QueueRow), rows)


def _note_finishes(
    app: App, emulator: Emulator, since: datetime, finish_times: dict[int, float]
) -> None:
    """Amplitude's own finish time of each request stored in the last tick (the emulator
    forgets jobs some hours after their results expire)."""
    with app.sessions() as session:
        rows = session.execute(
            select(Request.id, Request.remote_request_id, Request.stored_at).where(
                Request.state == State.STORED, Request.stored_at >= since
            )
        ).all()
    for rid, remote, stored_at in rows:
        if rid in finish_times or remote is None or stored_at is None:
            continue
        finished = emulator.job(remote).finishes_at
        finish_times[rid] = (stored_at - finished).total_seconds()


def _sample(app: App, now: datetime) -> Sample:
    snap = app.ledger.snapshot(now, timedelta(days=3))
    states = snap.by_state
    return Sample(
        hours=(now - START).total_seconds() / HOUR,
        cost_in_window=snap.cost_in_window,
        stored=states.get(State.STORED, 0),
        outstanding=sum(
            states.get(s, 0)
            for s in (State.SUBMITTING, State.SUBMITTED, State.DONE, State.FETCHING)
        ),
        waiting=snap.queue_pending
        + sum(states.get(s, 0) for s in (State.QUEUED, State.FAILED, State.EXPIRED)),
    )


def _result(
    w: Workload,
    app: App,
    emulator: Emulator,
    samples: list[Sample],
    finish_times: dict[int, float],
    ticks: int,
    began: float,
    transport: InProcessTransport,
) -> Result:
    steady_from = START + timedelta(hours=w.warmup)
    stop_at = START + timedelta(hours=w.hours)
    steady_hours = max(1e-9, (stop_at - steady_from).total_seconds() / HOUR)
    with app.sessions() as session:
        stored_rows = session.execute(
            select(Request.id, Request.queued_at, Request.stored_at).where(
                Request.state == State.STORED
            )
        ).all()
        submitted = session.scalar(
            select(func.count()).select_from(Request).where(Request.first_submitted_at.is_not(None))
        )
        by_kind = dict(
            session.execute(
                select(ApiCall.kind, func.coalesce(func.sum(ApiCall.cost), 0))
                .where(ApiCall.reserved_at >= steady_from, ApiCall.reserved_at < stop_at)
                .group_by(ApiCall.kind)
            ).all()
        )
        ledger_cost = int(session.scalar(select(func.coalesce(func.sum(ApiCall.cost), 0))) or 0)
        transitions = dict(
            session.execute(select(Event.to_state, func.count()).group_by(Event.to_state)).all()
        )
        dead = session.scalar(
            select(func.count()).select_from(Request).where(Request.state == State.DEAD)
        )
    in_window = [r for r in stored_rows if r.stored_at and r.stored_at >= steady_from]
    users = len(in_window)
    steady_cost = sum(int(v) for v in by_kind.values())
    per_user = {
        "submit": int(by_kind.get("submit", 0)) / users if users else 0.0,
        "poll": int(by_kind.get("status", 0)) / users if users else 0.0,
        "fetch": int(by_kind.get("fetch", 0)) / users if users else 0.0,
    }
    per_user["total"] = sum(per_user.values())
    limit = app.settings.budget_limit
    return Result(
        workload=w,
        users_per_hour=users / steady_hours * w.scale,
        users_per_hour_overall=len(stored_rows) / w.hours * w.scale,
        users_stored=len(stored_rows),
        users_submitted=int(submitted or 0),
        cost_per_user=per_user,
        rate_limited=emulator.rate_limited_count(),
        lost_to_expiry=int(transitions.get(State.EXPIRED, 0)),
        failed_jobs=int(transitions.get(State.FAILED, 0)),
        dead=int(dead or 0),
        done_to_stored_s=list(finish_times.values()),
        queue_to_stored_s=[
            (r.stored_at - r.queued_at).total_seconds()
            for r in stored_rows
            if r.stored_at is not None
        ],
        budget_use=steady_cost / (limit * steady_hours),
        limit=limit,
        ledger_cost=ledger_cost,
        emulator_cost=emulator.cost_spent_total(),
        emulator_errors=emulator.internal_errors,
        ticks=ticks,
        api_calls=transport.requests,
        wall_seconds=time.monotonic() - began,
        samples=samples,
    )


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
