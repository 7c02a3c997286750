"""The ``dsar simulate`` subcommand: arguments in, a table (or ``--json``) and a chart out.

Kept free of heavy imports so that building the CLI's parser stays cheap."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dsar_scheduler.tools.simulate.workload import PROFILE_WORDS

HELP = "replay days of traffic through the real tick against the emulator on a virtual clock"
DESCRIPTION = """\
Run the service's real tick (planner, ledger, Amplitude client, verification) against the
built-in emulator on a virtual clock: days of traffic in minutes. Nothing is sent anywhere and
nothing is stored (files are verified, then dropped); the database is a temporary SQLite
unless --database-url names an empty one. Reports users completed per hour, cost per user,
429s, results lost to expiry, latencies, tick durations and budget use, with the assumptions
they were measured under.

Profiles (--profile, default realistic; each option below changes one assumption of it):
""" + "".join(f"  {name:<11} {words}\n" for name, words in PROFILE_WORDS.items())
POLICIES = {
    "planner": ("planner",),
    "baseline": ("baseline",),
    "saturating": ("saturating",),
    "both": ("baseline", "planner"),
    "all": ("baseline", "saturating", "planner"),
}
#: Options that change one field of the profile's workload (option dest -> field).
FIELDS = {
    "hours": "hours",
    "arrivals": "arrivals_per_hour",
    "backlog": "backlog",
    "months": "months",
    "projects": "projects",
    "empty_month_rate": "empty_month_rate",
    "completion_min_h": "completion_min_h",
    "completion_max_h": "completion_max_h",
    "completion_mode_h": "completion_mode_h",
    "fail_rate": "fail_rate",
    "budget": "budget",
    "latency_ms": "latency_ms",
    "bandwidth_mibps": "bandwidth_mibps",
    "file_median_bytes": "file_median_bytes",
    "file_size_sigma": "file_size_sigma",
    "fraction": "fraction",
    "tick_minutes": "tick_minutes",
    "poll_interval_minutes": "poll_interval_minutes",
    "max_poll_gap_hours": "max_poll_gap_hours",
    "submit_batch_size": "submit_batch_size",
    "concurrency": "concurrency",
    "warmup_hours": "warmup_hours",
    "seed": "seed",
    "scale": "scale",
}


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
    from dsar_scheduler.tools.simulate.report import chart, comparison, figures, table
    from dsar_scheduler.tools.simulate.run import simulate
    from dsar_scheduler.tools.simulate.workload import profiled

    changes = {field: getattr(args, dest) for dest, field in FIELDS.items()}
    changes = {field: value for field, value in changes.items() if value is not None}
    if args.no_wake_early:
        changes["wake_early"] = False
    progress = None if args.quiet or args.json else _progress
    results = []
    for policy in POLICIES[args.policy]:
        workload = profiled(args.profile, policy=policy, **changes)
        results.append(simulate(workload, args.database_url, progress))
        if not args.json:
            sys.stdout.write(table(results[-1]) + "\n\n")
            sys.stdout.flush()
    if len(results) > 1 and not args.json:
        sys.stdout.write(comparison(results) + "\n")
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


def projects_spec(text: str) -> tuple[float, ...]:
    """``N``: every subject has data in exactly N projects; ``w1,w2,...``: weights of 1, 2...
    projects."""
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return tuple(1.0 if k == count - 1 else 0.0 for k in range(count))
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count or weights: {text!r}") from None
    if min(weights) < 0 or sum(weights) <= 0:
        raise argparse.ArgumentTypeError("weights must be non-negative with a positive sum")
    return weights


def _traffic_arguments(parser: argparse.ArgumentParser) -> None:
    traffic = parser.add_argument_group("traffic (defaults: the profile's)")
    traffic.add_argument("--hours", type=float, help="simulated hours (72)")
    traffic.add_argument("--arrivals", type=float, help="subjects arriving per hour (0)")
    traffic.add_argument("--backlog", type=int, help="subjects queued at the start (0)")
    traffic.add_argument("--months", type=int, help="months per request (13)")
    traffic.add_argument(
        "--projects",
        type=projects_spec,
        help="projects per subject: N, or weights of 1,2,3... (0.2,0.3,0.5)",
    )
    traffic.add_argument(
        "--empty-month-rate", type=float, help="chance of no file for a project-month (0.13)"
    )


def _amplitude_arguments(parser: argparse.ArgumentParser) -> None:
    amplitude = parser.add_argument_group("Amplitude and the network (defaults: the profile's)")
    amplitude.add_argument("--completion-min-h", type=float, help="(1)")
    amplitude.add_argument("--completion-max-h", type=float, help="(120)")
    amplitude.add_argument(
        "--completion-mode-h",
        type=float,
        help="triangular completion times with this mode (default: uniform min..max)",
    )
    amplitude.add_argument("--fail-rate", type=float, help="share of jobs that fail (0.05)")
    amplitude.add_argument("--budget", type=int, help="org budget per hour (14400)")
    amplitude.add_argument(
        "--latency-ms",
        type=float,
        help="real time per API call or download request, not divided by --scale (200)",
    )
    amplitude.add_argument(
        "--bandwidth-mibps", type=float, help="per download stream; 0: bodies take no time (2)"
    )
    amplitude.add_argument(
        "--file-median-bytes", type=int, help="median nominal file size (600000)"
    )
    amplitude.add_argument("--file-size-sigma", type=float, help="log-normal sigma (1.5)")


def _service_arguments(parser: argparse.ArgumentParser) -> None:
    service = parser.add_argument_group("the service")
    service.add_argument(
        "--policy",
        choices=tuple(POLICIES),
        default="planner",
        help="saturating: the seed's polling with no batch limit; both: baseline and "
        "planner; all: baseline, saturating and planner, on the same workload",
    )
    service.add_argument("--fraction", type=float, help="budget share used (1)")
    service.add_argument("--tick-minutes", type=float, help="(30)")
    service.add_argument("--poll-interval-minutes", type=float, help="(30)")
    service.add_argument("--max-poll-gap-hours", type=float, help="(8)")
    service.add_argument("--submit-batch-size", type=int)
    service.add_argument("--concurrency", type=int, help="network calls in flight a tick (8)")
    service.add_argument(
        "--no-wake-early",
        action="store_true",
        help="tick only on the interval (the daemon wakes sooner when work falls due)",
    )


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("the run")
    run.add_argument("--profile", choices=tuple(PROFILE_WORDS), default="realistic")
    run.add_argument("--warmup-hours", type=float, help="default: half the run")
    run.add_argument("--seed", type=int)
    run.add_argument(
        "--scale",
        type=float,
        help="run at 1/SCALE of the budget and traffic and report users/hour x SCALE; each "
        "call and download takes SCALE x its time, so ticks last as at full scale (1)",
    )
    run.add_argument("--database-url", default=None, help="an empty database (default: temp)")
    run.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    run.add_argument("--chart", type=Path, default=None, help="write a PNG chart here")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
