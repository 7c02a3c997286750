"""What a simulation runs: the traffic, Amplitude's behaviour (the emulator's settings), the
network, and the service's own settings, in one frozen record that reports print in full.

The defaults are the realistic profile: what is documented or measured where something is,
a stated and conservative assumption where nothing is (``distributions`` says which).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from dsar_scheduler.tools.simulate.bounds import scaled_bounds

#: Where the virtual clock starts, and an hour in its seconds.
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
HOUR = 3600.0
MIB = 1024 * 1024

Policy = Literal["planner", "baseline", "saturating"]
#: Bytes per event in a gzipped export file, assumed (the emulator's events compress to about
#: 115; real ones carry more properties), and Amplitude's documented ceiling of events per
#: user per month (larger users are not supported), which bounds one file.
BYTES_PER_EVENT = 300
MAX_EVENTS_PER_MONTH = 100_000


@dataclass(frozen=True)
class Workload:
    """The simulated traffic, Amplitude, network and service (defaults: ``realistic``)."""

    #: The named set of assumptions this started from (``PROFILES``), for the report.
    profile: str = "realistic"
    hours: float = 72.0
    #: Subjects arriving per hour (Poisson), and subjects queued at the start.
    arrivals_per_hour: float = 0.0
    backlog: int = 0
    #: Calendar months of each request's date range.
    months: int = 13
    #: Weights of a subject having data in 1, 2, 3... projects, and the chance that it has no
    #: events in one project in one month: files per request vary around 26 (the seed's
    #: "13 months ... 2 projects, expect ~26 files").
    projects: tuple[float, ...] = (0.2, 0.3, 0.5)
    empty_month_rate: float = 0.13
    #: Completion delays: uniform on [min, max] hours, or triangular with ``completion_mode_h``.
    completion_min_h: float = 1.0
    completion_max_h: float = 120.0
    completion_mode_h: float | None = None
    #: Share of jobs that end ``failed`` at their completion time.
    fail_rate: float = 0.05
    budget: int = 14_400
    fraction: float = 1.0
    policy: Policy = "planner"
    tick_minutes: float = 30.0
    poll_interval_minutes: float = 30.0
    max_poll_gap_hours: float = 8.0
    submit_batch_size: int | None = None
    #: Real time of each API call and each download request (not divided by ``scale``).
    latency_ms: float = 200.0
    #: Per download stream (0: a body takes no time).
    bandwidth_mibps: float = 2.0
    #: Nominal file sizes: log-normal with this median and sigma, capped (see ``distributions``).
    file_median_bytes: int = 600_000
    file_size_sigma: float = 1.5
    file_max_bytes: int = MAX_EVENTS_PER_MONTH * BYTES_PER_EVENT
    #: Network calls of a tick in flight at once (the service's DSAR_CONCURRENCY).
    concurrency: int = 8
    #: Tick again as soon as the tick says there is work (as the daemon does), or only on
    #: the regular interval.
    wake_early: bool = True
    #: Steady state is measured from this hour on (default: half the run).
    warmup_hours: float | None = None
    seed: int = 1
    #: Run at 1/scale of the budget and traffic, report users per hour x scale; each call and
    #: download takes scale x its time, so a tick (calls x time / concurrency) lasts as long
    #: as at full scale.
    scale: float = 1.0

    @property
    def warmup(self) -> float:
        return self.hours / 2 if self.warmup_hours is None else self.warmup_hours

    @property
    def call_seconds(self) -> float:
        """Virtual seconds one call takes in this run (``latency_ms`` x ``scale``)."""
        return self.latency_ms / 1000 * self.scale

    def download_seconds(self, nominal_bytes: int) -> float:
        """Virtual seconds a body of ``nominal_bytes`` takes on one stream, x ``scale``."""
        if self.bandwidth_mibps <= 0:
            return 0.0
        return nominal_bytes / (self.bandwidth_mibps * MIB) * self.scale

    def mean_files(self) -> float:
        """Files per request on average (the rare request kept at one file aside)."""
        total = sum(self.projects)
        projects = sum((k + 1) * w for k, w in enumerate(self.projects)) / total
        return self.months * projects * (1 - self.empty_month_rate)

    def describe(self, policy: str | None = None) -> str:
        """One line for reports and charts (``policy``: to name several runs at once)."""
        traffic = []
        if self.backlog:
            traffic.append(f"backlog {self.backlog:,} at start")
        if self.arrivals_per_hour:
            traffic.append(f"{self.arrivals_per_hour:g} arriving per hour")
        scale = f"; run at 1/{self.scale:g} scale" if self.scale != 1 else ""
        return (
            f"{self.profile} profile, policy {policy or self.policy}, {self.hours:g} h, "
            f"{', '.join(traffic) or 'no traffic'}; {self.mean_files():.1f} files/user; "
            f"completion {_completion(self)}; fail rate {self.fail_rate:.0%}; budget "
            f"{self.budget:,}/h x {self.fraction:g}; tick {self.tick_minutes:g} min; "
            f"{self.latency_ms:g} ms/call, {_bandwidth(self)}, concurrency "
            f"{self.concurrency}{scale}"
        )

    def assumptions(self) -> dict[str, Any]:
        """Every field, and the distributions in words: what the figures were measured under."""
        return {"workload": asdict(self), "distributions": distributions(self)}


def distributions(w: Workload) -> dict[str, str]:
    """The run's assumptions in words, each with where it comes from."""
    return {
        "files per user": _files_words(w),
        "file size": _size_words(w),
        "call and download time": (
            f"each API call and each download request takes {w.latency_ms:g} ms (real "
            f"time per call; x {w.scale:g} in virtual time at 1/{w.scale:g} scale), a "
            f"download also its nominal size at {_bandwidth(w)}; assumed (Amplitude's API "
            "and its S3 are across the internet)"
        ),
        "concurrency": f"{w.concurrency} calls or downloads of a tick in flight at once",
        "completion": (
            f"{_completion(w)}, drawn per job (documented: within 3 days; the seed's older "
            "text: within 5 days)"
        ),
        "failures": (
            f"{w.fail_rate:.0%} of jobs end failed at their completion time, independent "
            "per job (assumed); the service resubmits them"
        ),
        "arrivals": (
            f"{w.backlog:,} subjects queued at the start, then Poisson at "
            f"{w.arrivals_per_hour:g} per hour"
            + ("" if w.scale == 1 else f" (1/{w.scale:g} of each in this run)")
        ),
        "budget": f"{w.budget:,} cost per hour (documented); the service may use {w.fraction:.0%}",
        "scale": _scale_words(w),
        "deadline": (
            "each subject received when it is queued, under DSAR_DEFAULT_REGIME (gdpr: one "
            "calendar month); misses counted at the end of the run"
        ),
    }


