"""Benchmark: one tick's wall time when every call is far away. 10,000 outstanding requests
and 5,000 waiting on PostgreSQL (as ``tick_work`` lays them out), the real Amplitude client
over a transport that waits ``--latency-ms`` before each answer (every API call and every
download), at each DSAR_CONCURRENCY given; the wall time is printed beside the tick interval.

    .venv/bin/python -m tests.bench.tick_latency
    .venv/bin/python -m tests.bench.tick_latency --concurrency 8 --latency-ms 200 --window-cost 0

The transport plays Amplitude and its pre-signed host: a job is still running, or (one in
``--done-share``) done with two output files; an output URL redirects to a download of a small
gzip file; a POST is accepted. Storage verifies each file and drops it (``SinkStorage``).
Not a test: the figures depend on the machine and on PostgreSQL."""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import text

from dsar_scheduler.adapters.amplitude import AmplitudeClient
from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import make_engine
from dsar_scheduler.config import US_API
from dsar_scheduler.logs import configure
from dsar_scheduler.tick import Tick
from dsar_scheduler.tick.lanes import lanes_for
from dsar_scheduler.tools.simulate.storage import SinkStorage
from tests.bench.tick_work import FILE, NOW, bench_ledger, pg_schema, populate

PRESIGNED = "https://presigned.example"


class FarAmplitude(httpx.BaseTransport):
    """Amplitude's API and its pre-signed host, each answer ``latency_s`` late (the calling
    thread waits, as it would on a far server's socket)."""

    def __init__(self, latency_s: float, done_share: float, seed: int = 1) -> None:
        self.latency_s = latency_s
        self.done_share = done_share
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.next_id = 90_000_000

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        time.sleep(self.latency_s)
        path = request.url.path.rstrip("/")
        if request.url.host == "presigned.example":
            return self._answer("download", 200, stream=httpx.ByteStream(FILE))
        if "/outputs/" in path:
            location = f"{PRESIGNED}{path}?sig=1"
            return self._answer("redirect", 302, headers={"Location": location})
        if request.method == "POST":
            with self.lock:
                self.next_id += 1
                remote_id = self.next_id
            return self._answer("submit", 200, json={"requestId": remote_id})
        return self._answer("status", 200, json=self._status(int(path.rsplit("/", 1)[1])))

    def _status(self, request_id: int) -> dict[str, Any]:
        with self.lock:
            done = self.rng.random() < self.done_share
        if not done:
            return {"requestId": request_id, "status": "submitted"}
        return {
            "requestId": request_id,
            "status": "done",
            "urls": [f"{US_API}/{request_id}/outputs/{n}" for n in (0, 1)],
            "expires": (NOW + timedelta(days=2)).replace(tzinfo=None).isoformat(),
        }

    def _answer(self, kind: str, code: int, **kwargs: Any) -> httpx.Response:
        with self.lock:
            self.calls[kind] += 1
        return httpx.Response(code, **kwargs)


def run(
    url: str, concurrency: int, latency_s: float, done_share: float, policy: str = "planner"
) -> dict[str, Any]:
    """One tick over the far transport; its wall time, calls and report."""
    settings, engine, ledger, metrics = bench_ledger(url, concurrency=concurrency, policy=policy)
    far = FarAmplitude(latency_s, done_share)
    clock = FakeClock(NOW)
    client = AmplitudeClient(US_API, "k", "s", transport=far, download_transport=far, now=clock.now)
    lanes = lanes_for(concurrency)
    tick = Tick(settings, ledger, client, SinkStorage(), clock, metrics, "bench", lanes=lanes)
    began = time.perf_counter()
    report = tick.run()
    seconds = time.perf_counter() - began
    lanes.close()
    client.close()
    engine.dispose()
    return {
        "concurrency": concurrency,
        "wall_s": round(seconds, 1),
        "share_of_interval": round(seconds / settings.tick_interval_seconds, 3),
        "calls": dict(far.calls),
        "report": report.summary(),
    }


def make_all_due(url: str) -> None:
    """Every outstanding request due for a poll (the seed's plan polls them all each tick)."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE dsar_requests SET next_action_at = :at WHERE state = 'submitted'"),
            {"at": (NOW - timedelta(minutes=1)).replace(tzinfo=None)},
        )
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", default="1,8", help="comma-separated widths")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--done-share", type=float, default=0.02)
    parser.add_argument("--outstanding", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=5_000)
    parser.add_argument(
        "--window-cost", type=int, default=7_200, help="cost already spent in the last hour"
    )
    parser.add_argument("--policy", choices=("planner", "baseline"), default="planner")
    parser.add_argument(
        "--all-due", action="store_true", help="every outstanding request due for a poll now"
    )
    args = parser.parse_args(argv)
    configure("console", "error")
    print(
        f"one tick: {args.outstanding:,} outstanding, {args.waiting:,} waiting, "
        f"{args.window_cost:,} of 14,400 spent in the last hour, {args.latency_ms:g} ms per "
        f"API call and per download, jobs found done: {args.done_share:.0%}, policy "
        f"{args.policy}{', every request due' if args.all_due else ''}; tick interval 1,800 s",
        flush=True,
    )
    for width in (int(w) for w in args.concurrency.split(",")):
        with pg_schema() as url:  # fresh data for each: the first tick is the one measured
            populate(
                url,
                args.outstanding,
                args.waiting,
                True,
                calls=args.window_cost,
                window_cost=args.window_cost,
                history=0,
            )
            if args.all_due:
                make_all_due(url)
            result = run(url, width, args.latency_ms / 1000, args.done_share, args.policy)
        print(json.dumps(result), flush=True)
        print(
            f"  DSAR_CONCURRENCY={width}: {result['wall_s']:.1f} s wall "
            f"({result['share_of_interval']:.1%} of the 1,800 s interval), "
            f"{sum(result['calls'].values()):,} requests",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
