"""Operator actions on one request: ``dsar retry ID`` and ``dsar cancel ID``.

Both are compare-and-set state changes through the ledger, written to the audit trail with
the operator's reason, so they are safe while daemons run: if a tick moved the request in the
meantime, the action is refused and can be tried again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dsar_scheduler.adapters.amplitude import PrivacyApi
from dsar_scheduler.adapters.clock import Clock, SystemClock
from dsar_scheduler.core.states import EVER_STORED, State
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.runtime.deletion_cancel import cancel_deletion

RETRYABLE = frozenset({State.DEAD, State.CANCELLED, State.FAILED, State.EXPIRED})
CANCELLABLE = frozenset(
    {
        State.QUEUED,
        State.SUBMITTING,
        State.SUBMITTED,
        State.DONE,
        State.FETCHING,
        State.FAILED,
        State.EXPIRED,
        # deletions: before anything was sent at once; while deleting, see deletion_cancel
        State.RESOLVING,
        State.REVIEW,
        State.DELETING,
    }
)
_NOT_SENT_YET = frozenset({State.RESOLVING, State.REVIEW})
_REMOTE_IN_FLIGHT = frozenset({State.SUBMITTING, State.SUBMITTED, State.DONE, State.FETCHING})


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


def _by(note: str | None) -> str:
    return f"by an operator ({note})" if note else "by an operator"


def retry(ledger: Ledger, request_id: int, now: datetime, note: str | None = None) -> Outcome:
    """Put a dead, failed, expired or cancelled request back in the queue, limits reset."""
    request = ledger.requests.get(request_id)
    if request is None:
        return Outcome(False, f"no request {request_id}")
    state = State(request.state)
    if state is State.REJECTED:
        return Outcome(
            False,
            f"request {request_id} was rejected at admission ({request.reason}); it cannot "
            "be retried: correct the row upstream and insert a new one",
        )
    if state in EVER_STORED:
        return Outcome(False, f"request {request_id} is already {state.value}; nothing to retry")
    if request.request_type == "deletion" or ledger.cancels.entries(request_id):
        return Outcome(
            False,
            f"request {request_id} is a deletion; it cannot be queued again (its entries and "
            "receipts stay as the record): insert a new dsar_queue row with request_type "
            "deletion",
        )
    if state not in RETRYABLE:
        return Outcome(
            False,
            f"request {request_id} is {state.value} (in progress); nothing to retry. "
            "Only dead, failed, expired or cancelled requests can be retried",
        )
    reason = f"retry {_by(note)}; it was {state.value}: {request.reason or '-'}"
    moved = ledger.requests.move(
        request_id,
        {state},
        State.QUEUED,
        reason,
        now,
        failures=0,
        expiries=0,
        errors=0,
        next_action_at=None,
    )
    if moved is None:
        return Outcome(False, f"request {request_id} changed state meanwhile; try again")
    return Outcome(
        True, f"request {request_id}: {state.value} -> queued; the next tick submits it again"
    )


def cancel(
    ledger: Ledger,
    request_id: int,
    now: datetime,
    note: str | None = None,
    *,
    privacy: PrivacyApi | None = None,
    clock: Clock | None = None,
) -> Outcome:
    """Stop all work on a request not yet stored. Amplitude's DSAR API has no way to cancel
    a remote job: it is left to finish (or expire) there, and its results are not fetched.
    A deletion under way is taken out of Amplitude's jobs while they allow it
    (``deletion_cancel``: ``privacy``, the project keys' client, and ``clock``, the
    service's, are for it). A request's supplementary requests (``ledger.family``) are
    named, not cancelled with it: each is its own request, cancelled by its id."""
    outcome = _cancel_one(ledger, request_id, now, note, privacy, clock)
    owed = [str(m.id) for m in ledger.supplements.members(request_id) if m.unanswered]
    if not owed:
        return outcome
    return Outcome(
        outcome.ok,
        f"{outcome.message}. Its supplementary request(s) {', '.join(owed)} (Amplitude IDs "
        "its export missed) are not cancelled with it: dsar cancel each by id to stop them",
    )


def _cancel_one(
    ledger: Ledger,
    request_id: int,
    now: datetime,
    note: str | None,
    privacy: PrivacyApi | None,
    clock: Clock | None,
) -> Outcome:
    request = ledger.requests.get(request_id)
    if request is None:
        return Outcome(False, f"no request {request_id}")
    state = State(request.state)
    if state not in CANCELLABLE:
        return Outcome(
            False,
            f"request {request_id} is {state.value}, which is final; nothing to cancel"
            + (" (dsar retry ID first to queue it again)" if state is State.DEAD else ""),
        )
    if state is State.DELETING:
        done, message = cancel_deletion(
            ledger, privacy, request_id, clock or SystemClock(), _by(note)
        )
        return Outcome(done, message)
    parts = [f"cancelled {_by(note)} while {state.value}"]
    if state in _NOT_SENT_YET:
        parts.append("no deletion had been sent to Amplitude")
    if state in _REMOTE_IN_FLIGHT and request.remote_request_id is not None:
        parts.append(
            f"Amplitude request {request.remote_request_id} is not cancelled remotely (the "
            "API cannot); its results will not be fetched"
        )
    stored = [
        f for f in ledger.files.of(request_id, request.remote_request_id) if f.state == "stored"
    ]
    if stored:
        parts.append(f"{len(stored)} file(s) already stored under {request.storage_prefix}/ kept")
    reason = "; ".join(parts)
    moved = ledger.requests.move(
        request_id, {state}, State.CANCELLED, reason, now, next_action_at=None
    )
    if moved is None:
        return Outcome(False, f"request {request_id} changed state meanwhile; try again")
    return Outcome(True, f"request {request_id}: {reason}")