def _scale_words(w: Workload) -> str:
    if w.scale == 1:
        return "full scale"
    bounds = ", ".join(
        f"{name} {full:,g} -> {round(scaled, 2):,g}"
        for name, (full, scaled) in scaled_bounds(w.scale).items()
    )
    return (
        f"1/{w.scale:g} of the budget and traffic, users per hour x {w.scale:g}; the service's "
        f"bounds counted in requests, calls or completions divided alike ({bounds}; the "
        "planner's most submissions per tick too)"
    )


def _files_words(w: Workload) -> str:
    total = sum(w.projects)
    shares = "/".join(f"{p / total:.0%}" for p in w.projects)
    counts = "/".join(str(k + 1) for k in range(len(w.projects)))
    return (
        f"one per month per project with data: {w.months} months; {counts} projects with "
        f"probability {shares}; each (project, month) empty with probability "
        f"{w.empty_month_rate:g}, at least one file kept: mean {w.mean_files():.1f}, range "
        f"1-{w.months * len(w.projects)} (the seed: 13 months x 2 projects = ~26; the "
        "spread assumed)"
    )


def _size_words(w: Workload) -> str:
    if w.bandwidth_mibps <= 0:
        return "no time for a body (bandwidth 0)"
    median, sigma = w.file_median_bytes, w.file_size_sigma
    mean = min(median * math.exp(sigma**2 / 2), w.file_max_bytes)
    p95 = min(median * math.exp(1.645 * sigma), w.file_max_bytes)
    return (
        f"nominal, log-normal per file: median {median / 1e6:.2f} MB "
        f"({median / BYTES_PER_EVENT:,.0f} events x {BYTES_PER_EVENT} B), sigma {sigma:g} "
        f"(mean {mean / 1e6:.1f} MB, p95 {p95 / 1e6:.1f} MB), capped at "
        f"{w.file_max_bytes / 1e6:.0f} MB ({MAX_EVENTS_PER_MONTH:,} events, Amplitude's "
        "documented ceiling per user per month); assumed, conservative: nothing published "
        "gives DSAR file sizes. The emulated file holds a few events; its download takes "
        "the nominal size's time"
    )


def _completion(w: Workload) -> str:
    shape = (
        "uniform" if w.completion_mode_h is None else f"triangular (mode {w.completion_mode_h:g} h)"
    )
    return f"{shape} {w.completion_min_h:g}-{w.completion_max_h:g} h"


def _bandwidth(w: Workload) -> str:
    return f"{w.bandwidth_mibps:g} MiB/s per stream" if w.bandwidth_mibps > 0 else "no body time"


#: Named sets of assumptions; a workload is a profile with some fields changed.
PROFILES: dict[str, dict[str, Any]] = {
    "realistic": {},
    "documented": {"completion_max_h": 72.0},
    "ideal": {
        "latency_ms": 0.0,
        "bandwidth_mibps": 0.0,
        "fail_rate": 0.0,
        "completion_max_h": 72.0,
        "projects": (0.0, 1.0),
        "empty_month_rate": 0.0,
        "concurrency": 1,
    },
}
PROFILE_WORDS = {
    "realistic": "200 ms a call, 2 MiB/s a stream, jobs done in 1-120 h, 5% failed, "
    "files per user varying around 26, concurrency 8",
    "documented": "as realistic, jobs done in 1-72 h (the documented 3 days)",
    "ideal": "the old easy assumptions: calls take no time, no failures, 1-72 h, "
    "exactly 26 files per user",
}


def profiled(name: str, **changes: Any) -> Workload:
    """The workload of profile ``name`` with ``changes`` applied."""
    return replace(Workload(profile=name, **PROFILES[name]), **changes)
