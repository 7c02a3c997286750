"""One tick: admit, recover, fetch, poll, fetch what just finished, submit — while the budget
allows. Every call's cost is reserved in the ledger before it is sent; a tick never sleeps on
the API and every loop is bounded; whatever is left waits for the next tick.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .amplitude import AmplitudeClient, ApiError, ErrorKind
from .backoff import backoff_delay
from .clock import Clock
from .config import Settings
from .db import File, Request
from .ledger import CallTicket, Ledger, Transition
from .logs import get_logger
from .manifest import MANIFEST_NAME, build_manifest
from .metrics import Metrics
from .states import SUBMITTABLE, State
from .storage import Storage, StorageError
from .validation import Accepted, RawQueueRow, Rejected, validate
from .verify import GzipJsonLinesVerifier, VerificationError

log = get_logger("dsar.tick")

ADMIT_BATCH = 500
MAX_ADMIT_BATCHES = 20
PAGE = 200
LEASE_TTL = timedelta(minutes=10)
LEASE_RENEW_EVERY = 30.0  # seconds of wall time
COST = {"submit": 8, "status": 1, "fetch": 1}


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

    def summary(self) -> dict[str, Any]:
        """The counts that are not zero, without the outcome (logged beside it)."""
        return {k: v for k, v in self.__dict__.items() if k != "outcome" and v not in (0, None, [])}


def transition_listener(metrics: Metrics) -> Any:
    """Log and count every committed state change (one log event per change)."""

    def listen(t: Transition) -> None:
        metrics.transitions.labels(t.to_state).inc()
        log.info(
            "request.transition",
            request_id=t.request_id,
            from_state=t.from_state,
            to_state=t.to_state,
            reason=t.reason,
            amplitude_request_id=t.remote_request_id,
        )

    return listen


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

    # -- the tick ------------------------------------------------------------------------

    def run(self) -> TickReport:
        started = time.monotonic()
        now = self.clock.now()
        if not self.ledger.acquire_lease(self.owner, now, LEASE_TTL):
            self.report.outcome = "skipped"
            log.info("tick.skipped", reason="another replica holds the tick lease")
            self.metrics.ticks.labels("skipped").inc()
            return self.report
        self._renewed = time.monotonic()
        tick_id = self.ledger.start_tick(self.owner, now)
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
        self.admit()
        self.recover()
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
        for _ in range(MAX_ADMIT_BATCHES):
            rows = self.ledger.pending_queue_rows(ADMIT_BATCH)
            if not rows:
                return
            today = self.clock.now().date()
            verdicts = [(row, validate(row, today, self.settings.max_range_days)) for row in rows]
            try:
                created = self.ledger.admit(verdicts, self.clock.now())
            except Exception:
                log.exception("admit.batch_failed", rows=len(rows))
                created = self._admit_one_by_one(verdicts)
            for request in created:
                if request.state == State.REJECTED:
                    self.report.rejected += 1
                else:
                    self.report.admitted += 1
            if len(rows) < ADMIT_BATCH:
                return

    def _admit_one_by_one(
        self, verdicts: list[tuple[RawQueueRow, Accepted | Rejected]]
    ) -> list[Request]:
        """A batch failed (a value the ledger cannot hold): admit rows alone, and reject with
        the database's complaint any row that still cannot be written."""
        created: list[Request] = []
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
        return created

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

    def complete_stored(self) -> None:
        for request in self.ledger.completed_unrecorded():
            self._store_if_complete(request)

    def expire(self) -> None:
        """Results about to expire with files unfetched: resubmit, or give up at the limit."""
        now = self.clock.now()
        margin = timedelta(seconds=self.settings.expiry_margin_seconds)
        for request in self.ledger.expiring(now + margin):
            expiries = request.expiries + 1
            if expiries > self.settings.max_expired_resubmits:
                new, reason = (
                    State.DEAD,
                    (
                        f"results expired unfetched {expiries} times; "
                        "giving up (dsar retry to try again)"
                    ),
                )
                self.report.dead += 1
            else:
                new, reason = State.EXPIRED, "results expired before every file was stored"
                self.report.expired += 1
            self.ledger.move(
                request.id,
                {State.DONE, State.FETCHING},
                new,
                reason,
                now,
                expiries=expiries,
                next_action_at=None,
            )

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

    def _keep_lease(self) -> None:
        if time.monotonic() - self._renewed < LEASE_RENEW_EVERY:
            return
        if not self.ledger.acquire_lease(self.owner, self.clock.now(), LEASE_TTL):
            raise StopTick("tick lease lost")
        self._renewed = time.monotonic()

    def _finished(self, ticket: CallTicket, code: int | None, outcome: str = "ok") -> None:
        self.ledger.finish_call(ticket, outcome, code, self.clock.now())
        self.metrics.api_calls.labels(ticket.kind, str(code) if code else "none").inc()

    def _failed(self, ticket: CallTicket, err: ApiError) -> None:
        """Record a failed call; stop the tick for what concerns every call (429, auth)."""
        self._finished(ticket, err.status_code, err.kind.value)
        log.warning("api.error", kind=ticket.kind, error=str(err), body=err.body)
        if err.kind is ErrorKind.RATE_LIMITED:
            self.metrics.rate_limited.inc()
            now = self.clock.now()
            wait = err.retry_after
            if wait is None:
                recent = self.ledger.count_calls("rate_limited", now - timedelta(hours=6))
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
            for file, request in batch:
                seen.add(file.id)
                self._fetch_file(file, request)
                if self._storage_broken:
                    return

    def _fetch_file(self, file: File, request: Request) -> None:
        margin = timedelta(seconds=self.settings.expiry_margin_seconds)
        if request.expires_at is not None and request.expires_at - margin <= self.clock.now():
            return  # too late to start; the next tick's expire step resubmits
        ticket = self._reserve("fetch", request.id)
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
            self._file_error(file, request, err)
            return
        except VerificationError as err:
            self._file_error(file, request, f"download failed verification: {err}")
            return
        except StorageError as err:
            self._storage_broken = True
            self.report.errors.append(f"storage: {err}")
            self.ledger.file_failed(file.id, f"storage: {err}", None)
            self.metrics.file_failures.labels("storage").inc()
            log.error("storage.failed", request_id=request.id, error=str(err))
            return
        now = self.clock.now()
        self.ledger.file_stored(file.id, stored.bytes, stored.sha256, stored.event_count, now)
        self.report.files_stored += 1
        self.metrics.files_stored.inc()
        self.metrics.bytes_stored.inc(stored.bytes)
        if request.state == State.DONE:
            self.ledger.move(request.id, {State.DONE}, State.FETCHING, "first file stored", now)
            request.state = State.FETCHING
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
            delay = backoff_delay(file.attempts + 1, base=60, cap=1800, rng=self.rng)
        attempts = self.ledger.file_failed(file.id, reason, now + timedelta(seconds=delay))
        log.warning(
            "file.fetch_failed",
            request_id=request.id,
            output_index=file.output_index,
            attempts=attempts,
            error=reason,
        )
        if attempts >= self.settings.max_transient_errors:
            self._die(
                request,
                {State.DONE, State.FETCHING},
                f"file {file.output_index} failed {attempts} times: {reason}",
            )

    def _die(self, request: Request, expected: set[State], reason: str) -> None:
        if self.ledger.move(
            request.id, expected, State.DEAD, reason, self.clock.now(), next_action_at=None
        ):
            self.report.dead += 1

    def _store_if_complete(self, request: Request) -> None:
        files = self.ledger.files_of(request.id, request.remote_request_id)
        if any(f.state != "stored" for f in files):
            return
        now = self.clock.now()
        prefix = request.storage_prefix or f"req-{request.id:08d}"
        current = {f"{prefix}/{f.name}" for f in files} | {f"{prefix}/{MANIFEST_NAME}"}
        self.storage.put_bytes(f"{prefix}/{MANIFEST_NAME}", build_manifest(request, files, now))
        for stale in set(self.storage.list(prefix)) - current:
            self.storage.delete(stale)  # files of an earlier, superseded remote request
        moved = self.ledger.move(
            request.id,
            {State.DONE, State.FETCHING},
            State.STORED,
            f"{len(files)} file(s) stored and verified",
            now,
            stored_at=now,
            request_reason=None,
        )
        if moved is not None:
            self.report.requests_stored += 1
            if request.done_at is not None:
                self.metrics.done_to_stored.observe((now - request.done_at).total_seconds())
            self.metrics.queue_to_stored.observe((now - request.queued_at).total_seconds())

    # -- 4. poll -------------------------------------------------------------------------

    def poll(self) -> None:
        seen: set[int] = set()
        while True:
            batch = [r for r in self.ledger.due_polls(self.clock.now(), PAGE) if r.id not in seen]
            if not batch:
                return
            for request in batch:
                seen.add(request.id)
                self._poll_one(request)

    def _poll_one(self, request: Request) -> None:
        assert request.remote_request_id is not None
        ticket = self._reserve("status", request.id)
        try:
            status = self.client.status(request.remote_request_id)
        except ApiError as err:
            self._failed(ticket, err)
            self._poll_error(request, err)
            return
        self._finished(ticket, 200)
        self.report.polled += 1
        now = self.clock.now()
        if status.status in ("staging", "submitted"):
            self.ledger.update(
                request.id,
                now,
                polls=request.polls + 1,
                errors=0,
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
        delay = min(
            self.settings.poll_interval_seconds,
            backoff_delay(errors, base=60, cap=3600, rng=self.rng),
        )
        self.ledger.update(
            request.id, now, errors=errors, next_action_at=now + timedelta(seconds=delay)
        )

    def _next_poll(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.settings.poll_interval_seconds)

    # -- 5. submit -----------------------------------------------------------------------

    def submit(self) -> None:
        now = self.clock.now()
        polls_per_hour = math.ceil(3600 / self.settings.poll_interval_seconds)
        outstanding = self.ledger.count_in([State.SUBMITTED])
        pending_files = self.ledger.count_pending_files()
        reserve = outstanding * polls_per_hour + pending_files
        spare = self.ledger.headroom(now) - reserve
        room = max(0, spare // (COST["submit"] + polls_per_hour))
        count = min(self.settings.submit_batch_size, room)
        if count == 0:
            waiting = self.ledger.count_in(SUBMITTABLE)
            if waiting:
                log.info("submit.deferred", waiting=waiting, reserve=reserve, spare=spare)
            return
        for request in self.ledger.due_submits(now, count):
            self._submit_one(request)

    def _submit_one(self, request: Request) -> None:
        assert request.amplitude_id is not None
        assert request.start_date is not None and request.end_date is not None
        ticket = self._reserve("submit", request.id)
        now = self.clock.now()
        attempt = request.submissions + 1
        if not self.ledger.move(
            request.id,
            set(SUBMITTABLE),
            State.SUBMITTING,
            f"submitting (attempt {attempt})",
            now,
            submissions=attempt,
        ):
            self._finished(ticket, None, "not_sent")
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
        self.ledger.move(
            request.id,
            {State.SUBMITTING},
            State.SUBMITTED,
            f"submitted as Amplitude request {remote_id}",
            now,
            remote_request_id=remote_id,
            submitted_at=now,
            first_submitted_at=request.first_submitted_at or now,
            next_action_at=self._next_poll(now),
            errors=0,
            polls=0,
            done_at=None,
            expires_at=None,
        )
        self.report.submitted += 1

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
        delay = backoff_delay(errors, base=60, cap=1800, rng=self.rng)
        self.ledger.move(
            request.id,
            {State.SUBMITTING},
            State.QUEUED,
            f"submit failed, will retry: {err}",
            now,
            errors=errors,
            next_action_at=now + timedelta(seconds=delay),
        )
