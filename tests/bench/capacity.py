"""The capacity benchmark of issues 5 and 14: every figure beside its target.

    .venv/bin/python -m tests.bench.capacity              # all, simulations at 1/20 scale
    .venv/bin/python -m tests.bench.capacity --scale 1    # simulations at full scale (slow)
    .venv/bin/python -m tests.bench.capacity --only sim,documented,light
    .venv/bin/python -m tests.bench.capacity --only scale # full scale beside 1/SCALE (hours)

Sections (simulations under ``dsar simulate``'s realistic profile: 200 ms a call, 2 MiB/s a
download stream, jobs done in 1-120 h, 5% failed, files per user varying around 26,
concurrency 8; each run prints every assumption with its figures):
- ``sim``: the seed's plan (baseline), the saturating baseline (the seed's polling, every
  submission the budget fits after the next tick's polls) and the planner on the same cold
  backlog of 70,000 at the full budget (14,400 an hour, fraction 1), steady state from hour 96
  of 144: users per hour, the planner's ratio to each baseline, 429s, results lost, done ->
  stored p95, tick durations;
- ``documented``: the planner on the same backlog with jobs done within the documented 3 days;
- ``light``: 20 users an hour at full scale for 144 h, 200 ms a call: median done -> stored
  over the last day (requests of every completion time finish then), ticks over the interval;
- ``scale`` (not in the default set: hours): the planner's backlog run at full scale beside
  the scaled one;
- ``tick``: one tick's work with 10,000 outstanding and 5,000 waiting on PostgreSQL, with a
  client that answers at once (no network), logging as the service does (JSON, info);
- ``budget``: the budget query with a million rows in the call ledger (PostgreSQL, SQLite);
- ``history``: what grows with the years: finding new queue rows among a million, and a
  metrics scrape over a million stored requests and 2.6 million stored files;
- ``fetch``: a 1 GiB output file: peak memory of the fetching process and its throughput
  against curl fetching the same file from the emulator.

Not a test: numbers depend on the machine. Needs PostgreSQL at DSAR_TEST_PG_URL (as the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dsar_scheduler.logs import configure
from dsar_scheduler.tools.simulate.report import table
from dsar_scheduler.tools.simulate.result import Result
from dsar_scheduler.tools.simulate.run import simulate
from dsar_scheduler.tools.simulate.workload import profiled


@dataclass
class Figure:
    name: str
    measured: str
    target: str
    ok: bool | None  # None: information, no target


FIGURES: list[Figure] = []
#: Every simulation of this run, for ``--chart``.
RESULTS: list[Result] = []
POLICIES = ("baseline", "saturating", "planner")


def note(name: str, measured: str, target: str = "", ok: bool | None = None) -> None:
    FIGURES.append(Figure(name, measured, target, ok))
    mark = "" if ok is None else ("  ok" if ok else "  MISSED")
    print(f"  {name}: {measured}{'  (target ' + target + ')' if target else ''}{mark}")
    sys.stdout.flush()


def say(line: str) -> None:
    print(line)
    sys.stdout.flush()


def machine_speed() -> str:
    """A yardstick printed with the figures: the times here are this machine's, and shared
    machines differ (and vary) by a factor of two or more."""
    loops = []
    for _ in range(3):
        began = time.perf_counter()
        total = 0
        for i in range(10_000_000):
            total += i
        loops.append(time.perf_counter() - began)
    return (
        f"a 10,000,000-step Python loop takes {min(loops):.2f} s (best of 3); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )


# -- sections ------------------------------------------------------------------------------


#: The realistic backlog of issue 14: a cold backlog of 70,000 at the whole org budget,
#: steady state measured over the last 48 hours (from hour 96 of 144).
BACKLOG: dict[str, Any] = {"backlog": 70_000, "budget": 14_400, "fraction": 1.0}


def backlog_run(profile: str, policy: str, scale: float, hours: float) -> dict[str, Any]:
    """One backlog run: its table printed, its figures returned."""
    w = profiled(profile, policy=policy, hours=hours, warmup_hours=hours - 48, scale=scale)
    result = simulate(replace(w, **BACKLOG))
    RESULTS.append(result)
    say(table(result))
    return result.figures()


def bench_sim(scale: float, hours: float) -> None:
    say(
        f"\n== sim: the seed's plan, the saturating baseline and the planner on a backlog of "
        f"70,000, realistic profile, full budget (run at 1/{scale:g} scale) =="
    )
    runs = {p: backlog_run("realistic", p, scale, hours) for p in POLICIES}
    plan, base, sat = runs["planner"], runs["baseline"], runs["saturating"]
    note("baseline users/hour (the seed's plan)", f"{base['users_per_hour']:.1f}")
    note("saturating baseline users/hour", f"{sat['users_per_hour']:.1f}")
    rate = plan["users_per_hour"]
    note("planner users/hour (realistic)", f"{rate:.1f}", ">= 350", rate >= 350)
    for label, other, target in (("saturating baseline", sat, 2.0), ("seed's plan", base, 8.0)):
        ratio = rate / other["users_per_hour"] if other["users_per_hour"] else float("inf")
        note(f"planner / {label}", f"{ratio:.2f}x", f">= {target:g}x", ratio >= target)
    for label, f in runs.items():
        note_safety(label, f)
    p95 = (plan["done_to_stored_p95_s"] or 0) / 3600
    note("planner done -> stored p95 (backlog)", f"{p95:.1f} h", "<= 24 h", p95 <= 24)
    note("planner budget used (steady)", f"{plan['budget_use']:.1%}")
    note_ticks("planner (backlog)", plan, target=False)
    cost = plan["cost_per_user"]
    note(
        "planner cost per user",
        "{total:.1f} (submit {submit:.1f}, poll {poll:.1f}, fetch {fetch:.1f})".format(**cost),
    )


def bench_documented(scale: float, hours: float) -> None:
    say(f"\n== sim: the planner with jobs done within the documented 3 days (1/{scale:g}) ==")
    plan = backlog_run("documented", "planner", scale, hours)
    rate = plan["users_per_hour"]
    note("planner users/hour (documented 1-72 h)", f"{rate:.1f}", ">= 350", rate >= 350)
    note_safety("planner (documented)", plan)
    p95 = (plan["done_to_stored_p95_s"] or 0) / 3600
    note("planner (documented) done -> stored p95", f"{p95:.1f} h", "<= 24 h", p95 <= 24)


def note_safety(label: str, f: dict[str, Any]) -> None:
    """0 x 429 (those the lanes' order hid included) and 0 results lost to expiry."""
    n429 = f["rate_limited"] + f["late_overruns"]
    note(f"{label} 429s", str(n429), "0", n429 == 0)
    lost = f["lost_to_expiry"]
    note(f"{label} results lost to expiry", str(lost), "0", lost == 0)


def note_ticks(label: str, f: dict[str, Any], target: bool) -> None:
    """Tick durations (virtual: the calls' and downloads' time) and ticks over the interval."""
    note(
        f"{label} tick duration p95 / max",
        f"{(f['tick_seconds_p95'] or 0) / 60:.1f} / {(f['tick_seconds_max'] or 0) / 60:.1f} min",
    )
    over = f["ticks_overrunning"]
    note(
        f"{label} ticks over the interval",
        f"{over} of {f['ticks']}",
        "0" if target else "",
        over == 0 if target else None,
    )


def bench_light() -> None:
    say("\n== light load: 20 users an hour, realistic profile (200 ms a call), full scale ==")
    # measured from hour 120: requests of every completion time (up to 120 h) finish then,
    # not only the quick ones
    result = simulate(profiled("realistic", hours=144, arrivals_per_hour=20, warmup_hours=120))
    RESULTS.append(result)
    say(table(result))
    f = result.figures()
    p50 = f["done_to_stored_p50_s"] or 0
    tick = f["tick_interval_s"]
    note(
        "light load done -> stored, median",
        f"{p50 / 60:.1f} min",
        f"<= {tick / 60:g} min (one tick)",
        p50 <= tick,
    )
    note("light load done -> stored, p95", f"{(f['done_to_stored_p95_s'] or 0) / 60:.1f} min")
    note_safety("light load", f)
    note_ticks("light load", f, target=True)


def bench_scale(scale: float, hours: float) -> None:
    """The planner's backlog run at full scale beside the scaled one (slow: hours)."""
    say(f"\n== scale: the realistic backlog at full scale and at 1/{scale:g} ==")
    scaled = backlog_run("realistic", "planner", scale, hours)
    full = backlog_run("realistic", "planner", 1.0, hours)
    gap = abs(scaled["users_per_hour"] / full["users_per_hour"] - 1)
    note(
        f"users/hour at 1/{scale:g} scale vs full",
        f"{scaled['users_per_hour']:.1f} vs {full['users_per_hour']:.1f} ({gap:.1%})",
        "within 5%",
        gap <= 0.05,
    )


@contextmanager
def service_logging() -> Iterator[None]:
    """The service's own log settings while a tick runs (JSON, info: a line per state
    change, a line per batch of admissions; 800 lines for the first new-rows tick here), the
    lines written to /dev/null: what a tick costs in production includes writing its log."""
    with open(os.devnull, "w") as null, redirect_stderr(null):
        configure("json", "info")
        try:
            yield
        finally:
            configure("console", "error")


def bench_tick(repeat: int = 3) -> None:
    from tests.bench.tick_work import pg_schema, populate, run_tick

    say("\n== tick work: 10,000 outstanding + 5,000 waiting, PostgreSQL, instant client ==")
    for admitted in (True, False):
        label = "queued (admitted)" if admitted else "new queue rows (admitted by this tick)"
        runs = []
        for _ in range(repeat):  # each on fresh data: the first tick is the one measured
            with pg_schema() as url:
                populate(url, 10_000, 5_000, admitted, 200_000, window_cost=7_200, history=5_000)
                with service_logging():
                    runs.append(run_tick(url))
                    again = run_tick(url)
        runs.sort(key=lambda r: r.seconds)
        mid = runs[len(runs) // 2]
        say(f"  5,000 {label}: first tick {mid.summary}")
        server = "?" if mid.server_cpu_s is None else f"{mid.server_cpu_s:.2f}"
        note(
            f"tick work, 5,000 {label}",
            f"{mid.seconds:.2f} s median of {repeat} ({mid.calls} calls; CPU: service "
            f"{mid.client_cpu_s:.2f} s, PostgreSQL {server} s); all: "
            + ", ".join(f"{r.seconds:.2f}" for r in runs)
            + f"; next tick {again.seconds:.2f} s",
            "< 2 s",
            mid.seconds < 2.0,
        )


def bench_budget() -> None:
    from tests.bench.tick_work import budget_query, pg_schema, populate

    say("\n== budget query: 1,000,000 rows in dsar_api_calls, 7,200 in the last hour ==")
    with pg_schema() as url:
        populate(url, 0, 0, True, calls=1_000_000, window_cost=7_200, history=0)
        spent, reserve = budget_query(url)
    note(
        "PostgreSQL: cost in the rolling hour",
        f"{spent * 1000:.1f} ms",
        "fast (< 20 ms)",
        spent < 0.02,
    )
    note("PostgreSQL: reserve 100 calls", f"{reserve * 1000:.1f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        populate(url, 0, 0, True, calls=1_000_000, window_cost=7_200, history=0)
        spent, reserve = budget_query(url)
    note(
        "SQLite: cost in the rolling hour", f"{spent * 1000:.1f} ms", "fast (< 20 ms)", spent < 0.02
    )
    note("SQLite: reserve 100 calls", f"{reserve * 1000:.1f} ms")


def bench_history(requests: int = 1_000_000, with_files: int = 100_000) -> None:
    from tests.bench.tick_work import history_reads, pg_schema, populate_history

    say(
        f"\n== history: {requests:,} stored requests, {with_files * 26:,} stored files "
        "(PostgreSQL) =="
    )
    with pg_schema() as url:
        began = time.monotonic()
        populate_history(url, requests, 26, with_files)
        say(f"  written in {time.monotonic() - began:.0f} s")
        r = history_reads(url)
    note(
        "admission: finding new queue rows, from the floor",
        f"{r['new_rows_from_floor'] * 1000:.1f} ms (the daily full sweep: "
        f"{r['new_rows_full_sweep'] * 1000:.0f} ms)",
    )
    note(
        "admission: a batch of 500 rows with an external_ref (the duplicate check included)",
        f"{r['admit_batch'] * 1000:.0f} ms",
    )
    note(
        "metrics scrape (ledger snapshot)",
        f"{r['snapshot_later'] * 1000:.1f} ms (a process's first: "
        f"{r['snapshot_first'] * 1000:.0f} ms from the recorded totals; "
        f"{r['snapshot_first_unrecorded'] * 1000:.0f} ms with none, counting the history)",
    )


def bench_fetch(size_mib: int) -> None:
    from tests.bench.fetch_big import run as fetch_run

    say(f"\n== fetch: a {size_mib} MiB output file from the emulator (real HTTP, loopback) ==")
    r = fetch_run(size_mib)
    say("  " + json.dumps(r))
    note(
        "fetch peak RSS of the fetching process",
        f"{r['peak_rss_mib']:.0f} MiB",
        "< 100 MB",
        r["peak_rss_mib"] * 1.048576 < 100,
    )
    note("fetch throughput, service (verified, stored)", f"{r['service_mib_s']:.0f} MiB/s")
    note(
        "fetch CPU of the service per run (all threads; calling thread)",
        f"{min(r['service_cpu_s']):.1f} s; {min(r['service_main_thread_cpu_s']):.1f} s",
    )
    note("fetch throughput, curl", f"{r['curl_mib_s']:.0f} MiB/s")
    # The ">= 70% of curl" cannot be met by anything that counts the events of a
    # gzip file (the manifest's contract): inflating alone is slower than curl's copy. The
    # comparison with the same work done by C tools is the target instead (README, Capacity).
    ratio = r["service_mib_s"] / r["curl_mib_s"]
    note("fetch throughput, service / curl (copy only)", f"{ratio:.0%}", "70% (unreachable)")
    note("fetch throughput, download alone (no verify, no disk)", f"{r['raw_mib_s']:.0f} MiB/s")
    note("fetch throughput, curl | gzip -dc (C tools)", f"{r['curl_gunzip_mib_s']:.0f} MiB/s")
    note("zlib inflate alone, one core (the floor)", f"{r['inflate_alone_mib_s']:.0f} MiB/s")
    ratio2 = r["service_mib_s"] / r["curl_gunzip_mib_s"]
    note("fetch throughput, service / (curl | gzip -dc)", f"{ratio2:.0%}", ">= 70%", ratio2 >= 0.7)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="sim,documented,light,tick,budget,history,fetch")
    parser.add_argument("--scale", type=float, default=20.0, help="backlog runs at 1/SCALE")
    parser.add_argument("--hours", type=float, default=144.0, help="simulated hours (sim)")
    parser.add_argument("--chart", type=Path, default=None, help="the backlog runs, as PNG")
    parser.add_argument("--fetch-mib", type=int, default=1024)
    args = parser.parse_args(argv)
    configure("console", "error")
    only = set(args.only.split(","))
    began = time.monotonic()
    say(f"machine: {machine_speed()}")
    sections: dict[str, Callable[[], None]] = {
        "sim": lambda: bench_sim(args.scale, args.hours),
        "documented": lambda: bench_documented(args.scale, args.hours),
        "light": bench_light,
        "scale": lambda: bench_scale(args.scale, args.hours),
        "tick": bench_tick,
        "budget": bench_budget,
        "history": bench_history,
        "fetch": lambda: bench_fetch(args.fetch_mib),
    }
    for name, run in sections.items():
        if name in only:
            run()
    if args.chart is not None and RESULTS:
        from dsar_scheduler.tools.simulate.report import chart

        chart([r for r in RESULTS if r.workload.backlog], args.chart)
        say(f"chart: {args.chart}")
    say(f"\n== summary ({time.monotonic() - began:.0f} s) ==")
    width = max(len(f.name) for f in FIGURES)
    say(f"  {'figure'.ljust(width)}  {'measured':<44} {'target':<22} ok")
    for f in FIGURES:
        ok = "" if f.ok is None else ("yes" if f.ok else "NO")
        say(f"  {f.name.ljust(width)}  {f.measured:<44} {f.target:<22} {ok}")
    return 0 if all(f.ok is not False for f in FIGURES) else 1


if __name__ == "__main__":
    sys.exit(main())
