"""Prometheus metrics. Counters and histograms are recorded as things happen; every gauge is
computed from the ledger at scrape time, so it is right straight after a restart.

No label carries a user identifier: labels are call kinds, HTTP codes, states and outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import basic_auth_handler, default_handler, push_to_gateway
from prometheus_client.registry import Collector

from dsar_scheduler.core.states import State
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.rows import Snapshot

_LATENCY_BUCKETS = tuple(
    h * 3600.0 for h in (0.25, 0.5, 1, 2, 4, 8, 12, 24, 36, 48, 72, 96, 120, 168)
)


class Metrics:
    """The service's instruments, in a registry of their own (tests build fresh ones)."""

    # A declarative table of the metric declarations: long on purpose, one entry each.
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.api_calls = Counter(
            "dsar_api_calls",
            "Calls to the Amplitude DSAR API by kind "
            "(submit, status, fetch, download) and HTTP status code",
            ["kind", "code"],
            registry=r,
        )
        self.rate_limited = Counter("dsar_rate_limited", "429 responses received", registry=r)
        self.api_errors = Counter(
            "dsar_api_errors",
            "Failed calls by kind (submit, status, fetch, download) and cause (timeout, "
            "connection, server_error, malformed, oversized, bad_status, rate_limited, ...)",
            ["kind", "cause"],
            registry=r,
        )
        self.step_failures = Counter(
            "dsar_request_step_failures",
            "Unexpected errors while working on one request (the others went on)",
            ["step"],
            registry=r,
        )
        self.calls_unknown = Counter(
            "dsar_api_calls_unknown_outcome",
            "Reservations left without an outcome by a stopped process (counted as spent)",
            ["kind"],
            registry=r,
        )
        self.budget_deferrals = Counter(
            "dsar_budget_deferrals",
            "Ticks that stopped calling the API because the budget window was full",
            registry=r,
        )
        self.transitions = Counter(
            "dsar_request_transitions", "Request state changes", ["to_state"], registry=r
        )
        self.files_stored = Counter("dsar_files_stored", "Files stored and verified", registry=r)
        self.bytes_stored = Counter("dsar_bytes_stored", "Bytes stored and verified", registry=r)
        self.file_failures = Counter(
            "dsar_file_fetch_failures", "Failed file fetches by reason", ["reason"], registry=r
        )
        self.submit_to_done = Histogram(
            "dsar_submit_to_done_seconds",
            "Time from submission to Amplitude reporting done",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.done_to_stored = Histogram(
            "dsar_done_to_stored_seconds",
            "Time from done to every file stored",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_to_stored = Histogram(
            "dsar_queue_to_stored_seconds",
            "Time from admission to every file stored",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tick_duration = Histogram(
            "dsar_tick_duration_seconds",
            "Wall time of one tick",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.ticks = Counter(
            "dsar_ticks", "Ticks by outcome (ok, error, skipped)", ["outcome"], registry=r
        )
        # Alerts compare the time since the last good tick with this, not with a constant.
        self.tick_interval = Gauge(
            "dsar_tick_interval_seconds",
            "Configured time between ticks (DSAR_TICK_INTERVAL_SECONDS)",
            registry=r,
        )
        # Anything but 1 is a run against a local emulator, never production.
        self.clock_speed = Gauge(
            "dsar_clock_speed",
            "Clock seconds per wall second (DSAR_CLOCK_SPEED; 1 in production)",
            registry=r,
        )

    def watch_ledger(
        self, ledger: Ledger, now: Callable[[], datetime], sla: timedelta, org_budget: int
    ) -> None:
        self.registry.register(LedgerCollector(ledger, now, sla, org_budget))


class LedgerCollector(Collector):
    """Gauges read from the ledger at scrape time."""

    def __init__(
        self, ledger: Ledger, now: Callable[[], datetime], sla: timedelta, org_budget: int
    ) -> None:
        self.ledger, self.now, self.sla, self.org_budget = ledger, now, sla, org_budget

    def describe(self) -> list[Metric]:
        return []  # computed per scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        up = GaugeMetricFamily("dsar_ledger_up", "1 if the ledger could be read for this scrape")
        try:
            snap = self.ledger.views.snapshot(now, self.sla)
        except Exception:  # a scrape must answer even while the database is down
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _gauges(snap, now, self.ledger.budget.limit, self.org_budget)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _gauges(snap: Snapshot, now: datetime, limit: int, org_budget: int) -> Iterator[Metric]:
    yield from _queue_gauges(snap)
    yield from _budget_gauges(snap, now, limit, org_budget)
    yield from _progress_gauges(snap, now)


def _queue_gauges(snap: Snapshot) -> Iterator[Metric]:
    waiting = sum(snap.by_state.get(s, 0) for s in (State.QUEUED, State.FAILED, State.EXPIRED))
    yield _gauge(
        "dsar_queue_depth",
        "Queue rows not yet submitted (unadmitted rows plus requests waiting for budget)",
        snap.queue_pending + waiting,
    )
    yield _gauge("dsar_queue_unadmitted", "Queue rows not yet admitted", snap.queue_pending)
    states = GaugeMetricFamily("dsar_requests", "Requests by state", labels=["state"])
    for state in State:
        states.add_metric([state.value], snap.by_state.get(state.value, 0))
    yield states


def _budget_gauges(snap: Snapshot, now: datetime, limit: int, org_budget: int) -> Iterator[Metric]:
    yield _gauge(
        "dsar_budget_cost_in_window", "API cost spent in the last hour", snap.cost_in_window
    )
    yield _gauge(
        "dsar_budget_limit",
        "Cost this service may spend per hour (DSAR_COST_BUDGET_PER_HOUR x DSAR_BUDGET_FRACTION)",
        limit,
    )
    yield _gauge("dsar_budget_org_per_hour", "The org's shared budget per hour", org_budget)
    backoff = 0.0
    if snap.rate_limited_until is not None:
        backoff = max(0.0, (snap.rate_limited_until - now).total_seconds())
    yield _gauge("dsar_rate_limit_backoff_seconds", "Seconds left of a 429 backoff", backoff)


def _progress_gauges(snap: Snapshot, now: datetime) -> Iterator[Metric]:
    if snap.earliest_unfetched_expiry is not None:
        yield _gauge(
            "dsar_unfetched_expiry_seconds",
            "Seconds until the earliest expiry of a finished request with files still unfetched",
            (snap.earliest_unfetched_expiry - now).total_seconds(),
        )
    age = 0.0
    if snap.oldest_outstanding_since is not None:
        age = max(0.0, (now - snap.oldest_outstanding_since).total_seconds())
    yield _gauge(
        "dsar_oldest_outstanding_age_seconds",
        "Age of the oldest request submitted but not yet stored",
        age,
    )
    yield _gauge(
        "dsar_requests_past_sla",
        "Requests outstanding longer than the completion SLA",
        snap.past_sla,
    )
    files = GaugeMetricFamily("dsar_files", "Files by state", labels=["state"])
    files.add_metric(["pending"], snap.pending_files)
    files.add_metric(["stored"], snap.stored_files)
    yield files
    yield _gauge("dsar_stored_bytes", "Bytes of stored files (ledger)", snap.stored_bytes)
    if snap.last_ok_tick is not None:
        yield _gauge(
            "dsar_last_successful_tick_timestamp_seconds",
            "When the last tick that finished without error ended (Unix time)",
            snap.last_ok_tick.timestamp(),
        )


def push(registry: CollectorRegistry, gateway: str, job: str, timeout: float = 10.0) -> None:
    """Replace this job's group on a Prometheus Pushgateway with ``registry`` (CronJob mode:
    a ``dsar tick`` process ends before any scrape). ``user:password@`` in the URL is sent as
    HTTP basic auth. Raises ``OSError`` when it cannot."""
    parts = urlsplit(gateway)
    handler: Any = default_handler
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        gateway = without_userinfo(gateway)

        def handler(url: str, method: str, timeout: float | None, headers: Any, data: bytes) -> Any:
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

    push_to_gateway(gateway, job=job, registry=registry, timeout=timeout, handler=handler)


def without_userinfo(url: str) -> str:
    """``url`` safe to print: any ``user:password@`` removed."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
