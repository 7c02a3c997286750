"""The request state machine: which transitions exist, so the ledger can refuse the rest."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"  # admitted, waiting for budget to be submitted
    SUBMITTING = "submitting"  # cost reserved, POST under way (or the process died during it)
    SUBMITTED = "submitted"  # Amplitude has a requestId; polling
    DONE = "done"  # Amplitude finished; files listed, none fetched yet
    FETCHING = "fetching"  # some files stored, some still to fetch
    STORED = "stored"  # every file stored and verified, manifest written (final)
    REJECTED = "rejected"  # bad queue row (final)
    FAILED = "failed"  # Amplitude said failed; waits to be resubmitted
    EXPIRED = "expired"  # results expired before every file was stored; waits to be resubmitted
    DEAD = "dead"  # gave up, with the reason (final)
    CANCELLED = "cancelled"  # an operator stopped it (final)
    # deletions (``request_type`` deletion, or access_and_deletion once its export is stored)
    RESOLVING = "resolving"  # finding the subject's Amplitude IDs in every project
    REVIEW = "review"  # no exact match, only candidates: held for a person to decide
    DELETING = "deleting"  # its entries are with Amplitude's deletion jobs
    DELETED = "deleted"  # every entry verified erased, or nothing to erase (final)
    # retention (``tick.purge``): a stored export's files removed once its time is up
    PURGING = "purging"  # its files are being removed from storage (a purge under way)
    PURGED = "purged"  # its files are removed; names, sizes and sha256 stay as the record (final)


FINAL = frozenset(
    {State.STORED, State.REJECTED, State.DEAD, State.CANCELLED, State.DELETED, State.PURGED}
)
#: Requests whose export was stored at some time: still stored, being purged, or purged.
EVER_STORED = frozenset({State.STORED, State.PURGING, State.PURGED})
#: States waiting for a (re)submission; failed and expired go first, they have waited longest.
SUBMITTABLE = (State.FAILED, State.EXPIRED, State.QUEUED)
#: States with a remote request in flight at Amplitude.
OUTSTANDING = frozenset({State.SUBMITTING, State.SUBMITTED, State.DONE, State.FETCHING})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.SUBMITTING, State.RESOLVING, State.CANCELLED}),
    State.SUBMITTING: frozenset({State.SUBMITTED, State.QUEUED, State.DEAD, State.CANCELLED}),
    State.SUBMITTED: frozenset({State.DONE, State.FAILED, State.DEAD, State.CANCELLED}),
    State.DONE: frozenset(
        {State.FETCHING, State.STORED, State.EXPIRED, State.DEAD, State.CANCELLED}
    ),
    State.FETCHING: frozenset({State.STORED, State.EXPIRED, State.DEAD, State.CANCELLED}),
    # QUEUED from FAILED or EXPIRED: only by an operator's retry (its limits reset)
    State.FAILED: frozenset({State.SUBMITTING, State.DEAD, State.CANCELLED, State.QUEUED}),
    State.EXPIRED: frozenset({State.SUBMITTING, State.DEAD, State.CANCELLED, State.QUEUED}),
    State.DEAD: frozenset({State.QUEUED}),  # only by an operator's retry
    State.CANCELLED: frozenset({State.QUEUED}),  # only by an operator's retry
    # an access_and_deletion request's deletion starts once its export is stored
    # ... and a stored export's files are purged once its retention is over
    State.STORED: frozenset({State.RESOLVING, State.PURGING}),
    State.PURGING: frozenset({State.PURGED}),
    State.PURGED: frozenset(),
    State.RESOLVING: frozenset(
        {State.DELETING, State.REVIEW, State.DELETED, State.DEAD, State.CANCELLED}
    ),
    State.REVIEW: frozenset({State.RESOLVING, State.CANCELLED}),  # by an operator
    State.DELETING: frozenset({State.DELETED, State.DEAD, State.CANCELLED}),
    State.DELETED: frozenset(),
    State.REJECTED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the state machine does not allow."""


def check_transition(current: State, new: State) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current} -> {new} is not a legal transition")
