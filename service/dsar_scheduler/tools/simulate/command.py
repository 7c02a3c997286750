"""The ``dsar simulate`` subcommand: arguments in, a table (or ``--json``) and a chart out.

Kept free of heavy imports so that building the CLI's parser stays cheap."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

HELP = "replay days of traffic through the real tick against the emulator on a virtual clock"
DESCRIPTION = """\
Run the service's real tick (planner, ledger, Amplitude client, verification) against the
built-in emulator on a virtual clock: days of traffic in minutes. Nothing is sent anywhere and
nothing is stored (files are verified, then dropped); the database is a temporary SQLite
unless --database-url names an empty one. Reports users completed per hour, cost per user,
429s, results lost to expiry, latencies and budget use.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _traffic_arguments(p)
    _amplitude_arguments(p)
    _service_arguments(p)
    _run_arguments(p)
    p.set_defaults(func=main, needs_settings=False)


def main(_settings: Any, args: argparse.Namespace) -> int:
    from dsar_scheduler.tools.simulate.report import chart, figures, table
    from dsar_scheduler.tools.simulate.run import Workload, simulate

    policies: tuple[Literal["planner", "baseline"], ...] = (
        ("baseline", "planner") if args.policy == "both" else (args.policy,)
    )
    known = {f.name for f in fields(Workload)}
    values = {
        "hours": args.hours,
        "arrivals_per_hour": args.arrivals,
        "backlog": args.backlog,
        "months": args.months,
        "projects": args.projects,
        "completion_min_h": args.completion_min_h,
        "completion_max_h": args.completion_max_h,
        "completion_mode_h": args.completion_mode_h,
        "fail_rate": args.fail_rate,
        "budget": args.budget,
        "fraction": args.fraction,
        "tick_minutes": args.tick_minutes,
        "poll_interval_minutes": args.poll_interval_minutes,
        "max_poll_gap_hours": args.max_poll_gap_hours,
        "submit_batch_size": args.submit_batch_size,
        "latency_ms": args.latency_ms,
        "warmup_hours": args.warmup_hours,
        "seed": args.seed,
        "scale": args.scale,
        "wake_early": not args.no_wake_early,
    }
    assert set(values) <= known
    progress = None if args.quiet or args.json else _progress
    results = []
    for policy in policies:
        workload = Workload(policy=policy, **values)
        results.append(simulate(workload, args.database_url, progress))
        if not args.json:
            sys.stdout.write(table(results[-1]) + "\n\n")
            sys.stdout.flush()
    if args.chart is not None:
        chart(results, args.chart)
        if not args.json:
            sys.stdout.write(f"chart: {args.chart}\n")
    if args.json:
        sys.stdout.write(json.dumps(figures(results)) + "\n")
    return 0


def _progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _traffic_arguments(parser: argparse.ArgumentParser) -> None:
    traffic = parser.add_argument_group("traffic")
    traffic.add_argument("--hours", type=float, default=72.0, help="simulated hours (72)")
    traffic.add_argument("--arrivals", type=float, default=0.0, help="subjects per hour (0)")
    traffic.add_argument("--backlog", type=int, default=0, help="subjects queued at the start")
    traffic.add_argument("--months", type=int, default=13, help="months per request (13)")
    traffic.add_argument("--projects", type=int, default=2, help="projects per subject (2)")


def _amplitude_arguments(parser: argparse.ArgumentParser) -> None:
    amplitude = parser.add_argument_group("Amplitude (the emulator)")
    amplitude.add_argument("--completion-min-h", type=float, default=1.0)
    amplitude.add_argument("--completion-max-h", type=float, default=72.0)
    amplitude.add_argument(
        "--completion-mode-h",
        type=float,
        default=None,
        help="triangular completion times with this mode (default: uniform min..max)",
    )
    amplitude.add_argument("--fail-rate", type=float, default=0.0)
    amplitude.add_argument("--budget", type=int, default=14_400, help="org budget per hour")
    amplitude.add_argument(
        "--latency-ms", type=float, default=0.0, help="virtual time per HTTP request (0)"
    )


def _service_arguments(parser: argparse.ArgumentParser) -> None:
    service = parser.add_argument_group("the service")
    service.add_argument(
        "--policy",
        choices=("planner", "baseline", "both"),
        default="planner",
        help="both: run the baseline and the planner on the same workload",
    )
    service.add_argument("--fraction", type=float, default=1.0, help="budget share used (1)")
    service.add_argument("--tick-minutes", type=float, default=30.0)
    service.add_argument("--poll-interval-minutes", type=float, default=30.0)
    service.add_argument("--max-poll-gap-hours", type=float, default=8.0)
    service.add_argument("--submit-batch-size", type=int, default=None)
    service.add_argument(
        "--no-wake-early",
        action="store_true",
        help="tick only on the interval (the daemon wakes sooner when work falls due)",
    )


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("the run")
    run.add_argument("--warmup-hours", type=float, default=None, help="default: half the run")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="run at 1/SCALE of the budget and traffic and report users/hour x SCALE",
    )
    run.add_argument("--database-url", default=None, help="an empty database (default: temp)")
    run.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    run.add_argument("--chart", type=Path, default=None, help="write a PNG chart here")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
