"""What the ledger hands out and takes in: frozen rows, never ORM objects, so nothing outside
the ledger can change a table by setting an attribute, and nothing reads a row after its
session closed. The request, file and event rows carry the columns' own names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple, TypedDict

from dsar_scheduler.core.states import State


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One row of ``dsar_requests`` (``adapters.db.Request``), as it was when read."""

    id: int
    queue_id: int | None  # None: a supplementary request (``parent_id``)
    external_ref: str | None
    amplitude_id: int | None
    start_date: date | None
    end_date: date | None
    state: str
    reason: str | None
    remote_request_id: int | None
    submissions: int
    failures: int
    expiries: int
    errors: int
    polls: int
    queued_at: datetime
    submitted_at: datetime | None
    first_submitted_at: datetime | None
    done_at: datetime | None
    expires_at: datetime | None
    stored_at: datetime | None
    updated_at: datetime
    next_action_at: datetime | None
    storage_prefix: str | None
    last_polled_at: datetime | None
    #: The legal deadline (``core.deadlines``; none for a request admitted before them).
    regime: str | None = None
    received_at: datetime | None = None
    due_at: datetime | None = None
    extended_until: datetime | None = None
    extension_reason: str | None = None
    #: Retention: when the export was handed over (``dsar delivered``), its files purged.
    delivered_at: datetime | None = None
    purged_at: datetime | None = None
    #: What is asked (access, deletion, access_and_deletion) and the subject by user ID.
    request_type: str = "access"
    user_id: str | None = None
    #: The hash of the request's last audit event (``ledger.events``).
    chain_head: str | None = None
    #: Access by user ID: the Amplitude IDs resolved for the user (``core.coverage``).
    expected_ids: str | None = None
    #: A supplementary request: the request whose export missed its Amplitude ID.
    parent_id: int | None = None


@dataclass(frozen=True, slots=True)
class FileRow:
    """One row of ``dsar_files`` (``adapters.db.File``), as it was when read."""

    id: int
    request_id: int
    remote_request_id: int
    output_index: int
    url: str
    state: str
    name: str
    bytes: int | None
    sha256: str | None
    event_count: int | None
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    stored_at: datetime | None
    #: Its bytes were removed from storage (retention); the row stays as the record.
    purged_at: datetime | None = None
    #: The distinct ``amplitude_id``s of its events (``core.coverage.encode_ids``).
    amplitude_ids: str | None = None


@dataclass(frozen=True, slots=True)
class EventRow:
    """One row of the audit trail, ``dsar_request_events``."""

    id: int
    request_id: int
    at: datetime
    from_state: str | None
    to_state: str
    reason: str
    remote_request_id: int | None
    #: The hash chain (``core.chain``): the event before this one's hash, and this one's
    #: (both ``None`` for an event written before the chain existed).
    prev_hash: str | None = None
    hash: str | None = None


class RequestChanges(TypedDict, total=False):
    """Bookkeeping columns a state change or an update may set besides the state (the keys
    a caller leaves out keep their value)."""

    next_action_at: datetime | None
    errors: int
    failures: int
    expiries: int
    submissions: int
    polls: int
    last_polled_at: datetime | None


@dataclass(frozen=True)
class CallTicket:
    """A reservation of budget for one call; finish it with the outcome."""

    id: int
    kind: str
    cost: int
    reserved_at: datetime | None = None


#: A call's outcome: its ticket, the outcome ("ok", an error kind) and the HTTP status.
CallOutcome = tuple[CallTicket, str, int | None]
#: A poll that found the job still running: (request id, polls so far, next poll).
StillRunning = tuple[int, int, datetime]
#: A file stored and verified: (file id, bytes, sha256, events, its Amplitude IDs encoded).
StoredFile = tuple[int, int, str, int, str]


class PollCandidate(NamedTuple):
    """A submitted request as the planner reads it."""

    id: int
    submitted_at: datetime
    last_polled_at: datetime | None
    next_action_at: datetime | None
    errors: int
    months: int
    #: The legal deadline in force (``None``: the request has none).
    deadline: datetime | None = None


class Admission(NamedTuple):
    """A queue row's new ledger entry (``Queue.admit``)."""

    id: int
    state: State
    reason: str | None
    amplitude_id: int | None


@dataclass(frozen=True)
class Submitted:
    """A POST Amplitude accepted, to record (``Ledger.record_chunk``)."""

    request_id: int
    remote_id: int
    at: datetime
    first_at: datetime
    next_poll: datetime


class CompletionSample(NamedTuple):
    """A request done recently: how long Amplitude took."""

    #: Submission to the finish, the finish taken halfway between the last poll that saw the
    #: job running and the one that saw it done.
    seconds: float
    #: From that finish to the poll that saw it (half the gap between the two polls).
    seen_after: float = 0.0


class CompletionSamples(NamedTuple):
    """Recent completions: every ``every``-th request by id when more finished than the cap
    allows, so that the planner can thin the running requests by the same ids (a cap that
    kept the latest completions against every running request would overweigh the running,
    and make jobs look slower than they are)."""

    samples: list[CompletionSample]
    every: int = 1


class Transition(NamedTuple):
    """A committed state change, handed to the listener (logs and metrics)."""

    request_id: int
    from_state: str | None
    to_state: str
    reason: str
    remote_request_id: int | None
    at: datetime


#: Called with the transitions of each committed transaction.
TransitionListener = Callable[[Sequence[Transition]], None]


class StoreNote(NamedTuple):
    """A manifest that may have been written without its request being stored
    (``Files.begin_store``)."""

    request_id: int
    manifest_key: str
    #: The request's state now ("" if the request is gone).
    state: str


@dataclass(frozen=True)
class Snapshot:
    """What the metrics and ``dsar status`` show, computed from the ledger alone."""

    queue_pending: int
    by_state: dict[str, int]
    cost_in_window: int
    earliest_unfetched_expiry: datetime | None
    oldest_outstanding_since: datetime | None
    past_sla: int
    pending_files: int
    stored_files: int
    stored_bytes: int
    last_ok_tick: datetime | None
    rate_limited_until: datetime | None


@dataclass(frozen=True)
class QueueFloor:
    """Where admission starts reading the queue. ``floor``: every queue row up to this id
    has its ledger row. ``seen``: the highest queue id when the last admission began; the
    next floor never passes it, so a row whose id was taken before then but which committed
    after a later row had a whole tick to commit before the floor moves past it."""

    floor: int
    seen: int
