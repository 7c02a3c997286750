"""Does ``dsar simulate`` predict the daemon? The same workload run twice: by the real
``dsar run`` process against the emulator on a fast clock (real sockets, threads, database,
storage on disk), and by the simulator on its virtual clock; users an hour in the steady state
compared (issue 14 asks for agreement within 5%).

    .venv/bin/python -m tests.bench.daemon_vs_sim                 # about 10 minutes
    .venv/bin/python -m tests.bench.daemon_vs_sim --hours 72 --speed 400

Conditions: the workload is scaled down (``--scale``, default 100: a budget of 144 an hour and a
backlog of 700) so that the daemon on loopback keeps up with a clock running ``--speed`` times
wall time; at that speed a loopback call of a few wall milliseconds lasts seconds of clock time,
so the simulator is run twice: with calls taking no time, and with each call taking the clock
time the daemon's ticks lasted per call it made (read from its ledger: an upper bound, as if
the calls had been made one after another). Not a test: it takes minutes and its
numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dsar_scheduler.adapters.db import ApiCall, Request, Tick, make_engine
from dsar_scheduler.core.states import State
from dsar_scheduler.tools.simulate.run import Workload, date_range, emulator_options, simulate
from dsar_scheduler.tools.simulate.workload import HOUR
from tests.support.procs import (
    DaemonProcess,
    clock_env,
    enqueue,
    run_cli,
    service_env,
    shared_clock_emulator,
)


def main() -> int:
    args = _arguments()
    workload = Workload(
        backlog=args.backlog,
        hours=args.hours,
        warmup_hours=args.warmup_hours,
        scale=args.scale,
        seed=args.seed,
        latency_ms=0.0,
        bandwidth_mibps=0.0,
    )
    print(f"workload: {workload.describe()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dsar-dvs-") as tmp:
        daemon = _run_daemon(workload, args.speed, Path(tmp))
    print(f"daemon: {json.dumps(daemon)}", flush=True)
    rows: dict[str, Any] = {"daemon": daemon}
    # The daemon is the service itself with a budget of 144 (its bounds as they are), not a
    # folded 1/scale run: the simulator runs that same small org at full scale.
    small = replace(
        workload,
        budget=emulator_options(workload)["budget_per_hour"],
        backlog=round(workload.backlog / workload.scale),
        scale=1.0,
    )
    call_ms = daemon["tick_clock_s_per_call"] * 1000
    for name, latency in (
        ("simulate, calls take no time", 0.0),
        ("simulate, calls as the daemon's", call_ms),
    ):
        result = simulate(replace(small, latency_ms=latency))
        users = result.users_per_hour * workload.scale
        gap = users / daemon["users_per_hour"] - 1 if daemon["users_per_hour"] else float("nan")
        rows[name] = {"users_per_hour": users, "vs_daemon": gap, "latency_ms": latency}
        print(f"{name}: {users:.1f} users/h ({gap:+.1%} against the daemon)", flush=True)
    print(json.dumps(rows))
    return 0


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed", type=float, default=600.0, help="clock seconds per wall second")
    p.add_argument("--scale", type=float, default=100.0)
    p.add_argument("--backlog", type=int, default=70_000, help="at full scale")
    p.add_argument("--hours", type=float, default=96.0)
    p.add_argument("--warmup-hours", type=float, default=48.0)
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args()


def _run_daemon(w: Workload, speed: float, tmp: Path) -> dict[str, float]:
    """``dsar run`` on the shared fast clock for ``w.hours`` clock hours; its figures."""
    epoch = time.time()
    url = f"sqlite:///{tmp / 'daemon.db'}"
    options = emulator_options(w)
    seed = options.pop("seed")
    with shared_clock_emulator(seed, speed, epoch, **options) as emulator:
        env = service_env(emulator, url, f"file://{tmp}/files", budget_fraction=w.fraction)
        env.update(clock_env(speed, epoch))
        env.update(
            DSAR_TICK_INTERVAL_SECONDS=str(w.tick_minutes * 60),
            DSAR_POLL_INTERVAL_SECONDS=str(w.poll_interval_minutes * 60),
            DSAR_COST_BUDGET_PER_HOUR=str(options["budget_per_hour"]),
            DSAR_CONCURRENCY=str(w.concurrency),
            DSAR_LOG_LEVEL="warning",
        )
        start, end = date_range(w.months, datetime.fromtimestamp(epoch, UTC).date())
        rows = [
            {"amplitude_id": str(1_000_000 + n), "start_date": str(start), "end_date": str(end)}
            for n in range(round(w.backlog / w.scale))
        ]
        run_cli(["migrate"], env)
        enqueue(env, tmp, rows)
        process = DaemonProcess(env, tmp / "daemon.log").start()
        try:
            process.wait_healthy(60)
            time.sleep(w.hours * HOUR / speed - (time.time() - epoch))
            process.terminate(60)
        finally:
            process.close()
    return _daemon_figures(url, w, epoch)


def _daemon_figures(database_url: str, w: Workload, epoch: float) -> dict[str, float]:
    """Requests stored in the steady-state window, the mean clock time of a call, 429s."""
    origin = datetime.fromtimestamp(epoch, UTC)
    begin, end = origin + timedelta(hours=w.warmup), origin + timedelta(hours=w.hours)
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            stored = session.scalar(
                select(func.count()).where(
                    Request.state == State.STORED,
                    Request.stored_at >= begin,
                    Request.stored_at < end,
                )
            )
            ticks = session.execute(
                select(Tick.started_at, Tick.finished_at).where(Tick.finished_at.is_not(None))
            ).all()
            calls = session.scalar(select(func.count()).select_from(ApiCall))
            rate_limited = session.scalar(select(func.count()).where(ApiCall.status_code == 429))
    finally:
        engine.dispose()
    busy = sum((f - s).total_seconds() for s, f in ticks if f is not None)
    return {
        "stored_in_window": int(stored or 0),
        "users_per_hour": int(stored or 0) / (w.hours - w.warmup) * w.scale,
        "ticks": len(ticks),
        "tick_clock_s_per_call": busy / calls if calls else 0.0,
        "calls": int(calls or 0),
        "rate_limited": int(rate_limited or 0),
    }


if __name__ == "__main__":
    raise SystemExit(main())
