"""The simulator's report: a table for people, one JSON object for tools, a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsar_scheduler.tools.simulate.result import Result
from dsar_scheduler.tools.simulate.workload import distributions


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def table(result: Result) -> str:
    f = result.figures()
    w = result.workload
    rows = _rows(f, w.warmup, w.hours)
    width = max(len(name) for name, _ in rows)
    lines = [f"dsar simulate: {w.describe()}", ""]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
    if f["emulator_errors"]:
        lines.append(f"  emulator errors: {f['emulator_errors'][:3]}")
    lines += ["", "  assumptions:"]
    lines += [f"    {name}: {words}" for name, words in distributions(w).items()]
    return "\n".join(lines)


def _rows(f: dict[str, Any], warmup: float, hours: float) -> list[tuple[str, str]]:
    """(name, value) of each line of the table, from the run's ``figures()``."""
    return _outcome_rows(f, warmup, hours) + _time_rows(f)


def _outcome_rows(f: dict[str, Any], warmup: float, hours: float) -> list[tuple[str, str]]:
    cost = f["cost_per_user"]
    return [
        (
            f"users per hour (steady, h {warmup:g}-{hours:g})",
            f"{f['users_per_hour']:.1f}",
        ),
        ("users per hour (whole run)", f"{f['users_per_hour_overall']:.1f}"),
        ("users stored / submitted", f"{f['users_stored']:,} / {f['users_submitted']:,}"),
        (
            "cost per user (steady)",
            f"{cost['total']:.1f} = submit {cost['submit']:.1f} + poll {cost['poll']:.1f}"
            f" + fetch {cost['fetch']:.1f}",
        ),
        (
            "429 responses (+ hidden by lane order)",
            f"{f['rate_limited']} + {f['late_overruns']}: {'ok' if f['no_429'] else 'NOT 0'}",
        ),
        ("results lost to expiry", str(f["lost_to_expiry"])),
        ("failed jobs resubmitted / dead", f"{f['failed_jobs']} / {f['dead']}"),
        ("budget used (steady)", f"{f['budget_use']:.1%} of {f['limit_per_hour']:,}/h"),
        (
            "ledger cost = emulator's count",
            f"{'yes' if f['ledger_cost'] == f['emulator_cost'] else 'NO'} "
            f"({f['ledger_cost']:,} / {f['emulator_cost']:,})",
        ),
        ("deadline", f["deadline"]),
    ]


def _time_rows(f: dict[str, Any]) -> list[tuple[str, str]]:
    def three(prefix: str, suffix: str = "_s") -> str:
        return " / ".join(_duration(f[f"{prefix}_{q}{suffix}"]) for q in ("p50", "p95", "max"))

    return [
        ("done -> stored p50 / p95 / max (steady)", three("done_to_stored")),
        ("queued -> stored p50 / p95 / max (steady)", three("queue_to_stored")),
        (
            "tick duration p50 / p95 / max",
            three("tick_seconds", "") + f"; {f['ticks_overrunning']} of {f['ticks']:,} over the "
            f"{_duration(f['tick_interval_s'])} interval",
        ),
        (
            "downloads (nominal size); lanes busy",
            f"{f['downloads']:,} ({f['nominal_gb_downloaded']:,.1f} GB); "
            f"{f['lane_busy_share']:.1%} of the run",
        ),
        (
            "ticks / HTTP requests / wall time",
            f"{f['ticks']:,} / {f['api_calls']:,} / {f['wall_seconds']:.0f} s",
        ),
    ]


def chart(results: list[Result], path: Path) -> None:
    """Budget use, users stored and work waiting over time, one line per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - the optional extra is missing
        raise SystemExit(
            "dsar simulate --chart needs matplotlib: install the 'simulate' extra "
            "(pip install 'dsar-scheduler[simulate]')"
        ) from exc
    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    budget_ax, stored_ax, queue_ax = axes
    for result in results:
        label = result.workload.policy
        hours = [s.hours for s in result.samples]
        budget_ax.plot(hours, [s.cost_in_window for s in result.samples], label=label)
        stored_ax.plot(hours, _per_hour(result), label=label)
        queue_ax.plot(hours, [s.outstanding for s in result.samples], label=f"{label}: outstanding")
        queue_ax.plot(
            hours, [s.waiting for s in result.samples], linestyle="--", label=f"{label}: waiting"
        )
    limit = results[0].limit
    budget_ax.axhline(limit, color="grey", linestyle=":", label=f"limit {limit:,}/h")
    budget_ax.set_ylabel("cost in the rolling hour")
    budget_ax.legend(loc="lower right")
    stored_ax.set_ylabel("users stored per hour")
    stored_ax.legend(loc="lower right")
    queue_ax.set_ylabel("requests")
    queue_ax.set_xlabel("simulated hours")
    queue_ax.legend(loc="upper right")
    policies = " and ".join(dict.fromkeys(r.workload.policy for r in results))
    budget_ax.set_title(results[0].workload.describe(policies), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _per_hour(result: Result) -> list[float]:
    """Users stored per hour over the previous hour, at each sample."""
    out: list[float] = []
    samples = result.samples
    j = 0
    for s in samples:
        while samples[j].hours < s.hours - 1.0:
            j += 1
        span = max(s.hours - samples[j].hours, 1e-9)
        rate = (s.stored - samples[j].stored) / span if s.hours - samples[j].hours >= 0.5 else 0.0
        out.append(rate * result.workload.scale)
    return out


def figures(results: list[Result]) -> dict[str, Any]:
    """One run: its figures; several (``--policy both|all``): keyed by policy, with the
    planner's users per hour over each other policy's."""
    if len(results) == 1:
        return results[0].figures()
    out: dict[str, Any] = {r.workload.policy: r.figures() for r in results}
    ratios = planner_ratios(results)
    if ratios:
        out["planner_vs"] = ratios
    return out


def planner_ratios(results: list[Result]) -> dict[str, float | None]:
    """The planner's users per hour over each other policy's, on the same workload."""
    by_policy = {r.workload.policy: r.users_per_hour for r in results}
    planner = by_policy.get("planner")
    if planner is None:
        return {}
    return {
        policy: round(planner / rate, 2) if rate > 0 else None
        for policy, rate in by_policy.items()
        if policy != "planner"
    }


def comparison(results: list[Result]) -> str:
    """One line: the planner against the other policies of the same run."""
    ratios = planner_ratios(results)
    parts = [
        f"{ratio:.2f}x the {policy}" if ratio is not None else f"n/a against the {policy}"
        for policy, ratio in ratios.items()
    ]
    return f"planner: {', '.join(parts)} (users per hour, same workload)" if parts else ""
