"""Prometheus metrics. Counters and histograms are recorded as things happen; every gauge is
computed from the ledger at scrape time, so it is right straight after a restart.

No label carries a user identifier: labels are call kinds, HTTP codes, states, outcomes and
legal regimes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import basic_auth_handler, default_handler, push_to_gateway
from prometheus_client.registry import Collector

from dsar_scheduler.core.deadlines import ALERT_SHARES, REGIMES
from dsar_scheduler.core.states import State
from dsar_scheduler.deletion_metrics import PRIVACY_APIS, deletion_gauges
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.audit import CheckProgress
from dsar_scheduler.ledger.deadlines import OpenCounts
from dsar_scheduler.ledger.retention import PurgeBacklog
from dsar_scheduler.ledger.rows import Snapshot

_LATENCY_BUCKETS = tuple(
    h * 3600.0 for h in (0.25, 0.5, 1, 2, 4, 8, 12, 24, 36, 48, 72, 96, 120, 168)
)


class Metrics:
    """The service's instruments, in a registry of their own (tests build fresh ones)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._calls(self.registry)
        self._requests(self.registry)
        self._ticks(self.registry)
        self._privacy_and_compliance(self.registry)
        self._retention(self.registry)

    def _calls(self, r: CollectorRegistry) -> None:
        """Calls to the DSAR API and how they failed."""
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

    def _requests(self, r: CollectorRegistry) -> None:
        """What happened to requests and their files, and how long it took."""
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

    def _ticks(self, r: CollectorRegistry) -> None:
        """The ticks themselves, and the clock they run on."""
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

    def _privacy_and_compliance(self, r: CollectorRegistry) -> None:
        """Deletions and the audit chain."""
        self.audit_checks = Counter(
            "dsar_audit_chain_checks",
            "Requests whose audit hash chain the periodic check verified, by result (ok, broken)",
            ["result"],
            registry=r,
        )
        self.deletion_verification_failures = Counter(
            "dsar_deletion_verification_failures",
            "Deletions Amplitude called done that User Search still found (checked again later)",
            registry=r,
        )
        self.deletion_rechecks = Counter(
            "dsar_deletion_rechecks",
            "Re-ingestion checks after a verified deletion by result (clear, reingested, "
            "skipped: a subject named only by Amplitude ID cannot be watched)",
            ["result"],
            registry=r,
        )
        self.privacy_rate_limited = Counter(
            "dsar_privacy_rate_limited",
            "429 responses from the project-key APIs by api (deletion, search)",
            ["api"],
            registry=r,
        )
        for result in ("clear", "reingested", "skipped"):
            self.deletion_rechecks.labels(result)
        for api in PRIVACY_APIS:
            self.privacy_rate_limited.labels(api)

    def _retention(self, r: CollectorRegistry) -> None:
        """Retention (tick/purge.py, tick/records.py): requests purged are the transitions to
        "purged"; these count what left storage and the ledger."""
        self.files_purged = Counter(
            "dsar_files_purged",
            "Result files removed from storage past their retention",
            registry=r,
        )
        self.bytes_purged = Counter(
            "dsar_bytes_purged", "Bytes of result files removed from storage", registry=r
        )
        self.purge_failures = Counter(
            "dsar_purge_failures",
            "Purge attempts that failed (storage refused or unreachable); retried next tick",
            registry=r,
        )
        self.records_removed = Counter(
            "dsar_records_removed",
            "Request records removed past DSAR_RECORD_RETENTION_DAYS (left as tombstones)",
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
            deadlines = self.ledger.deadlines.open_counts(now)
            audit = self.ledger.audit.progress()
            purge = self.ledger.retention.backlog()
            deletion = self.ledger.deletion_stats.read(now)
        except Exception:  # a scrape must answer even while the database is down
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _gauges(snap, now, self.ledger.budget.limit, self.org_budget)
        yield from _deadline_gauges(deadlines)
        yield from _audit_gauges(audit)
        yield from _retention_gauges(purge, now)
        yield from deletion_gauges(deletion, now)


def _retention_gauges(backlog: PurgeBacklog, now: datetime) -> Iterator[Metric]:
    """As the last purge check recorded them (hourly, and after each purge), so every
    replica shows the same; the overdue time keeps growing while nothing is purged."""
    yield _gauge(
        "dsar_purge_backlog",
        "Requests past their retention whose files are not yet purged (last purge check)",
        backlog.requests,
    )
    overdue = 0.0
    if backlog.requests and backlog.oldest_due is not None:
        overdue = max(0.0, (now - backlog.oldest_due).total_seconds())
    yield _gauge(
        "dsar_purge_overdue_seconds",
        "How long the oldest request past its retention has waited for its purge",
        overdue,
    )


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


def _deadline_gauges(counts: Sequence[OpenCounts]) -> Iterator[Metric]:
    """Open requests with a legal deadline, by regime (every regime in the table, so that a
    rule sees 0, not nothing): how many, how many have used each alert share of their time
    (the missed ones too), how many are past the deadline in force."""
    by_regime = {name: OpenCounts(name, 0, {}, 0) for name in REGIMES}
    by_regime.update({c.regime: c for c in counts})
    open_ = GaugeMetricFamily(
        "dsar_requests_deadline_open",
        "Requests not yet answered (stored) that have a legal deadline, by regime",
        labels=["regime"],
    )
    elapsed = GaugeMetricFamily(
        "dsar_requests_deadline_elapsed",
        "Of those, requests that have used at least this share of their time (to the "
        "deadline in force), past the deadline included",
        labels=["regime", "share"],
    )
    missed = GaugeMetricFamily(
        "dsar_requests_deadline_missed",
        "Of those, requests past their deadline (the extended one, if extended)",
        labels=["regime"],
    )
    for regime, c in sorted(by_regime.items()):
        open_.add_metric([regime], c.open)
        for share in ALERT_SHARES:
            elapsed.add_metric([regime, f"{share:g}"], c.past.get(share, 0))
        missed.add_metric([regime], c.missed)
    yield from (open_, elapsed, missed)


def _audit_gauges(progress: CheckProgress) -> Iterator[Metric]:
    """The periodic audit chain check (``tick.audit``), as it last recorded."""
    yield _gauge(
        "dsar_audit_chain_broken_requests",
        "Requests whose audit trail hash chain does not verify (edited, removed or reordered "
        "events), as the periodic check last found",
        len(progress.broken),
    )
    if progress.checked_at is not None:
        yield _gauge(
            "dsar_audit_chain_last_check_timestamp_seconds",
            "When the periodic audit chain check last ran (Unix time)",
            progress.checked_at.timestamp(),
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
