"""One tick: admit, recover, fetch, poll, fetch what just finished, submit — while the budget
allows. Every call's cost is reserved in the ledger before it is sent; a tick never sleeps on
the API and every loop is bounded; whatever is left waits for the next tick.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from dsar_scheduler.adapters.amplitude import AmplitudeClient, ApiError, ErrorKind
from dsar_scheduler.adapters.clock import Clock
from dsar_scheduler.adapters.db import File, Request
from dsar_scheduler.adapters.liveness import holder_is_gone
from dsar_scheduler.adapters.storage import Storage, StorageError
from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier, VerificationError
from dsar_scheduler.config import Settings
from dsar_scheduler.core import planner as planning
from dsar_scheduler.core.backoff import backoff_delay
from dsar_scheduler.core.manifest import MANIFEST_NAME, build_manifest
from dsar_scheduler.core.states import SUBMITTABLE, State
from dsar_scheduler.core.validation import Accepted, RawQueueRow, Rejected, validate
from dsar_scheduler.ledger import (
    CALL_HISTORY_NEEDED,
    RATE_LIMIT_HISTORY,
    Admission,
    CallTicket,
    Ledger,
    QueueFloor,
    Submitted,
    Transition,
)
from dsar_scheduler.logs import get_logger
from dsar_scheduler.metrics import Metrics

log = get_logger("dsar.tick")

ADMIT_BATCH = 500
MAX_ADMIT_BATCHES = 20
#: How often admission reads the whole queue, not only past the floor (``Tick.admit``).
QUEUE_SWEEP_EVERY = timedelta(hours=24)
PAGE = 200
#: Calls reserved together in one budget transaction (polls, submissions).
CHUNK = 100
#: Accepted POSTs are recorded (with their remote ids) at least this often.
SUBMIT_FLUSH = 25
#: A batch reservation not used within this long is released and taken again: an unsent
#: reservation must not age out of the rolling hour before its call is made.
STALE_RESERVATION = timedelta(minutes=10)
#: Completion times the planner learns from: requests done within this window, most recent.
SAMPLE_WINDOW = timedelta(days=14)
MAX_SAMPLES = 5000
#: Recent requests whose files are counted to learn files per month of a date range.
FILE_SAMPLES = 500
#: Daemon wake-ups sooner than the tick interval: not sooner than this after a tick, and for a
#: full budget window only once this share of the limit has left it.
MIN_WAKE = timedelta(seconds=60)
WAKE_BUDGET_SHARE = 0.05
LEASE_TTL = timedelta(minutes=10)
LEASE_RENEW_EVERY = 30.0  # seconds of wall time
COST = {"submit": 8, "status": 1, "fetch": 1}
#: Housekeeping of the call ledger (DSAR_CALL_RETENTION_DAYS): at most this often, in
#: transactions of at most PRUNE_BATCH rows, at most PRUNE_BATCHES of them per tick (a
#: backlog is worked off tick by tick).
PRUNE_CHORE = "prune-api-calls"
PRUNE_EVERY = timedelta(hours=1)
PRUNE_BATCH = 5000
PRUNE_BATCHES = 20
#: The seed's plan: this many submissions per tick (DSAR_SUBMIT_BATCH_SIZE overrides).
BASELINE_BATCH = 20


class StopTick(Exception):
    """API work ends for this tick: budget full, rate limited, credentials refused, shutdown,
    or the lease lost. The message is the reason."""


@dataclass
class TickReport:
    outcome: str = "ok"  # ok | error | skipped
    admitted: int = 0
    rejected: int = 0
    submitted: int = 0
    polled: int = 0
    done: int = 0
    failed: int = 0
    files_stored: int = 0
    requests_stored: int = 0
    expired: int = 0
    dead: int = 0
    stopped_by: str | None = None
    errors: list[str] = field(default_factory=list)
    #: The planner's figures for this tick (planner policy).
    plan: dict[str, float | int] | None = None
    #: When there is work again before the next regular tick (the daemon may wake then).
    wake_at: datetime | None = None

    def summary(self) -> dict[str, Any]:
        """The counts that are not zero, without the outcome (logged beside it)."""
        return {
            k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in self.__dict__.items()
            if k != "outcome" and v not in (0, None, [])
        }


def transition_listener(metrics: Metrics) -> Callable[[Sequence[Transition]], None]:
    """Count every committed state change, and log it: a ``request.transition`` line per
    change, but a batch of admissions is one ``queue.admitted`` line (the count and the
    range of request ids: each row's own event is in ``dsar_request_events``, and 5,000
    admissions were 5,000 lines and a tenth of that tick's work), and the move to
    ``submitting`` (a crash marker held for one POST) logs at debug."""

    def listen(batch: Sequence[Transition]) -> None:
        for state, count in Counter(t.to_state for t in batch).items():
            metrics.transitions.labels(state).inc(count)
        admitted = [t.request_id for t in batch if _is_admission(t)]
        if admitted:
            log.info(
                "queue.admitted",
                count=len(admitted),
                first_request_id=min(admitted),
                last_request_id=max(admitted),
            )
        for t in batch:
            if _is_admission(t):
                continue
            emit = log.debug if t.to_state == State.SUBMITTING else log.info
            emit(
                "request.transition",
                request_id=t.request_id,
                from_state=t.from_state,
                to_state=t.to_state,
                reason=t.reason,
                amplitude_request_id=t.remote_request_id,
            )

    return listen


def _is_admission(t: Transition) -> bool:
    return t.from_state is None and t.to_state == State.QUEUED


class Tick:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        client: AmplitudeClient,
        storage: Storage,
        clock: Clock,
        metrics: Metrics,
        owner: str,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings, self.ledger, self.client = settings, ledger, client
        self.storage, self.clock, self.metrics, self.owner = storage, clock, metrics, owner
        self.stop = stop or threading.Event()
        self.rng = rng or random.Random()
        self.report = TickReport()
        self._renewed = 0.0
        self._storage_broken = False
        self._tick_id: int | None = None
        self._batch: _Batch | None = None
        self._plan: planning.Plan | None = None
        self._interval_s = settings.tick_interval_seconds

    # -- the tick ------------------------------------------------------------------------

    def run(self) -> TickReport:
        started = time.monotonic()
        now = self.clock.now()
        if not self.ledger.acquire_lease(self.owner, now, LEASE_TTL, holder_is_gone):
            self.report.outcome = "skipped"
            log.info("tick.skipped", reason="another replica holds the tick lease")
            self.metrics.ticks.labels("skipped").inc()
            return self.report
        self._renewed = time.monotonic()
        tick_id = self.ledger.start_tick(self.owner, now)
        self._tick_id = tick_id
        try:
            self._steps()
        except Exception as exc:
            self.report.outcome = "error"
            self.report.errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            log.exception("tick.failed")
        finally:
            self._close(tick_id, started)
        return self.report

    def _steps(self) -> None:
        self.settle_unknown_calls()
        self.admit()
        self.recover()
        self.settle_store_notes()
        self.complete_stored()
        self.expire()
        try:
            self.fetch()
            self.poll()
            self.fetch()
            if not self._storage_broken:
                self.submit()
        except StopTick as stop:
            self.report.stopped_by = str(stop)
            log.info("tick.stopped_early", reason=str(stop))
        self.prune_calls()
        self.ledger.save_stored_totals(self.clock.now())
        if self.settings.policy == "planner":
            self.report.wake_at = self._wake_at()

    def _close(self, tick_id: int, started: float) -> None:
        now = self.clock.now()
        if self._storage_broken or self.report.stopped_by == "credentials refused":
            self.report.outcome = "error"
        try:
            self.ledger.finish_tick(tick_id, self.report.outcome, str(self.report.summary()), now)
            self.ledger.release_lease(self.owner, now)
        except Exception:
            self.report.outcome = "error"
            log.exception("tick.close_failed")
        self.metrics.tick_duration.observe(time.monotonic() - started)
        self.metrics.ticks.labels(self.report.outcome).inc()
        log.info("tick.finished", outcome=self.report.outcome, **self.report.summary())

    # -- 1. admit ------------------------------------------------------------------------

    def admit(self) -> None:
        """Admit queue rows in pages, starting past the queue floor: the rows below it all
        have ledger rows, so a tick reads what is recent, not the service's whole history
        (with a million queue rows, reading from the start cost 0.25 s a tick). The floor
        then moves up to the highest id the previous tick saw, or to just below the first
        row this tick leaves unadmitted, whichever is lower.

        A row that commits a tick after a later one was read (an upstream transaction held
        open that long) can sit below the floor unseen; the whole queue is read again every
        QUEUE_SWEEP_EVERY, which admits it then."""
        now = self.clock.now()
        start = self.ledger.queue_floor(now)
        top = self.ledger.last_queue_id()  # before reading: a row added meanwhile waits
        after = start.floor
        left: list[int] = []  # queue ids this tick leaves unadmitted
        for _ in range(MAX_ADMIT_BATCHES):
            rows = self.ledger.pending_queue_rows(ADMIT_BATCH, after)
            if not rows:
                break
            after = rows[-1].queue_id
            today = self.clock.now().date()
            verdicts = [(row, validate(row, today, self.settings.max_range_days)) for row in rows]
            try:
                created = self.ledger.admit(verdicts, self.clock.now())
            except Exception:
                log.exception("admit.batch_failed", rows=len(rows))
                created, failed = self._admit_one_by_one(verdicts)
                left += failed
            for request in created:
                if request.state == State.REJECTED:
                    self.report.rejected += 1
                else:
                    self.report.admitted += 1
                    if self.settings.log_subject_ids:  # the operator asked for subjects in logs
                        log.info(
                            "request.admitted",
                            request_id=request.id,
                            amplitude_id=request.amplitude_id,
                        )
            if len(rows) < ADMIT_BATCH:
                break
        else:  # pages left for the next tick
            left.append(after + 1)
        floor = max(start.floor, min([start.seen, *(queue_id - 1 for queue_id in left)]))
        sweep_due = now + QUEUE_SWEEP_EVERY if start.floor == 0 else None
        if (floor, top) != (start.floor, start.seen) or sweep_due is not None:
            self.ledger.set_queue_floor(QueueFloor(floor, top), now, sweep_due)

    def _admit_one_by_one(
        self, verdicts: list[tuple[RawQueueRow, Accepted | Rejected]]
    ) -> tuple[list[Admission], list[int]]:
        """A batch failed (a value the ledger cannot hold): admit rows alone, and reject with
        the database's complaint any row that still cannot be written. Returns what was
        written, and the queue ids of rows that could not be written at all."""
        created: list[Admission] = []
        failed: list[int] = []
        for row, verdict in verdicts:
            try:
                created += self.ledger.admit([(row, verdict)], self.clock.now())
            except Exception as exc:
                reason = Rejected(f"row cannot be admitted: {type(exc).__name__}")
                bare = RawQueueRow(row.queue_id, None, None, None, None, None)
                try:
                    created += self.ledger.admit([(bare, reason)], self.clock.now())
                except Exception:
                    log.exception("admit.row_failed", queue_id=row.queue_id)
                    failed.append(row.queue_id)
        return created, failed

    # -- 2. recover and expire -----------------------------------------------------------

    def recover(self) -> None:
        """A request still ``submitting`` when a tick starts was left by a process that
        died between reserving and recording a POST (we hold the lease, so nobody else is
        mid-POST). The POST may have reached Amplitude; the API has no idempotency key or
        list endpoint to check, so resubmit: a duplicate remote request only costs budget."""
        for request in self.ledger.in_state(State.SUBMITTING):
            self.ledger.move(
                request.id,
                {State.SUBMITTING},
                State.QUEUED,
                "POST outcome unknown (the process stopped mid-submit); resubmitting",
                self.clock.now(),
                next_action_at=None,
            )

    def settle_unknown_calls(self) -> None:
        """Calls an earlier, stopped process reserved but never recorded an answer for (it
        died mid-call, or its database went away): their outcome is unknown, their cost stays
        spent. We hold the lease and have reserved nothing yet, so none of them is live."""
        unknown = self.ledger.mark_unknown_calls(self.clock.now())
        for kind, _cost in unknown:
            self.metrics.calls_unknown.labels(kind).inc()
        if unknown:
            log.warning(
                "calls.outcome_unknown",
                count=len(unknown),
                cost=sum(cost for _, cost in unknown),
                note="reserved by a process that stopped before recording the answer; "
                "counted as spent",
            )

    def prune_calls(self) -> None:
        """Housekeeping, after the API work: delete call rows older than
        DSAR_CALL_RETENTION_DAYS, about once an hour, in short transactions (the budget reads
        only the last hour, through an index, so it is correct with or without them; they
        only make the table grow). A failure is logged and left for the next hour: it does
        not fail the tick, whose requests are unaffected."""
        now = self.clock.now()
        retention = max(timedelta(days=self.settings.call_retention_days), CALL_HISTORY_NEEDED)
        try:
            if not self.ledger.claim_chore(PRUNE_CHORE, now, PRUNE_EVERY):
                return
            removed, left = 0, True
            for _ in range(PRUNE_BATCHES):
                if self.stop.is_set():
                    break
                count = self.ledger.prune_calls(now - retention, PRUNE_BATCH)
                removed += count
                if count < PRUNE_BATCH:
                    left = False
                    break
            if left:  # a backlog (or a shutdown): carry on at the next tick
                self.ledger.chore_due(PRUNE_CHORE, now)
        except Exception:
            log.exception("calls.prune_failed")
            return
        if removed:
            log.info("calls.pruned", count=removed, older_than=(now - retention).isoformat())

    def complete_stored(self) -> None:
        for request in self.ledger.completed_unrecorded():
            self._store_if_complete(request)

    def expire(self) -> None:
        """Results about to expire with files unfetched: resubmit, or give up at the limit."""
        now = self.clock.now()
        margin = timedelta(seconds=self.settings.expiry_margin_seconds)
        for request in self.ledger.expiring(now + margin):
            self._expire_request(request, "results expired before every file was stored")

    def _expire_request(self, request: Request, reason: str) -> None:
        """The results are gone before every file was stored: resubmit, or give up."""
        expiries = request.expiries + 1
        if expiries > self.settings.max_expired_resubmits:
            new = State.DEAD
            reason = f"{reason}; expired unfetched {expiries} times, giving up (dsar retry ID)"
        else:
            new = State.EXPIRED
        moved = self.ledger.move(
            request.id,
            {State.DONE, State.FETCHING},
            new,
            reason,
            self.clock.now(),
            expiries=expiries,
            next_action_at=None,
        )
        if moved is not None:
            if new is State.DEAD:
                self.report.dead += 1
            else:
                self.report.expired += 1

    # -- budget and liveness -------------------------------------------------------------

    def _reserve(self, kind: str, request_id: int) -> CallTicket:
        if self.stop.is_set():
            raise StopTick("shutdown")
        self._keep_lease()
        ticket = self.ledger.reserve(kind, COST[kind], self.clock.now(), request_id)
        if ticket is None:
            if self.ledger.backoff_until(self.clock.now()) is not None:
                raise StopTick("rate limited (backing off)")
            self.metrics.budget_deferrals.inc()
            raise StopTick("budget window full")
        return ticket

    def _reserve_batch(self, kind: str, request_ids: list[int]) -> list[CallTicket]:
        """Reserve calls for several requests in one transaction: as many as fit, at least
        one (else the tick stops, as ``_reserve``)."""
        if not request_ids:
            return []
        if self.stop.is_set():
            raise StopTick("shutdown")
        self._keep_lease()
        tickets = self.ledger.reserve_many(
            kind, COST[kind], self.clock.now(), list[int | None](request_ids)
        )
        if not tickets:
            self._budget_full()
        return tickets

    def _budget_full(self) -> None:
        if self.ledger.backoff_until(self.clock.now()) is not None:
            raise StopTick("rate limited (backing off)")
        self.metrics.budget_deferrals.inc()
        raise StopTick("budget window full")

    def _fresh(self, ticket: CallTicket) -> CallTicket | None:
        """The ticket, or ``None`` (released; the call reserves anew) if it waited so long
        that its cost would soon leave the rolling hour before the call is made."""
        if ticket.reserved_at is None or self.clock.now() - ticket.reserved_at < STALE_RESERVATION:
            return ticket
        self._release([ticket])
        return None

    def _release(self, tickets: list[CallTicket]) -> None:
        if tickets:
            self.ledger.release_calls(tickets, self.clock.now())

    def _retry_delay(self, attempt: int, cap: float) -> float:
        """Seconds before retry ``attempt`` after a transient error (DSAR_RETRY_BASE_SECONDS)."""
        return backoff_delay(attempt, base=self.settings.retry_base_seconds, cap=cap, rng=self.rng)

    def _keep_lease(self) -> None:
        if time.monotonic() - self._renewed < LEASE_RENEW_EVERY:
            return
        if not self.ledger.acquire_lease(self.owner, self.clock.now(), LEASE_TTL, holder_is_gone):
            raise StopTick("tick lease lost")
        self._renewed = time.monotonic()

    def _finished(self, ticket: CallTicket, code: int | None, outcome: str = "ok") -> None:
        if self._batch is not None:
            self._batch.calls.append((ticket, outcome, code))
        else:
            self.ledger.finish_call(ticket, outcome, code, self.clock.now())
        self.metrics.api_calls.labels(ticket.kind, str(code) if code else "none").inc()

    @contextmanager
    def _batched(self) -> Iterator[None]:
        """Within a chunk of calls, their outcomes, polls that found a job still running and
        stored files are written in one transaction at the end of the chunk (also when the
        chunk stops early). A crash before that loses only bookkeeping that is safe to lose:
        the calls stay counted as spent, a request is polled again, a file fetched again."""
        outer = self._batch
        if outer is None:
            self._batch = _Batch()
        try:
            yield
        finally:
            if outer is None:
                self._flush()
                self._batch = None

    def _flush(self) -> None:
        batch = self._batch
        if batch is not None and (batch.calls or batch.running or batch.stored or batch.submitted):
            self._batch = _Batch()
            self.ledger.settle(
                self.clock.now(), batch.calls, batch.running, batch.stored, batch.submitted
            )

    def _failed(self, ticket: CallTicket, err: ApiError) -> None:
        """Record a failed call; stop the tick for what concerns every call (429, auth)."""
        self._finished(ticket, err.status_code, err.kind.value)
        self.metrics.api_errors.labels(ticket.kind, err.cause).inc()
        log.warning("api.error", kind=ticket.kind, error=str(err), body=err.body)
        if err.kind is ErrorKind.RATE_LIMITED:
            self.metrics.rate_limited.inc()
            now = self.clock.now()
            wait = err.retry_after
            if wait is None:
                recent = self.ledger.count_calls("rate_limited", now - RATE_LIMIT_HISTORY)
                wait = backoff_delay(recent, base=60, cap=3600, rng=self.rng)
            self.ledger.set_backoff(now + timedelta(seconds=wait), now, "429 from Amplitude")
            raise StopTick("rate limited")
        if err.kind is ErrorKind.AUTH:
            raise StopTick("credentials refused")

    # -- 3. fetch ------------------------------------------------------------------------

    def fetch(self) -> None:
        seen: set[int] = set()
        while not self._storage_broken:
            batch = [
                (f, r)
                for f, r in self.ledger.pending_files(self.clock.now(), PAGE)
                if f.id not in seen
            ]
            if not batch:
                return
            for group in _by_request(batch):
                seen.update(f.id for f, _ in group)
                self._fetch_group(group)
                if self._storage_broken:
                    return

    def _fetch_group(self, group: list[tuple[File, Request]]) -> None:
        """The pending files of one request: their calls reserved in one transaction, the
        completeness check made once, after the last."""
        request = group[0][1]
        tickets = self._reserve_batch("fetch", [request.id] * len(group))
        used = 0
        try:
            with self._batched():
                for (file, _), ticket in zip(group, tickets, strict=False):
                    used += 1
                    fresh = self._fresh(ticket)
                    self._guarded(
                        request,
                        "fetch",
                        partial(self._fetch_file, file, request, fresh, complete=False),
                        file,
                    )
                    if self._storage_broken:
                        return
        finally:
            self._release(tickets[used:])
        self._guarded(request, "fetch", partial(self._store_if_complete, request))
        if len(tickets) < len(group):
            self._budget_full()

    def _fetch_file(
        self,
        file: File,
        request: Request,
        ticket: CallTicket | None = None,
        complete: bool = True,
    ) -> None:
        margin = timedelta(seconds=self.settings.expiry_margin_seconds)
        if request.expires_at is not None and request.expires_at - margin <= self.clock.now():
            self._release([ticket] if ticket else [])
            return  # too late to start; the next tick's expire step resubmits
        try:
            self.client.check_output_url(file.url)
        except ApiError as err:  # refused before anything is sent
            self._release([ticket] if ticket else [])
            self._file_error(file, request, err)
            return
        ticket = ticket or self._reserve("fetch", request.id)
        try:
            location = self.client.resolve_output(file.url)
        except ApiError as err:
            self._failed(ticket, err)
            self._file_error(file, request, err)
            return
        self._finished(ticket, 302)
        key = f"{request.storage_prefix}/{file.name}"
        try:
            with self.client.download(location) as download:
                verifier = GzipJsonLinesVerifier(expected_length=download.content_length)
                stored = self.storage.put_verified(key, self._live(download.chunks()), verifier)
            self.metrics.api_calls.labels("download", "200").inc()
        except ApiError as err:
            self.metrics.api_calls.labels("download", str(err.status_code or "none")).inc()
            self.metrics.api_errors.labels("download", err.cause).inc()
            self._file_error(file, request, err)
            return
        except VerificationError as err:
            self._file_error(file, request, f"download failed verification: {err}")
            return
        except StorageError as err:
            self.ledger.file_failed(file.id, f"storage: {err}", None)
            self.metrics.file_failures.labels("storage").inc()
            self._storage_failed(request, err)
            return
        now = self.clock.now()
        if self._batch is not None:
            self._batch.stored.append((file.id, stored.bytes, stored.sha256, stored.event_count))
        else:
            self.ledger.file_stored(file.id, stored.bytes, stored.sha256, stored.event_count, now)
        self.report.files_stored += 1
        self.metrics.files_stored.inc()
        self.metrics.bytes_stored.inc(stored.bytes)
        if request.state == State.DONE:
            self.ledger.move(request.id, {State.DONE}, State.FETCHING, "first file stored", now)
            request.state = State.FETCHING
        if complete:
            self._store_if_complete(request)

    def _live(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Pass chunks through, keeping the lease and stopping (cleanly) on shutdown."""
        for chunk in chunks:
            if self.stop.is_set():
                raise StopTick("shutdown")
            self._keep_lease()
            yield chunk

    def _file_error(self, file: File, request: Request, err: ApiError | str) -> None:
        now = self.clock.now()
        reason = err if isinstance(err, str) else str(err)
        kind = "verification" if isinstance(err, str) else err.kind.value
        self.metrics.file_failures.labels(kind).inc()
        if isinstance(err, ApiError) and err.kind is ErrorKind.UNTRUSTED_URL:
            self.ledger.file_failed(file.id, reason, None)
            self._die(request, {State.DONE, State.FETCHING}, f"refused output URL: {reason}")
            return
        if isinstance(err, ApiError) and err.kind is ErrorKind.LINK_EXPIRED:
            delay = 0.0  # a fresh pre-signed URL costs 1; try again next tick
        else:
            delay = self._retry_delay(file.attempts + 1, cap=1800)
        attempts = self.ledger.file_failed(file.id, reason, now + timedelta(seconds=delay))
        log.warning(
            "file.fetch_failed",
            request_id=request.id,
            output_index=file.output_index,
            attempts=attempts,
            error=reason,
        )
        if (
            isinstance(err, ApiError)
            and err.kind is ErrorKind.NOT_FOUND
            and (file.last_error or "").startswith(f"{ErrorKind.NOT_FOUND}:")
        ):
            # Amplitude says the output is not there, twice in a row: the results are gone
            # (expired early, or withdrawn). Waiting cannot bring them back; a new request can.
            self._expire_request(
                request, f"output {file.output_index} answered 404 twice in a row: {reason}"
            )
            return
        if attempts >= self.settings.max_transient_errors:
            self._die(
                request,
                {State.DONE, State.FETCHING},
                f"file {file.output_index} failed {attempts} times: {reason}",
            )

    def _storage_failed(self, request: Request, err: StorageError) -> None:
        """Storage is failing (disk full, permission denied, S3 unreachable): stop fetching
        and submitting for this tick, which ends as an error; the next tick tries again."""
        self._storage_broken = True
        self.report.errors.append(f"storage: {err}")
        log.error("storage.failed", request_id=request.id, error=str(err))

    def _guarded(
        self, request: Request, step: str, work: Callable[[], None], file: File | None = None
    ) -> None:
        """One request's trouble must not stop the others. An unexpected error (a value the
        database refuses, a bug) is logged and counted, the request (or file) waits a retry
        delay, and the tick goes on; if even that cannot be recorded, the tick ends."""
        try:
            work()
        except StopTick:
            raise
        except Exception as exc:
            self.report.outcome = "error"
            self.report.errors.append(f"request {request.id} ({step}): {type(exc).__name__}")
            log.exception("request.step_failed", request_id=request.id, step=step)
            self.metrics.step_failures.labels(step).inc()
            now = self.clock.now()
            if file is not None:
                retry = now + timedelta(seconds=self._retry_delay(file.attempts + 1, cap=1800))
                self.ledger.file_failed(file.id, f"{step}: {type(exc).__name__}", retry)
            else:
                delay = self._retry_delay(request.errors + 1, cap=3600)
                self.ledger.update(
                    request.id,
                    now,
                    errors=request.errors + 1,
                    next_action_at=now + timedelta(seconds=delay),
                )

    def _die(self, request: Request, expected: set[State], reason: str) -> None:
        if self.ledger.move(
            request.id, expected, State.DEAD, reason, self.clock.now(), next_action_at=None
        ):
            self.report.dead += 1

    def _store_if_complete(self, request: Request) -> None:
        """Every file stored: write the manifest, then move to ``stored`` by compare-and-set.
        A ``dsar cancel`` that commits first wins: the manifest is deleted again and the
        request stays cancelled (``Ledger.begin_store`` explains the protocol)."""
        files = self.ledger.files_of(request.id, request.remote_request_id)
        if any(f.state != "stored" for f in files):
            return
        now = self.clock.now()
        prefix = request.storage_prefix or f"req-{request.id:08d}"
        manifest_key = f"{prefix}/{MANIFEST_NAME}"
        current = {f"{prefix}/{f.name}" for f in files} | {manifest_key}
        if not self.ledger.begin_store(request.id, manifest_key, now):
            return  # cancelled before its manifest was written: nothing to undo
        try:
            manifest = build_manifest(request, files, now)
            self.storage.put_bytes(manifest_key, manifest)
            for stale in set(self.storage.list(prefix)) - current:
                self.storage.delete(stale)  # files of an earlier, superseded remote request
        except StorageError as err:  # the next tick's completion sweep writes it
            self._storage_failed(request, err)
            return
        moved = self.ledger.finish_store(
            request.id, f"{len(files)} file(s) stored and verified", now
        )
        if moved is None:
            self._withdraw_manifest(request.id, manifest_key)
            return
        self.report.requests_stored += 1
        if request.done_at is not None:
            self.metrics.done_to_stored.observe((now - request.done_at).total_seconds())
        self.metrics.queue_to_stored.observe((now - request.queued_at).total_seconds())

    def _withdraw_manifest(self, request_id: int, manifest_key: str) -> None:
        """A manifest was written for a request that is not stored (it was cancelled while
        the manifest was written): delete it, keep the files, and say so in the audit trail.
        If storage refuses, the note stays and the next tick tries again."""
        request = self.ledger.get(request_id)
        state = request.state if request is not None else "gone"
        if state == State.STORED:  # stored after all (by this very tick): the manifest stays
            self.ledger.store_withdrawn(request_id, None, self.clock.now())
            return
        try:
            self.storage.delete(manifest_key)
        except StorageError as err:
            if request is not None:
                self._storage_failed(request, err)
            return
        files = (
            self.ledger.files_of(request_id, request.remote_request_id)
            if request is not None
            else []
        )
        stored = sum(1 for f in files if f.state == "stored")
        reason = (
            f"{MANIFEST_NAME} withdrawn: the request is {state}, not stored (it changed while "
            f"its manifest was being written); {stored} stored file(s) stay under "
            f"{manifest_key.rsplit('/', 1)[0]}/ without a manifest"
        )
        self.ledger.store_withdrawn(request_id, reason, self.clock.now())
        log.info("request.manifest_withdrawn", request_id=request_id, state=state, files=stored)

    def settle_store_notes(self) -> None:
        """A process that stopped between writing a manifest and recording the outcome left
        a note: a request still ``done``/``fetching`` is completed by the completion sweep
        that follows; any other state (a cancel won) must not keep a manifest."""
        for request_id, manifest_key, state in self.ledger.store_notes():
            if state in (State.DONE, State.FETCHING):
                continue
            if self._storage_broken:
                return
            self._withdraw_manifest(request_id, manifest_key)

    # -- 4. poll -------------------------------------------------------------------------

    def poll(self) -> None:
        """Poll what the policy picks: the planner's required and optional polls, or (the
        seed's plan) every request whose fixed interval is up. Calls are reserved in chunks."""
        now = self.clock.now()
        if self.settings.policy == "planner":
            self._plan = planning.plan(self._facts(now), self._planner_config())
            self.report.plan = self._plan.summary()
            ids = self._plan.polls
        else:
            ids = [c.id for c in self.ledger.poll_candidates(due_by=now)]
        for start in range(0, len(ids), CHUNK):
            chunk = self.ledger.submitted(ids[start : start + CHUNK])
            tickets = self._reserve_batch("status", [r.id for r in chunk])
            used = 0
            try:
                with self._batched():
                    for request, ticket in zip(chunk, tickets, strict=False):
                        used += 1
                        fresh = self._fresh(ticket)
                        self._guarded(request, "poll", partial(self._poll_one, request, fresh))
            finally:
                self._release(tickets[used:])
            if len(tickets) < len(chunk):
                self._budget_full()

    def _poll_one(self, request: Request, ticket: CallTicket | None = None) -> None:
        assert request.remote_request_id is not None
        ticket = ticket or self._reserve("status", request.id)
        try:
            status = self.client.status(request.remote_request_id)
        except ApiError as err:
            self._failed(ticket, err)
            self._poll_error(request, err)
            return
        self._finished(ticket, 200)
        self.report.polled += 1
        now = self.clock.now()
        if status.status in ("staging", "submitted") and self._batch is not None:
            self._batch.running.append((request.id, request.polls + 1, self._next_poll(now)))
        elif status.status in ("staging", "submitted"):
            self.ledger.update(
                request.id,
                now,
                polls=request.polls + 1,
                errors=0,
                last_polled_at=now,
                next_action_at=self._next_poll(now),
            )
        elif status.status == "done":
            assert status.expires is not None
            names = [
                f"{request.remote_request_id}-{n:03d}.json.gz" for n in range(len(status.urls))
            ]
            done = self.ledger.record_done(
                request.id,
                request.remote_request_id,
                status.urls,
                status.expires,
                now,
                names,
                f"req-{request.id:08d}",
            )
            self.ledger.update(request.id, now, polls=request.polls + 1)
            if done is not None:
                self.report.done += 1
                if request.submitted_at is not None:
                    self.metrics.submit_to_done.observe(
                        (now - request.submitted_at).total_seconds()
                    )
        else:  # failed
            self._remote_failed(request, f"Amplitude job failed: {status.fail_reason or '?'}")

    def _remote_failed(self, request: Request, reason: str) -> None:
        failures = request.failures + 1
        now = self.clock.now()
        if failures > self.settings.max_failed_resubmits:
            self._die(request, {State.SUBMITTED}, f"{reason}; failed {failures} times, giving up")
            self.ledger.update(request.id, now, failures=failures)
            return
        self.report.failed += 1
        self.ledger.move(
            request.id,
            {State.SUBMITTED},
            State.FAILED,
            reason,
            now,
            failures=failures,
            next_action_at=None,
        )

    def _poll_error(self, request: Request, err: ApiError) -> None:
        now = self.clock.now()
        if err.kind is ErrorKind.NOT_FOUND:
            self._remote_failed(request, "Amplitude does not know the request (404)")
            return
        errors = request.errors + 1
        if err.kind is ErrorKind.BAD_STATUS and errors >= self.settings.max_transient_errors:
            # A well-formed answer we cannot use (an unknown status, done without usable
            # urls), again and again: treat the job as failed and ask for a new one.
            self.ledger.update(request.id, now, errors=0)
            self._remote_failed(request, f"{errors} unusable status answers in a row: {err}")
            return
        delay = min(
            self.settings.poll_interval_seconds,
            self._retry_delay(errors, cap=3600),
        )
        self.ledger.update(
            request.id, now, errors=errors, next_action_at=now + timedelta(seconds=delay)
        )

    def _next_poll(self, now: datetime) -> datetime:
        """When a request seen running now must be polled next: the planner's required gap
        (it may poll sooner when the budget allows), or the seed's fixed interval."""
        if self.settings.policy == "planner":
            return planning.next_required_poll(now, self._planner_config())
        return now + timedelta(seconds=self.settings.poll_interval_seconds)

    # -- the planner's facts -------------------------------------------------------------

    def _planner_config(self) -> planning.PlannerConfig:
        s = self.settings
        return planning.PlannerConfig(
            max_gap_s=s.max_poll_gap_seconds,
            min_gap_s=min(s.poll_interval_seconds, s.max_poll_gap_seconds),
            max_submits=s.submit_batch_size
            if s.submit_batch_size is not None
            else planning.PlannerConfig.max_submits,
        )

    def _facts(self, now: datetime) -> planning.Facts:
        """What the planner needs, read from the ledger (one query each)."""
        candidates = self.ledger.poll_candidates()
        samples = self.ledger.completion_samples(now - SAMPLE_WINDOW, MAX_SAMPLES)
        per_month = planning.files_per_month(
            *self.ledger.files_seen(now - SAMPLE_WINDOW, FILE_SAMPLES)
        )
        model = planning.CompletionModel.fit(
            [x.seconds for x in samples],
            [
                ((c.last_polled_at or c.submitted_at) - c.submitted_at).total_seconds()
                for c in candidates
            ],
        )
        half_gap = self.settings.max_poll_gap_seconds / 2
        head = self.ledger.submit_head_months(now, PAGE)
        months = sum(head) / len(head) if head else 13.0
        # The clock's seconds per wall second (the demo's ScaledClock): ticks are wall-timed.
        speed = float(getattr(self.clock, "speed", 1.0))
        self._interval_s = self.settings.tick_interval_seconds * speed
        return planning.Facts(
            now=now,
            interval_s=self._interval_s,
            limit=self.ledger.budget_limit,
            headroom=self.ledger.headroom(now),
            freed_before_next=self.ledger.freed_by(now, now + timedelta(seconds=self._interval_s)),
            outstanding=[
                planning.Outstanding(
                    id=c.id,
                    submitted_at=c.submitted_at,
                    seen_running_at=c.last_polled_at or c.submitted_at,
                    next_required_at=c.next_action_at,
                    expected_files=c.months * per_month,
                    retrying=c.errors > 0,
                )
                for c in candidates
            ],
            pending_files=self.ledger.count_pending_files(),
            queued=self.ledger.count_in(SUBMITTABLE),
            files_per_new=months * per_month,
            model=model,
            discovery_delay_s=(
                (sum(x.seen_after for x in samples) + half_gap * planning.PRIOR_WEIGHT)
                / (len(samples) + planning.PRIOR_WEIGHT)
            ),
        )

    def _wake_at(self) -> datetime | None:
        """The earliest moment, before the next regular tick, at which there is work again:
        a required poll or a retry falling due, a request becoming eligible for an optional
        poll while the budget is not binding, or (the tick stopped on a full window) enough
        of the budget leaving the rolling hour. ``None``: the regular tick will do."""
        now = self.clock.now()
        times = [t for t in (self.ledger.next_due(now),) if t is not None]
        if self._plan is not None and self._plan.next_optional_at is not None:
            times.append(self._plan.next_optional_at)
        if self.report.stopped_by == "budget window full":
            share = max(1, int(self.ledger.budget_limit * WAKE_BUDGET_SHARE))
            frees = self.ledger.budget_frees_at(now, share)
            if frees is not None:
                times.append(frees)
        if not times:
            return None
        wake = max(min(times), now + MIN_WAKE)
        return wake if wake < now + timedelta(seconds=self._interval_s) else None

    # -- 5. submit -----------------------------------------------------------------------

    def submit(self) -> None:
        if self.settings.policy == "planner":
            self._submit_planned()
            return
        now = self.clock.now()
        polls_per_hour = math.ceil(3600 / self.settings.poll_interval_seconds)
        outstanding = self.ledger.count_in([State.SUBMITTED])
        pending_files = self.ledger.count_pending_files()
        reserve = outstanding * polls_per_hour + pending_files
        spare = self.ledger.headroom(now) - reserve
        room = max(0, spare // (COST["submit"] + polls_per_hour))
        batch = self.settings.submit_batch_size
        count = min(BASELINE_BATCH if batch is None else batch, room)
        if count == 0:
            waiting = self.ledger.count_in(SUBMITTABLE)
            if waiting:
                log.info("submit.deferred", waiting=waiting, reserve=reserve, spare=spare)
            return
        for request in self.ledger.due_submits(now, count):
            self._submit_one(request)

    def _submit_planned(self) -> None:
        """Submit what the plan allows, cut to what still fits after this tick's polls and
        fetches; the calls are reserved in chunks."""
        now = self.clock.now()
        if self._plan is None:
            return
        count = planning.submits_now(
            self._plan,
            self.ledger.headroom(now),
            self.ledger.freed_by(now, now + timedelta(seconds=self._interval_s)),
            self.ledger.count_in(SUBMITTABLE),
        )
        if count == 0:
            if self._plan.queued:
                log.info("submit.deferred", **self._plan.summary())
            return
        requests = self.ledger.due_submits(now, count)
        for start in range(0, len(requests), CHUNK):
            chunk = requests[start : start + CHUNK]
            tickets = self._reserve_batch("submit", [r.id for r in chunk])
            started = self.ledger.start_submits(chunk[: len(tickets)], self.clock.now())
            used = 0
            try:
                with self._batched():
                    for request, ticket in zip(chunk, tickets, strict=False):
                        used += 1
                        if request.id not in started:  # moved on meanwhile: not sent
                            self._release([ticket])
                            continue
                        request.submissions += 1
                        self._submit_one(request, self._fresh(ticket), started=True)
            finally:
                self._release(tickets[used:])
            if len(tickets) < len(chunk):
                self._budget_full()

    def _submit_one(
        self, request: Request, ticket: CallTicket | None = None, started: bool = False
    ) -> None:
        """POST one request; ``started``: already moved to ``submitting`` (in a batch)."""
        assert request.amplitude_id is not None
        assert request.start_date is not None and request.end_date is not None
        ticket = ticket or self._reserve("submit", request.id)
        now = self.clock.now()
        attempt = request.submissions + 1
        if not started and not self.ledger.move(
            request.id,
            set(SUBMITTABLE),
            State.SUBMITTING,
            f"submitting (attempt {attempt})",
            now,
            submissions=attempt,
        ):
            self.ledger.release_call(ticket, self.clock.now())  # never sent: costs nothing
            return
        try:
            remote_id = self.client.submit(
                request.amplitude_id, request.start_date, request.end_date
            )
        except ApiError as err:
            self._submit_error(request, err)
            self._failed(ticket, err)
            return
        self._finished(ticket, 202)
        now = self.clock.now()
        accepted = Submitted(
            request.id, remote_id, now, request.first_submitted_at or now, self._next_poll(now)
        )
        self.report.submitted += 1
        if self._batch is None:
            self.ledger.settle(now, [], [], [], [accepted])
            return
        # Recorded with the chunk's other writes, every SUBMIT_FLUSH POSTs: a crash before
        # that leaves these in ``submitting``, resubmitted by the next tick.
        self._batch.submitted.append(accepted)
        if len(self._batch.submitted) >= SUBMIT_FLUSH:
            self._flush()

    def _submit_error(self, request: Request, err: ApiError) -> None:
        now = self.clock.now()
        if err.kind is ErrorKind.REJECTED:
            self._die(
                request,
                {State.SUBMITTING},
                f"Amplitude refused the request (HTTP {err.status_code}): {err.body}",
            )
            return
        if err.kind in (ErrorKind.RATE_LIMITED, ErrorKind.AUTH):
            self.ledger.move(
                request.id, {State.SUBMITTING}, State.QUEUED, f"not submitted: {err}", now
            )
            return
        errors = request.errors + 1
        if errors >= self.settings.max_transient_errors:
            self._die(request, {State.SUBMITTING}, f"submit failed {errors} times: {err}")
            return
        delay = self._retry_delay(errors, cap=1800)
        self.ledger.move(
            request.id,
            {State.SUBMITTING},
            State.QUEUED,
            f"submit failed, will retry: {err}",
            now,
            errors=errors,
            next_action_at=now + timedelta(seconds=delay),
        )


@dataclass
class _Batch:
    """Writes held back until the end of a chunk of calls (``Tick._batched``)."""

    calls: list[tuple[CallTicket, str, int | None]] = field(default_factory=list)
    #: Polls that found the job still running: (request id, polls so far, next poll).
    running: list[tuple[int, int, datetime]] = field(default_factory=list)
    #: Files stored and verified: (file id, bytes, sha256, events).
    stored: list[tuple[int, int, str, int]] = field(default_factory=list)
    #: POSTs accepted, their remote ids still to record.
    submitted: list[Submitted] = field(default_factory=list)


def _by_request(batch: list[tuple[File, Request]]) -> list[list[tuple[File, Request]]]:
    """Consecutive files of the same request, grouped (the page is ordered by request)."""
    groups: list[list[tuple[File, Request]]] = []
    for item in batch:
        if groups and groups[-1][0][1].id == item[1].id:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups
