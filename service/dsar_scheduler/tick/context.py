"""What every step of a tick works with: the settings, the ledger, the API client, storage,
the clock, metrics, the lanes calls are sent on, the report, and the helpers they all need
(keeping the lease, one request's trouble kept from the others, storage failing)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dsar_scheduler.adapters.amplitude import AmplitudeClient, PrivacyApi
from dsar_scheduler.adapters.clock import Clock
from dsar_scheduler.adapters.liveness import holder_is_gone
from dsar_scheduler.adapters.storage import Storage, StorageError
from dsar_scheduler.config import Settings
from dsar_scheduler.core import outcomes
from dsar_scheduler.core.backoff import backoff_delay
from dsar_scheduler.core.outcomes import Limits
from dsar_scheduler.core.policy import Policy
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.rows import (
    CallTicket,
    CompletionSamples,
    FileRow,
    PollCandidate,
    RequestRow,
    StoredFile,
    Submitted,
)
from dsar_scheduler.logs import get_logger
from dsar_scheduler.metrics import Metrics
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.lanes import Lanes
from dsar_scheduler.tick.report import StopTick, TickReport

log = get_logger("dsar.tick")


@dataclass
class Batch:
    """The writes of a chunk of calls, held back to be made in one transaction."""

    calls: list[tuple[CallTicket, str, int | None]] = field(default_factory=list)
    #: Polls that found the job still running: (request id, polls so far, next poll).
    running: list[tuple[int, int, datetime]] = field(default_factory=list)
    #: Files stored and verified: (file id, bytes, sha256, events, Amplitude IDs).
    stored: list[StoredFile] = field(default_factory=list)
    #: POSTs accepted, their remote ids still to record.
    submitted: list[Submitted] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.calls or self.running or self.stored or self.submitted)


@dataclass
class Context:
    settings: Settings
    ledger: Ledger
    client: AmplitudeClient
    storage: Storage
    clock: Clock
    metrics: Metrics
    owner: str
    stop: threading.Event
    rng: random.Random
    policy: Policy
    limits: Limits
    #: Where polls and file fetches are sent, up to DSAR_CONCURRENCY at once (``tick.fanout``).
    lanes: Lanes
    report: TickReport = field(default_factory=TickReport)
    #: Wall time (monotonic) the lease was last taken or renewed.
    renewed: float = 0.0
    #: Storage failed this tick: fetching and submitting stop, the tick ends as an error.
    storage_broken: bool = False
    #: Writes held back until the end of a chunk of calls (``batch.batch_of_calls``).
    batch: Batch | None = None
    #: The project-key APIs (deletion, User Search, User Activity); ``None``: no project is
    #: configured (DSAR_PROJECTS_FILE), so no deletion step runs.
    privacy: PrivacyApi | None = None

    @property
    def reads(self) -> LedgerReads:
        return LedgerReads(self.ledger)

    def retry_delay(self, attempt: int, cap: float) -> float:
        """Seconds before retry ``attempt`` after a transient error (DSAR_RETRY_BASE_SECONDS):
        the ``Backoff`` the rules in ``core.outcomes`` draw from."""
        return backoff_delay(attempt, base=self.settings.retry_base_seconds, cap=cap, rng=self.rng)


def outcome_limits(settings: Settings) -> Limits:
    """The settings the rules in ``core.outcomes`` count against."""
    return Limits(
        max_transient_errors=settings.max_transient_errors,
        max_failed_resubmits=settings.max_failed_resubmits,
        max_expired_resubmits=settings.max_expired_resubmits,
        poll_interval_s=settings.poll_interval_seconds,
    )


class LedgerReads:
    """The ledger's answers to what a policy reads (``core.policy.PolicyReads``)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @property
    def budget_limit(self) -> int:
        return self.ledger.budget.limit

    def headroom(self, now: datetime) -> int:
        return self.ledger.budget.headroom(now)

    def freed_by(self, now: datetime, when: datetime) -> int:
        return self.ledger.budget.freed_by(now, when)

    def count_in(self, states: Iterable[State]) -> int:
        return self.ledger.requests.count_in(states)

    def count_pending_files(self) -> int:
        return self.ledger.files.count_pending()

    def poll_candidates(self, due_by: datetime | None = None) -> Sequence[PollCandidate]:
        return self.ledger.facts.poll_candidates(due_by=due_by)

    def completion_samples(self, since: datetime, limit: int) -> CompletionSamples:
        return self.ledger.facts.completion_samples(since, limit)

    def files_seen(self, since: datetime, limit: int) -> tuple[int, int]:
        return self.ledger.facts.files_seen(since, limit)

    def submit_head_months(self, now: datetime, limit: int) -> Sequence[int]:
        return self.ledger.facts.submit_head_months(now, limit)

    def next_due(self, now: datetime) -> datetime | None:
        return self.ledger.facts.next_due(now)

    def budget_frees_at(self, now: datetime, amount: int) -> datetime | None:
        return self.ledger.budget.frees_at(now, amount)


def lease_ttl(clock: Clock) -> timedelta:
    """The lease's life in clock seconds: ``LEASE_TTL`` of wall time, so that on a fast clock
    it still outlives a renewal (every ``LEASE_RENEW_EVERY`` wall seconds) and covers a process
    stuck for as long as it would at speed 1."""
    return limits.LEASE_TTL * clock.speed


def keep_lease(ctx: Context) -> None:
    """Renew the tick lease when it is due; stop the tick if another replica took it."""
    if time.monotonic() - ctx.renewed < limits.LEASE_RENEW_EVERY:
        return
    if not ctx.ledger.lease.acquire(
        ctx.owner, ctx.clock.now(), lease_ttl(ctx.clock), holder_is_gone
    ):
        raise StopTick("tick lease lost")
    ctx.renewed = time.monotonic()


def storage_failed(ctx: Context, request_id: int, err: StorageError) -> None:
    """Storage is failing (disk full, permission denied, S3 unreachable): stop fetching
    and submitting for this tick, which ends as an error; the next tick tries again."""
    ctx.storage_broken = True
    ctx.report.errors.append(f"storage: {err}")
    log.error("storage.failed", request_id=request_id, error=str(err))


def guarded(
    ctx: Context,
    request: RequestRow,
    step: str,
    work: Callable[[], None],
    file: FileRow | None = None,
) -> None:
    """One request's trouble must not stop the others. An unexpected error (a value the
    database refuses, a bug) is logged and counted, the request (or file) waits a retry
    delay, and the tick goes on; if even that cannot be recorded, the tick ends."""
    try:
        work()
    except StopTick:
        raise
    except Exception as exc:
        ctx.report.outcome = "error"
        ctx.report.errors.append(f"request {request.id} ({step}): {type(exc).__name__}")
        log.exception("request.step_failed", request_id=request.id, step=step)
        ctx.metrics.step_failures.labels(step).inc()
        now = ctx.clock.now()
        retry = outcomes.on_unexpected(
            step,
            type(exc).__name__,
            request.errors,
            file.attempts if file is not None else None,
            ctx.retry_delay,
        )
        if isinstance(retry, outcomes.RetryFile):
            assert file is not None
            ctx.ledger.files.record_failure(
                file.id, retry.error, now + timedelta(seconds=retry.delay_s)
            )
        else:
            ctx.ledger.requests.update(
                request.id,
                now,
                errors=retry.errors,
                next_action_at=now + timedelta(seconds=retry.delay_s),
            )
