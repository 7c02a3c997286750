"""What an answer or an error means for a request: the rules, returned as values that the
tick writes (``tick/apply.py``).

Each rule is a plain function of the error (or the answer), the row's counters and the limits
from the settings. A rule that waits draws its delay from the ``Backoff`` it is handed, and
only when it waits: the tick's random source is drawn from exactly when a retry is scheduled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dsar_scheduler.core.states import State

# ``adapters.amplitude.ErrorKind`` values (a StrEnum: its members compare equal to these).
RATE_LIMITED = "rate_limited"
NOT_FOUND = "not_found"
REJECTED = "rejected"
AUTH = "auth"
UNTRUSTED_URL = "untrusted_url"
LINK_EXPIRED = "link_expired"
BAD_STATUS = "bad_status"
#: A download that arrived but failed verification (no API error: the bytes were wrong).
VERIFICATION = "verification"

#: Longest wait before a request is tried again (a poll's is also cut to the poll interval).
REQUEST_RETRY_CAP_S = 3600.0
#: Longest wait before a file, or a POST, is tried again.
FILE_RETRY_CAP_S = 1800.0
SUBMIT_RETRY_CAP_S = 1800.0

#: Seconds to wait before retry number ``attempt`` (1: the first), at most ``cap``.
Backoff = Callable[[int, float], float]


class ApiFailure(Protocol):
    """An API error as the rules read it (``adapters.amplitude.ApiError``)."""

    @property
    def kind(self) -> str: ...

    @property
    def status_code(self) -> int | None: ...

    @property
    def body(self) -> str: ...


@dataclass(frozen=True)
class Limits:
    """The settings the rules count against."""

    max_transient_errors: int
    max_failed_resubmits: int
    max_expired_resubmits: int
    poll_interval_s: float


@dataclass(frozen=True)
class Retry:
    """The request is tried again in ``delay_s``; its transient errors in a row: ``errors``."""

    errors: int
    delay_s: float


@dataclass(frozen=True)
class RetryFile:
    """The file is fetched again in ``delay_s``, ``error`` recorded on it."""

    error: str
    delay_s: float


@dataclass(frozen=True)
class Requeue:
    """The POST did not go through: back to ``queued``, counted and delayed by ``retry``, or
    (a 429, refused credentials: nothing wrong with the request) due again at once."""

    reason: str
    retry: Retry | None = None


@dataclass(frozen=True)
class Resubmit:
    """The remote job is lost: the request moves to ``state`` (``failed``: the job failed;
    ``expired``: its results expire unfetched), from where it is submitted again."""

    state: State
    reason: str
    failures: int | None = None
    expiries: int | None = None
    #: Reset the request's transient errors first (they led here).
    clear_errors: bool = False


@dataclass(frozen=True)
class Die:
    """Give up: ``dead``, with the reason (``dsar retry`` starts it again). ``expiries`` is
    recorded with the move; ``failures`` after it, whether or not the move happened."""

    reason: str
    failures: int | None = None
    expiries: int | None = None
    clear_errors: bool = False


@dataclass(frozen=True)
class Running:
    """The job is still running: polled ``polls`` times now."""

    polls: int


@dataclass(frozen=True)
class Finished:
    """The job is done, its files to record: polled ``polls`` times now."""

    polls: int


def job_failed(
    reason: str, failures: int, limits: Limits, clear_errors: bool = False
) -> Resubmit | Die:
    """The remote job failed (or is unknown to Amplitude): resubmit, or give up at the limit."""
    failures += 1
    if failures > limits.max_failed_resubmits:
        giving_up = f"{reason}; failed {failures} times, giving up"
        return Die(giving_up, failures=failures, clear_errors=clear_errors)
    return Resubmit(State.FAILED, reason, failures=failures, clear_errors=clear_errors)


def on_status(
    status: str, fail_reason: str | None, polls: int, failures: int, limits: Limits
) -> Running | Finished | Resubmit | Die:
    """A status answer (the client only returns the statuses it knows)."""
    if status in ("staging", "submitted"):
        return Running(polls + 1)
    if status == "done":
        return Finished(polls + 1)
    return job_failed(f"Amplitude job failed: {fail_reason or '?'}", failures, limits)


def on_poll_error(
    err: ApiFailure, errors: int, failures: int, limits: Limits, backoff: Backoff
) -> Retry | Resubmit | Die:
    """A status poll that failed (a 429 or refused credentials stop the tick before this)."""
    if err.kind == NOT_FOUND:
        return job_failed("Amplitude does not know the request (404)", failures, limits)
    errors += 1
    if err.kind == BAD_STATUS and errors >= limits.max_transient_errors:
        # A well-formed answer we cannot use (an unknown status, done without usable urls),
        # again and again: treat the job as failed and ask for a new one.
        reason = f"{errors} unusable status answers in a row: {err}"
        return job_failed(reason, failures, limits, clear_errors=True)
    delay = min(limits.poll_interval_s, backoff(errors, REQUEST_RETRY_CAP_S))
    return Retry(errors, delay)


def on_submit_error(
    err: ApiFailure, errors: int, limits: Limits, backoff: Backoff
) -> Requeue | Die:
    """A POST that failed."""
    if err.kind == REJECTED:
        return Die(f"Amplitude refused the request (HTTP {err.status_code}): {err.body}")
    if err.kind in (RATE_LIMITED, AUTH):
        return Requeue(f"not submitted: {err}")
    errors += 1
    if errors >= limits.max_transient_errors:
        return Die(f"submit failed {errors} times: {err}")
    delay = backoff(errors, SUBMIT_RETRY_CAP_S)
    return Requeue(f"submit failed, will retry: {err}", Retry(errors, delay))


def on_expiry(reason: str, expiries: int, limits: Limits) -> Resubmit | Die:
    """The results are gone (or about to be) before every file was stored."""
    expiries += 1
    if expiries > limits.max_expired_resubmits:
        giving_up = f"{reason}; expired unfetched {expiries} times, giving up (dsar retry ID)"
        return Die(giving_up, expiries=expiries)
    return Resubmit(State.EXPIRED, reason, expiries=expiries)


def on_file_error(kind: str, error: str, attempts: int, backoff: Backoff) -> RetryFile | Die:
    """A file that could not be fetched: when to try it again, or (an output URL we refuse to
    follow) give the request up. ``attempts``: the file's failures so far."""
    if kind == UNTRUSTED_URL:
        return Die(f"refused output URL: {error}")
    if kind == LINK_EXPIRED:
        return RetryFile(error, 0.0)  # a fresh pre-signed URL costs 1; try again next tick
    return RetryFile(error, backoff(attempts + 1, FILE_RETRY_CAP_S))


