"""What a simulation runs: the traffic, Amplitude's behaviour (the emulator's settings) and
the service's own settings, in one frozen record that reports and charts describe."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

#: Where the virtual clock starts, and an hour in its seconds.
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
