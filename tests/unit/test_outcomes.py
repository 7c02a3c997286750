"""What an answer or an error means for a request (``core.outcomes``), case by case: the exact
outcome, the exact reason (the audit trail shows it), and whether a retry delay was drawn."""

from __future__ import annotations

from typing import Any

import pytest

from dsar_scheduler.adapters.amplitude import ApiError, ErrorKind
from dsar_scheduler.core import outcomes
from dsar_scheduler.core.outcomes import (
    Die,
    Finished,
    Limits,
    Requeue,
    Resubmit,
    Retry,
    RetryFile,
    Running,
)
from dsar_scheduler.core.states import State

LIMITS = Limits(
    max_transient_errors=20, max_failed_resubmits=3, max_expired_resubmits=3, poll_interval_s=1800
)


class Draws:
    """A backoff that says what it was asked: 7 s per attempt, at most the cap."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, float]] = []

    def __call__(self, attempt: int, cap: float) -> float:
        self.asked.append((attempt, cap))
        return min(cap, 7.0 * attempt)


def err(
    kind: ErrorKind, message: str = "boom", code: int | None = None, body: str = ""
) -> ApiError:
    return ApiError(kind, message, status_code=code, body=body)


GONE = err(ErrorKind.NOT_FOUND, "no such request", 404)
BUSY = err(ErrorKind.RATE_LIMITED, "slow down", 429)
REFUSED = err(ErrorKind.AUTH, "bad key", 401)
DOWN = err(ErrorKind.TRANSIENT, "server error", 503)
ODD = err(ErrorKind.BAD_STATUS, "unknown status 'gone'")
WRONG = err(ErrorKind.REJECTED, "bad request", 400, body='{"error": "end before start"}')


def test_the_kinds_the_rules_name_are_the_clients() -> None:
    for name in ("RATE_LIMITED", "NOT_FOUND", "REJECTED", "AUTH", "UNTRUSTED_URL"):
        assert getattr(outcomes, name) == ErrorKind[name]
    assert outcomes.LINK_EXPIRED == ErrorKind.LINK_EXPIRED
    assert outcomes.BAD_STATUS == ErrorKind.BAD_STATUS
    assert outcomes.VERIFICATION not in {k.value for k in ErrorKind}


@pytest.mark.parametrize(
    ("error", "errors", "failures", "expected", "asked"),
    [
        pytest.param(
            GONE, 0, 0,
            Resubmit(State.FAILED, "Amplitude does not know the request (404)", failures=1),
            [], id="404: the job is lost, resubmit",
        ),
        pytest.param(
            GONE, 5, 2,
            Resubmit(State.FAILED, "Amplitude does not know the request (404)", failures=3),
            [], id="404 reaching the resubmit limit: resubmit",
        ),
        pytest.param(
            GONE, 0, 3,
            Die(
                "Amplitude does not know the request (404); failed 4 times, giving up",
                failures=4,
            ),
            [], id="404 past the resubmit limit: dead",
        ),
        pytest.param(DOWN, 0, 0, Retry(1, 7.0), [(1, 3600.0)], id="5xx: retry after a backoff"),
        pytest.param(
            DOWN, 19, 0, Retry(20, 140.0), [(20, 3600.0)],
            id="5xx at the error limit: a poll keeps retrying",
        ),
        pytest.param(
            DOWN, 999, 0, Retry(1000, 1800), [(1000, 3600.0)],
            id="a poll's retry waits no longer than the poll interval",
        ),
        pytest.param(ODD, 18, 0, Retry(19, 133.0), [(19, 3600.0)], id="bad status: retry"),
        pytest.param(
            ODD, 19, 0,
            Resubmit(
                State.FAILED,
                "20 unusable status answers in a row: bad_status: unknown status 'gone'",
                failures=1,
                clear_errors=True,
            ),
            [], id="bad status up to max_transient_errors: a failed job",
        ),
        pytest.param(
            ODD, 25, 3,
            Die(
                "26 unusable status answers in a row: bad_status: unknown status 'gone'; "
                "failed 4 times, giving up",
                failures=4,
                clear_errors=True,
            ),
            [], id="bad status past both limits: dead",
        ),
    ],
)  # fmt: skip
def test_a_failed_poll(
    error: ApiError, errors: int, failures: int, expected: Any, asked: list[Any]
) -> None:
    draws = Draws()
    assert outcomes.on_poll_error(error, errors, failures, LIMITS, draws) == expected
    assert draws.asked == asked


@pytest.mark.parametrize(
    ("status", "fail_reason", "failures", "expected"),
    [
        ("staging", None, 0, Running(5)),
        ("submitted", None, 0, Running(5)),
        ("done", None, 0, Finished(5)),
        ("failed", "out of memory", 0,
         Resubmit(State.FAILED, "Amplitude job failed: out of memory", failures=1)),
        ("failed", None, 2, Resubmit(State.FAILED, "Amplitude job failed: ?", failures=3)),
        ("failed", "", 3, Die("Amplitude job failed: ?; failed 4 times, giving up", failures=4)),
    ],
    ids=["staging", "submitted", "done", "failed", "failed, at the limit", "failed, past it"],
)  # fmt: skip
def test_a_status_answer(
    status: str, fail_reason: str | None, failures: int, expected: Any
) -> None:
    assert outcomes.on_status(status, fail_reason, 4, failures, LIMITS) == expected


@pytest.mark.parametrize(
    ("error", "errors", "expected", "asked"),
    [
        pytest.param(
            WRONG, 0,
            Die('Amplitude refused the request (HTTP 400): {"error": "end before start"}'),
            [], id="rejected: dead at once",
        ),
        pytest.param(
            BUSY, 3, Requeue("not submitted: rate_limited: slow down (HTTP 429)"), [],
            id="429: queued again, not counted",
        ),
        pytest.param(
            REFUSED, 19, Requeue("not submitted: auth: bad key (HTTP 401)"), [],
            id="credentials refused: queued again, not counted",
        ),
        pytest.param(
            DOWN, 0,
            Requeue("submit failed, will retry: transient: server error (HTTP 503)", Retry(1, 7.0)),
            [(1, 1800.0)], id="5xx: queued with a backoff",
        ),
        pytest.param(
            GONE, 18,
            Requeue(
                "submit failed, will retry: not_found: no such request (HTTP 404)",
                Retry(19, 133.0),
            ),
            [(19, 1800.0)], id="404 on a POST: transient",
        ),
        pytest.param(
            DOWN, 19, Die("submit failed 20 times: transient: server error (HTTP 503)"), [],
            id="5xx up to max_transient_errors: dead",
        ),
    ],
)  # fmt: skip
def test_a_failed_submission(error: ApiError, errors: int, expected: Any, asked: list[Any]) -> None:
    draws = Draws()
    assert outcomes.on_submit_error(error, errors, LIMITS, draws) == expected
    assert draws.asked == asked


EXPIRED = "results expired before every file was stored"


@pytest.mark.parametrize(
    ("expiries", "limit", "expected"),
    [
        (0, 3, Resubmit(State.EXPIRED, EXPIRED, expiries=1)),
        (2, 3, Resubmit(State.EXPIRED, EXPIRED, expiries=3)),
        (3, 3, Die(f"{EXPIRED}; expired unfetched 4 times, giving up (dsar retry ID)", expiries=4)),
        (0, 0, Die(f"{EXPIRED}; expired unfetched 1 times, giving up (dsar retry ID)", expiries=1)),
    ],
    ids=["first expiry", "at max_expired_resubmits", "past it", "no resubmits allowed"],
)  # fmt: skip
def test_results_expiring_unfetched(expiries: int, limit: int, expected: Any) -> None:
    limits = Limits(20, 3, limit, 1800)
    assert outcomes.on_expiry(EXPIRED, expiries, limits) == expected


@pytest.mark.parametrize(
    ("kind", "attempts", "expected", "asked"),
    [
        pytest.param(
            "untrusted_url", 0, Die("refused output URL: the error"), [],
            id="untrusted URL: dead, no retry",
        ),
        pytest.param(
            "link_expired", 4, RetryFile("the error", 0.0), [],
            id="pre-signed link expired: again next tick",
        ),
        pytest.param(
            "transient", 2, RetryFile("the error", 21.0), [(3, 1800.0)],
            id="5xx: retry after a backoff",
        ),
        pytest.param(
            "not_found", 0, RetryFile("the error", 7.0), [(1, 1800.0)],
            id="404: retry after a backoff",
        ),
        pytest.param(
            "verification", 1, RetryFile("the error", 14.0), [(2, 1800.0)],
            id="failed verification: retry after a backoff",
        ),
    ],
)  # fmt: skip
def test_a_file_that_could_not_be_fetched(
    kind: str, attempts: int, expected: Any, asked: list[Any]
) -> None:
    draws = Draws()
    assert outcomes.on_file_error(kind, "the error", attempts, draws) == expected
    assert draws.asked == asked


NOT_THERE = "not_found: no such output (HTTP 404)"
TWICE = f"output 2 answered 404 twice in a row: {NOT_THERE}"


@pytest.mark.parametrize(
    ("kind", "previous", "attempts", "expiries", "expected"),
    [
        pytest.param("not_found", None, 1, 0, None, id="first 404: wait"),
        pytest.param(
            "not_found", "transient: server error (HTTP 503)", 2, 0, None,
            id="404 after a 5xx: wait",
        ),
        pytest.param(
            "not_found", NOT_THERE, 2, 0, Resubmit(State.EXPIRED, TWICE, expiries=1),
            id="404 twice: the results are gone, resubmit",
        ),
        pytest.param(
            "not_found", NOT_THERE, 20, 0, Resubmit(State.EXPIRED, TWICE, expiries=1),
            id="404 twice at the error limit: resubmit, not dead",
        ),
        pytest.param(
            "not_found", NOT_THERE, 2, 3,
            Die(f"{TWICE}; expired unfetched 4 times, giving up (dsar retry ID)", expiries=4),
            id="404 twice past max_expired_resubmits: dead",
        ),
        pytest.param(
            "verification", NOT_THERE, 3, 0, None, id="not a 404 after a 404: wait",
        ),
        pytest.param("transient", None, 19, 0, None, id="below max_transient_errors: wait"),
        pytest.param(
            "transient", None, 20, 0, Die(f"file 2 failed 20 times: {NOT_THERE}"),
            id="at max_transient_errors: dead",
        ),
    ],
)  # fmt: skip
def test_what_a_recorded_file_failure_means_for_its_request(
    kind: str, previous: str | None, attempts: int, expiries: int, expected: Any
) -> None:
    assert (
        outcomes.after_file_failure(kind, NOT_THERE, previous, attempts, 2, expiries, LIMITS)
        == expected
    )


@pytest.mark.parametrize(
    ("file_attempts", "expected", "asked"),
    [
        (None, Retry(4, 28.0), [(4, 3600.0)]),
        (4, RetryFile("fetch: ValueError", 35.0), [(5, 1800.0)]),
    ],
    ids=["a request's step: the request waits", "a file's fetch: the file waits"],
)
def test_an_unexpected_error_in_one_requests_step(
    file_attempts: int | None, expected: Any, asked: list[Any]
) -> None:
    draws = Draws()
    assert outcomes.on_unexpected("fetch", "ValueError", 3, file_attempts, draws) == expected
    assert draws.asked == asked