def after_file_failure(
    kind: str,
    error: str,
    previous_error: str | None,
    attempts: int,
    output_index: int,
    expiries: int,
    limits: Limits,
) -> Resubmit | Die | None:
    """What a file's failure, once recorded (``attempts`` counts it), means for its request:
    nothing yet (``None``), a resubmission, or giving up."""
    if kind == NOT_FOUND and (previous_error or "").startswith(f"{NOT_FOUND}:"):
        # Amplitude says the output is not there, twice in a row: the results are gone
        # (expired early, or withdrawn). Waiting cannot bring them back; a new request can.
        reason = f"output {output_index} answered 404 twice in a row: {error}"
        return on_expiry(reason, expiries, limits)
    if attempts >= limits.max_transient_errors:
        return Die(f"file {output_index} failed {attempts} times: {error}")
    return None


def on_unexpected(
    step: str, error_name: str, errors: int, file_attempts: int | None, backoff: Backoff
) -> Retry | RetryFile:
    """An unexpected error (a value the database refuses, a bug) in one request's step: that
    request (or its file, when one was being fetched) waits a retry delay; the others go on."""
    if file_attempts is not None:
        return RetryFile(f"{step}: {error_name}", backoff(file_attempts + 1, FILE_RETRY_CAP_S))
    return Retry(errors + 1, backoff(errors + 1, REQUEST_RETRY_CAP_S))
