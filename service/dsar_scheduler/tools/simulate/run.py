"""``dsar simulate``: the real tick (planner, ledger, Amplitude client, verification) against
the emulator on a virtual clock, so that days of traffic take minutes.

What is real: every tick is ``Tick.run`` as the daemon runs it, on a real database (SQLite in a
temporary folder, or ``--database-url``), the ``AmplitudeClient`` with its trust rules, the
emulator's request handling (budget with 429s, completion times, failures, pre-signed URLs),
and every downloaded file verified by ``GzipJsonLinesVerifier``. What is not: there are no
sockets (an in-process httpx transport hands requests to the emulator), files are verified and
dropped (``SinkStorage``), files hold a few events each (a download takes the time of a
nominal size instead, ``network.py``), and the tick's concurrent network work runs one piece
after another on virtual lanes (``lanes.py``) that keep the time it would have taken.
Time moves only by the calls' and downloads' time and between ticks.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import QueueRow, Request
from dsar_scheduler.config import Settings, load_settings
from dsar_scheduler.core.planner import PlannerConfig
from dsar_scheduler.core.states import State
from dsar_scheduler.logs import configure
from dsar_scheduler.metrics import Metrics
from dsar_scheduler.runtime.app import App, build_app
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.tick import BASELINE_BATCH
from dsar_scheduler.tools.emulator import API_PATH, Emulator, EmulatorConfig
from dsar_scheduler.tools.simulate.bounds import at_scale, bounds_at_scale
from dsar_scheduler.tools.simulate.collect import Trace, collect
from dsar_scheduler.tools.simulate.lanes import VirtualLanes
from dsar_scheduler.tools.simulate.network import Downloads
from dsar_scheduler.tools.simulate.result import Result, Sample
from dsar_scheduler.tools.simulate.storage import SinkStorage
from dsar_scheduler.tools.simulate.transport import InProcessTransport
from dsar_scheduler.tools.simulate.workload import HOUR, START, Workload

__all__ = ["Result", "Sample", "Workload", "simulate"]

API_HOST = "amplitude.sim"
S3_HOST = "s3.sim"
KEY, SECRET = "simulated-org-key", "simulated-org-secret"
PROGRESS_EVERY_H = 6.0


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
        with bounds_at_scale(w.scale):
            return _run(w, url, progress)


def _run(w: Workload, url: str, progress: Callable[[str], None] | None) -> Result:
    began = time.monotonic()
    clock = FakeClock(START)
    emulator = _emulator(w, clock)
    downloads = Downloads(w)
    transport = InProcessTransport(
        {API_HOST: emulator.handle_api, S3_HOST: emulator.handle_s3},
        clock=clock,
        latency_s=w.call_seconds,
        body_seconds=downloads.body_seconds if w.bandwidth_mibps > 0 else None,
    )
    lanes = VirtualLanes(clock, w.concurrency)
    app = build_app(
        _settings(w, url),
        clock=clock,
        metrics=Metrics(),
        transport=transport,
        download_transport=transport,
        rng=random.Random(w.seed),
        lanes=lanes,
    )
    app.storage = SinkStorage()
    try:
        trace = _tick_to_the_end(w, app, emulator, clock, began, progress)
        trace.downloads, trace.nominal_bytes = downloads.count, downloads.nominal_bytes
        trace.lane_seconds = lanes.busy_seconds
        return collect(w, app, emulator, trace, began, transport)
    finally:
        app.close()


def _tick_to_the_end(
    w: Workload,
    app: App,
    emulator: Emulator,
    clock: FakeClock,
    began: float,
    progress: Callable[[str], None] | None,
) -> Trace:
    """Queue the arrivals as they fall due and tick as the daemon would, until the end."""
    arrivals = _arrival_times(w, random.Random(f"arrivals:{w.seed}"))
    start, end = date_range(w.months, START.date())
    trace = Trace()
    queued = 0
    next_tick = START
    stop_at = START + timedelta(hours=w.hours)
    next_report = PROGRESS_EVERY_H
    while True:
        if clock.now() < next_tick:
            clock.set(next_tick)
        if clock.now() >= stop_at:
            return trace
        queued = _enqueue_arrived(app, arrivals, queued, clock.now(), start, end)
        tick_start = clock.now()
        report = app.tick()
        trace.ticks += 1
        trace.tick_seconds.append((clock.now() - tick_start).total_seconds())
        _note_finishes(app, emulator, tick_start, trace.finish_times)
        trace.samples.append(_sample(app, clock.now()))
        regular = tick_start + timedelta(minutes=w.tick_minutes)
        wake = report.wake_at if report.wake_at and w.wake_early else regular
        next_tick = max(min(regular, wake), clock.now())
        if progress is not None and trace.samples[-1].hours >= next_report:
            progress(_progress_line(w, trace.samples[-1], began))
            next_report += PROGRESS_EVERY_H


def _progress_line(w: Workload, s: Sample, began: float) -> str:
    return (
        f"h {s.hours:6.1f}/{w.hours:g}: stored {s.stored:,}, outstanding "
        f"{s.outstanding:,}, waiting {s.waiting:,}, cost in window "
        f"{s.cost_in_window:,}, {time.monotonic() - began:.0f} s"
    )


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
        concurrency=w.concurrency,
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
    """The batch per tick scales with the run (a tenth of it at 1/10 scale): the seed's, or
    the planner's most submissions per tick; the saturating baseline has none: it submits
    all the budget allows after its polls."""
    if w.policy == "saturating":
        return None  # the policy's own: no limit
    if w.submit_batch_size is not None:
        return at_scale(w.submit_batch_size, w.scale)
    if w.scale == 1:
        return None
    batch = BASELINE_BATCH if w.policy == "baseline" else PlannerConfig.max_submits
    return at_scale(batch, w.scale)


def _emulator(w: Workload, clock: FakeClock) -> Emulator:
    config = EmulatorConfig(
        api_key=KEY,
        secret_key=SECRET,
        api_public_origin=f"https://{API_HOST}",
        s3_public_origin=f"https://{S3_HOST}",
        cache_files=False,
        record_calls=False,
        forget_after_s=6 * HOUR,
        **emulator_options(w),
    )
    return Emulator(config, clock)


def emulator_options(w: Workload) -> dict[str, Any]:
    """Amplitude's behaviour in this workload, as ``EmulatorConfig`` fields: also what a real
    ``dsar run`` is given to compare against (``tests/bench/daemon_vs_sim.py``)."""
    return {
        "seed": w.seed,
        "completion_min_s": w.completion_min_h * HOUR,
        "completion_max_s": w.completion_max_h * HOUR,
        "completion_mode_s": None if w.completion_mode_h is None else w.completion_mode_h * HOUR,
        "fail_rate": w.fail_rate,
        "projects_weights": w.projects,
        "empty_month_rate": w.empty_month_rate,
        "events_per_file": (1, 3),
        "budget_per_hour": max(1, round(w.budget / w.scale)),
    }


def date_range(months: int, today: date) -> tuple[date, date]:
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


def _enqueue_arrived(
    app: App, arrivals: list[float], queued: int, now: datetime, start: date, end: date
) -> int:
    """Queue the subjects that have arrived by ``now``; how many are queued in all."""
    elapsed = (now - START).total_seconds()
    upto = queued
    while upto < len(arrivals) and arrivals[upto] <= elapsed:
        upto += 1
    if upto <= queued:
        return queued
    rows = [
        {
            "amplitude_id": 1_000_000 + n,
            "start_date": start,
            "end_date": end,
            "external_ref": f"SIM-{n}",
        }
        for n in range(queued, upto)
    ]
    with app.sessions() as session, session.begin():
        session.execute(insert(QueueRow), rows)
    return upto


def _note_finishes(
    app: App, emulator: Emulator, since: datetime, finish_times: dict[int, tuple[datetime, float]]
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
        finish_times[rid] = (stored_at, (stored_at - finished).total_seconds())


def _sample(app: App, now: datetime) -> Sample:
    snap = app.ledger.views.snapshot(now, timedelta(days=3))
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
