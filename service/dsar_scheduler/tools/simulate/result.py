"""What a simulation found: one sample of the service per tick, and the figures of the run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dsar_scheduler.tools.simulate.workload import Workload


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
    #: Calls the lanes' one-after-another order let through that real time order would
    #: have met with a 429 (counted with the 429s in the check).
    late_overruns: int
    lost_to_expiry: int
    failed_jobs: int
    dead: int
    #: Amplitude's finish (the emulator's clock) to stored, and queued to stored, of each
    #: request stored in the steady window.
    done_to_stored_s: list[float]
    queue_to_stored_s: list[float]
    #: Share of the service's limit used in the steady window.
    budget_use: float
    limit: int
    ledger_cost: int
    emulator_cost: int
    emulator_errors: list[str]
    ticks: int
    #: Virtual seconds each tick took, its network time included.
    tick_seconds: list[float]
    downloads: int
    nominal_bytes: int
    #: Virtual seconds of network work on the lanes, all together.
    lane_seconds: float
    api_calls: int
    wall_seconds: float
    samples: list[Sample] = field(default_factory=list)
    #: Requests with a legal deadline at the end of the run, and those that missed it
    #: (answered late, or still open past it).
    deadlines: int = 0
    deadlines_missed: int = 0

    def figures(self) -> dict[str, Any]:
        """The figures as one JSON-able object (``dsar simulate --json``)."""
        d2s, q2s = self.done_to_stored_s, self.queue_to_stored_s
        interval = self.workload.tick_minutes * 60
        return {
            "users_per_hour": round(self.users_per_hour, 2),
            "users_per_hour_overall": round(self.users_per_hour_overall, 2),
            "users_stored": self.users_stored,
            "users_submitted": self.users_submitted,
            "cost_per_user": {k: round(v, 2) for k, v in self.cost_per_user.items()},
            "rate_limited": self.rate_limited,
            "late_overruns": self.late_overruns,
            "no_429": self.rate_limited + self.late_overruns == 0,
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
            "tick_seconds_max": round(max(self.tick_seconds), 1) if self.tick_seconds else None,
            "tick_seconds_p95": _q(self.tick_seconds, 0.95),
            "tick_seconds_p50": _q(self.tick_seconds, 0.5),
            "ticks_overrunning": sum(1 for t in self.tick_seconds if t > interval),
            "tick_interval_s": interval,
            "downloads": self.downloads,
            "nominal_gb_downloaded": round(self.nominal_bytes / 1e9, 2),
            "lane_busy_share": round(
                self.lane_seconds / (self.workload.concurrency * self.workload.hours * 3600), 4
            ),
            "deadline": (
                f"{self.deadlines_missed} of {self.deadlines} requests missed their deadline"
                + ("" if self.workload.scale == 1 else f" (x{self.workload.scale:g} users)")
            ),
            "deadlines_missed": self.deadlines_missed,
            "api_calls": self.api_calls,
            "wall_seconds": round(self.wall_seconds, 1),
            "budget_series": [[round(s.hours, 3), s.cost_in_window] for s in self.samples],
            "assumptions": self.workload.assumptions(),
        }


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 1)
