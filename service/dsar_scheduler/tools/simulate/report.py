"""The simulator's report: a table for people, one JSON object for tools, a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsar_scheduler.tools.simulate.result import Result


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
    return "\n".join(lines)


def _rows(f: dict[str, Any], warmup: float, hours: float) -> list[tuple[str, str]]:
    """(name, value) of each line of the table, from the run's ``figures()``."""
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
        ("429 responses", str(f["rate_limited"])),
        ("results lost to expiry", str(f["lost_to_expiry"])),
        ("failed jobs resubmitted / dead", f"{f['failed_jobs']} / {f['dead']}"),
        (
            "done -> stored p50 / p95 / max",
            " / ".join(
                _duration(f[k])
                for k in ("done_to_stored_p50_s", "done_to_stored_p95_s", "done_to_stored_max_s")
            ),
        ),
        (
            "queued -> stored p50 / p95 / max",
            " / ".join(
                _duration(f[k])
                for k in ("queue_to_stored_p50_s", "queue_to_stored_p95_s", "queue_to_stored_max_s")
            ),
        ),
        (
            "budget used (steady)",
            f"{f['budget_use']:.1%} of {f['limit_per_hour']:,}/h",
        ),
        (
            "ledger cost = emulator's count",
            f"{'yes' if f['ledger_cost'] == f['emulator_cost'] else 'NO'} "
            f"({f['ledger_cost']:,} / {f['emulator_cost']:,})",
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
    """One run: its figures; several (``--compare``): keyed by policy."""
    if len(results) == 1:
        return results[0].figures()
    return {r.workload.policy: r.figures() for r in results}
