"""The ledger: every read and write the tick makes, each write one short transaction.

Three invariants live here:
- the budget: a call's cost is reserved (a row in ``dsar_api_calls``) before the call is sent,
  under a lock shared by every process, and only if the cost over the last hour stays within the
  limit; a 429 sets a shared backoff that every replica respects;
- the state machine: a state change is a compare-and-set on the current state, checked against
  ``states.TRANSITIONS`` and written to the audit trail with its reason in the same transaction;
- the tick lease: one tick at a time across replicas; a lost lease stops the tick's work.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    Integer,
    String,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from dsar_scheduler.adapters.db import (
    ApiCall,
    Event,
    File,
    QueueRow,
    Request,
    ServiceState,
    Tick,
    UTCDateTime,
    bulk_insert,
    bulk_update,
    on_postgres,
    one_of,
    write_transaction,
)
from dsar_scheduler.core.states import FINAL, OUTSTANDING, SUBMITTABLE, State, check_transition
from dsar_scheduler.core.validation import Accepted, RawQueueRow, Rejected
from dsar_scheduler.ledger.totals import StoredTotals

WINDOW = timedelta(hours=1)
#: How far back the 429s that lengthen a backoff are counted.
RATE_LIMIT_HISTORY = timedelta(hours=6)
#: Reservations a stopped process left are looked for this far back.
UNKNOWN_CALL_HISTORY = 2 * WINDOW
#: The call history the ledger itself reads; pruning never comes closer to now than this.
CALL_HISTORY_NEEDED = max(WINDOW, UNKNOWN_CALL_HISTORY, RATE_LIMIT_HISTORY)
BUDGET_LOCK = "dsar-budget"
BACKOFF_KEY = "rate_limited_until"
TICK_LEASE = "tick-lease"
QUEUE_FLOOR_KEY = "queue-floor"


#: A file of its request's current remote job (the files of a job that failed or expired and
#: was resubmitted stay in the table, under the old remote id).
_OF_CURRENT_JOB = and_(
    File.request_id == Request.id, File.remote_request_id == Request.remote_request_id
)


@dataclass(frozen=True)
class CallTicket:
    """A reservation of budget for one call; finish it with the outcome."""

    id: int
    kind: str
    cost: int
    reserved_at: datetime | None = None


class PollCandidate(NamedTuple):
    """A submitted request as the planner reads it (columns only, no ORM object)."""

    id: int
    submitted_at: datetime
    last_polled_at: datetime | None
    next_action_at: datetime | None
    errors: int
    months: int


class Admission(NamedTuple):
    """A queue row's new ledger entry (``Ledger.admit``)."""

    id: int
    state: State
    reason: str | None
    amplitude_id: int | None


@dataclass(frozen=True)
class Submitted:
    """A POST Amplitude accepted, to record (``Ledger.settle``)."""

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


class Transition(NamedTuple):
    """A committed state change, handed to the listener (logs and metrics)."""

    request_id: int
    from_state: str | None
    to_state: str
    reason: str
    remote_request_id: int | None
    at: datetime


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


class Ledger:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        budget_limit: int,
        on_transitions: Callable[[Sequence[Transition]], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.budget_limit = budget_limit
        #: Called with the transitions of each committed transaction (logs and metrics).
        self.on_transitions = on_transitions
        self.stored_totals = StoredTotals()

    def _notify(self, transitions: Sequence[Transition]) -> None:
        if self.on_transitions is not None and transitions:
            self.on_transitions(transitions)

    # -- budget ------------------------------------------------------------------------------

    @staticmethod
    def _spent(session: Session, now: datetime) -> int:
        total = session.scalar(
            select(func.coalesce(func.sum(ApiCall.cost), 0)).where(
                ApiCall.counted_at > now - WINDOW
            )
        )
        return int(total or 0)

    def spent(self, now: datetime) -> int:
        with self.sessions() as session:
            return self._spent(session, now)

    def headroom(self, now: datetime) -> int:
        """Cost still available in the current window (0 while a 429 backoff holds)."""
        with self.sessions() as session:
            if self._backoff(session, now) is not None:
                return 0
            return max(0, self.budget_limit - self._spent(session, now))

    @staticmethod
    def _backoff(session: Session, now: datetime) -> datetime | None:
        row = session.get(ServiceState, BACKOFF_KEY)
        if row is None or row.until is None or row.until <= now:
            return None
        return row.until

    def backoff_until(self, now: datetime) -> datetime | None:
        with self.sessions() as session:
            return self._backoff(session, now)

    def reserve(
        self, kind: str, cost: int, now: datetime, request_id: int | None = None
    ) -> CallTicket | None:
        """Reserve ``cost`` for a call about to be sent, or ``None`` if it does not fit."""
        with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
            if self._backoff(session, now) is not None:
                return None
            if self._spent(session, now) + cost > self.budget_limit:
                return None
            call = ApiCall(
                kind=kind,
                cost=cost,
                reserved_at=now,
                counted_at=now,
                request_id=request_id,
                outcome="reserved",
            )
            session.add(call)
            session.flush()
            return CallTicket(id=call.id, kind=kind, cost=cost, reserved_at=now)

    def finish_call(
        self, ticket: CallTicket, outcome: str, status_code: int | None, now: datetime
    ) -> None:
        with write_transaction(self.sessions) as session:
            session.execute(
                update(ApiCall)
                .where(ApiCall.id == ticket.id)
                .values(outcome=outcome, status_code=status_code, finished_at=now, counted_at=now)
            )

    def release_call(self, ticket: CallTicket, now: datetime) -> None:
        """The reserved call was not sent after all: it costs nothing."""
        with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
            session.execute(
                update(ApiCall)
                .where(ApiCall.id == ticket.id)
                .values(cost=0, outcome="not_sent", finished_at=now)
            )

    def mark_unknown_calls(self, now: datetime) -> list[tuple[str, int]]:
        """Reservations a stopped process left without an outcome become ``unknown``.

        Call only while holding the tick lease and before reserving anything: every
        ``reserved`` row is then from an earlier tick that died between reserving a call and
        recording its answer. Whether the call reached Amplitude cannot be known, so its cost
        stays counted (the safe side for the budget). Returns (kind, cost) of each."""
        recent = now - UNKNOWN_CALL_HISTORY  # older ones no longer count towards any window
        with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
            rows = session.execute(
                select(ApiCall.id, ApiCall.kind, ApiCall.cost).where(
                    ApiCall.outcome == "reserved", ApiCall.reserved_at > recent
                )
            ).all()
            if rows:
                session.execute(
                    update(ApiCall)
                    .where(ApiCall.id.in_([r.id for r in rows]))
                    # counted from now: Amplitude charged it at some moment before this one
                    .values(outcome="unknown", finished_at=now, counted_at=now)
                )
            return [(str(r.kind), int(r.cost)) for r in rows]

    def set_backoff(self, until: datetime, now: datetime, reason: str) -> None:
        """Stop every replica's calls until ``until`` (never shortens a longer backoff)."""
        with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
            row = session.get(ServiceState, BACKOFF_KEY)
            if row is None:
                session.add(
                    ServiceState(key=BACKOFF_KEY, value=reason, until=until, updated_at=now)
                )
            elif row.until is None or row.until < until:
                row.until, row.value, row.updated_at = until, reason, now

    def count_calls(self, outcome: str, since: datetime) -> int:
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(ApiCall)
                    .where(ApiCall.outcome == outcome, ApiCall.reserved_at > since)
                )
                or 0
            )

    def prune_calls(self, before: datetime, limit: int) -> int:
        """Delete at most ``limit`` call rows that stopped counting before ``before``, oldest
        first, in one short transaction (callers loop; no lock is held for long). Returns
        how many went. ``before`` must lie well outside every window the ledger reads
        (``CALL_HISTORY_NEEDED``)."""
        oldest = (
            select(ApiCall.id)
            .where(ApiCall.counted_at < before, ApiCall.reserved_at < before)
            .order_by(ApiCall.counted_at)
            .limit(limit)
        )
        with write_transaction(self.sessions) as session:
            result = session.execute(
                delete(ApiCall)
                .where(ApiCall.id.in_(oldest.scalar_subquery()))
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def claim_chore(self, key: str, now: datetime, every: timedelta) -> bool:
        """Take a periodic chore (housekeeping) if it is due, and make it not due again for
        ``every``. Shared through the database, so replicas and ``dsar tick`` runs from cron
        do it about once per ``every`` between them."""
        with write_transaction(self.sessions, lock=key) as session:
            row = session.get(ServiceState, key)
            if row is not None and row.until is not None and row.until > now:
                return False
            if row is None:
                session.add(ServiceState(key=key, value=None, until=now + every, updated_at=now))
            else:
                row.until, row.updated_at = now + every, now
            return True

    def chore_due(self, key: str, when: datetime) -> None:
        """Make a chore due again at ``when`` (it stopped with work left)."""
        with write_transaction(self.sessions, lock=key) as session:
            row = session.get(ServiceState, key)
            if row is not None:
                row.until = when

    # -- the tick lease ----------------------------------------------------------------------

    def acquire_lease(
        self,
        owner: str,
        now: datetime,
        ttl: timedelta,
        holder_gone: Callable[[str], bool] | None = None,
    ) -> bool:
        """Take or renew the tick lease; ``False`` if another live owner holds it.

        ``holder_gone(owner)`` may say that the holder certainly no longer runs (killed on
        this host, see ``liveness``): its lease is taken over without waiting for the TTL."""
        with write_transaction(self.sessions, lock=TICK_LEASE) as session:
            row = session.get(ServiceState, TICK_LEASE)
            if row is None:
                session.add(
                    ServiceState(key=TICK_LEASE, value=owner, until=now + ttl, updated_at=now)
                )
                return True
            if (
                row.value == owner
                or row.until is None
                or row.until <= now
                or (holder_gone is not None and row.value is not None and holder_gone(row.value))
            ):
                row.value, row.until, row.updated_at = owner, now + ttl, now
                return True
            return False

    def release_lease(self, owner: str, now: datetime) -> None:
        with write_transaction(self.sessions, lock=TICK_LEASE) as session:
            row = session.get(ServiceState, TICK_LEASE)
            if row is not None and row.value == owner:
                row.until, row.updated_at = now, now

    # -- ticks -------------------------------------------------------------------------------

    def start_tick(self, owner: str, now: datetime) -> int:
        with write_transaction(self.sessions) as session:
            tick = Tick(owner=owner, started_at=now, outcome="running")
            session.add(tick)
            session.flush()
            return tick.id

    def finish_tick(self, tick_id: int, outcome: str, summary: str, now: datetime) -> None:
        with write_transaction(self.sessions) as session:
            session.execute(
                update(Tick)
                .where(Tick.id == tick_id)
                .values(outcome=outcome, summary=summary, finished_at=now)
            )

    # -- admission ---------------------------------------------------------------------------

    def queue_floor(self, now: datetime) -> QueueFloor:
        """Where admission starts reading the queue (``QueueFloor``); a floor of 0 when none
        is known or a full sweep is due (``set_queue_floor``)."""
        with self.sessions() as session:
            return _queue_floor(session, now)

    def set_queue_floor(self, floor: QueueFloor, now: datetime, sweep_due: datetime | None) -> None:
        """Record ``floor``; ``sweep_due``: when the floor stops being trusted and admission
        reads the whole queue again (``None``: keep the date set by the last sweep)."""
        with write_transaction(self.sessions) as session:
            row = session.get(ServiceState, QUEUE_FLOOR_KEY)
            if row is None:
                row = ServiceState(key=QUEUE_FLOOR_KEY, until=sweep_due or now)
                session.add(row)
            elif sweep_due is not None:
                row.until = sweep_due
            row.value, row.updated_at = f"{floor.floor} {floor.seen}", now

    def last_queue_id(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.max(QueueRow.id))) or 0)

    def pending_queue_rows(self, limit: int, after: int = 0) -> list[RawQueueRow]:
        """Queue rows with no ledger entry yet, oldest first, every column read as text.
        ``after``: the last queue id already looked at this tick (each page starts past the
        previous one: fewer rows to skip, and a row that could not be admitted at all is not
        read again until the next tick)."""
        with self.sessions() as session:
            rows = session.execute(
                select(
                    QueueRow.id,
                    cast(QueueRow.amplitude_id, String),
                    cast(QueueRow.start_date, String),
                    cast(QueueRow.end_date, String),
                    cast(QueueRow.external_ref, String),
                    cast(QueueRow.requested_by, String),
                )
                .where(*_unadmitted(after))
                .order_by(QueueRow.id)
                .limit(limit)
            ).all()
        return [RawQueueRow(*row) for row in rows]

    def admit(
        self, verdicts: Sequence[tuple[RawQueueRow, Accepted | Rejected]], now: datetime
    ) -> list[Admission]:
        """Write one ledger row (queued or rejected) per queue row; duplicates of an earlier
        ``external_ref`` are rejected here, inside the same transaction that checks them."""
        created: list[Admission] = []
        notes: list[Transition] = []
        with write_transaction(self.sessions, lock="dsar-admit") as session:
            refs = {row.external_ref for row, _ in verdicts if row.external_ref}
            taken = (
                dict(
                    session.execute(
                        select(Request.external_ref, Request.queue_id).where(
                            one_of(session, Request.external_ref, refs),
                            Request.state != State.REJECTED,
                        )
                    ).all()
                )
                if refs
                else {}
            )
            rows: list[dict[str, Any]] = []
            reasons: list[str] = []
            for row, verdict in verdicts:
                if isinstance(verdict, Accepted) and row.external_ref in taken:
                    verdict = Rejected(
                        f"duplicate external_ref: queue row {taken[row.external_ref]} "
                        "already carries it"
                    )
                values: dict[str, Any] = {
                    "queue_id": row.queue_id,
                    "external_ref": row.external_ref,
                    "queued_at": now,
                    "updated_at": now,
                    "submissions": 0,
                    "failures": 0,
                    "expiries": 0,
                    "errors": 0,
                    "polls": 0,
                    "amplitude_id": None,
                    "start_date": None,
                    "end_date": None,
                    "reason": None,
                }
                if isinstance(verdict, Accepted):
                    values.update(
                        amplitude_id=verdict.amplitude_id,
                        start_date=verdict.start,
                        end_date=verdict.end,
                        state=State.QUEUED,
                    )
                    reasons.append("admitted")
                    if row.external_ref:
                        taken[row.external_ref] = row.queue_id
                else:
                    values.update(state=State.REJECTED, reason=verdict.reason)
                    reasons.append(verdict.reason)
                rows.append(values)
            # Bulk inserts (a COPY on PostgreSQL), the new ids read back by queue row.
            if rows:
                bulk_insert(session, Request, rows)
                # by range, not a list of 500 parameters; the range may hold older rows too
                queue_ids = [values["queue_id"] for values in rows]
                ids = dict(
                    session.execute(
                        select(Request.queue_id, Request.id).where(
                            Request.queue_id.between(min(queue_ids), max(queue_ids))
                        )
                    ).all()
                )
                bulk_insert(
                    session,
                    Event,
                    [
                        {
                            "request_id": ids[values["queue_id"]],
                            "at": now,
                            "from_state": None,
                            "to_state": values["state"],
                            "reason": reason,
                            "remote_request_id": None,
                        }
                        for values, reason in zip(rows, reasons, strict=True)
                    ],
                )
            for values, reason in zip(rows, reasons, strict=True):
                rid = ids[values["queue_id"]]
                created.append(
                    Admission(rid, values["state"], values["reason"], values["amplitude_id"])
                )
                notes.append(Transition(rid, None, values["state"], reason, None, now))
        self._notify(notes)
        return created

    # -- the state machine -------------------------------------------------------------------

    def move(
        self,
        request_id: int,
        expected: Collection[State],
        new: State,
        reason: str,
        now: datetime,
        **changes: Any,
    ) -> Request | None:
        """Compare-and-set ``state`` from one of ``expected`` to ``new``, with an audit event.

        Returns the updated request, or ``None`` if its state had moved on (someone else acted).
        """
        with write_transaction(self.sessions) as session:
            moved = self._move_in(session, request_id, expected, new, reason, now, changes)
        if moved is None:
            return None
        self._notify([moved[1]])
        return moved[0]

    @staticmethod
    def _move_in(
        session: Session,
        request_id: int,
        expected: Collection[State],
        new: State,
        reason: str,
        now: datetime,
        changes: dict[str, Any],
    ) -> tuple[Request, Transition] | None:
        """``move`` inside the caller's transaction; the transition is for ``_notify``."""
        request = session.scalar(select(Request).where(Request.id == request_id).with_for_update())
        if request is None or State(request.state) not in expected:
            return None
        check_transition(State(request.state), new)
        previous = request.state
        request.state, request.updated_at = new, now
        # The request's visible reason is the event's, unless the caller says otherwise.
        request.reason = changes.pop("request_reason", reason)
        for key, value in changes.items():
            setattr(request, key, value)
        session.add(
            Event(
                request_id=request_id,
                at=now,
                from_state=previous,
                to_state=new,
                reason=reason,
                remote_request_id=request.remote_request_id,
            )
        )
        return request, Transition(
            request_id, previous, new, reason, request.remote_request_id, now
        )

    # -- the final transition ----------------------------------------------------------------
    #
    # Writing the manifest and moving the request to ``stored`` cannot be one atomic step (one
    # is in storage, the other in the database), and ``dsar cancel`` may land in between. The
    # rule: whichever commits its compare-and-set first wins. A stored request always has its
    # manifest; a request that is not stored never keeps one. Before the manifest is written,
    # a note naming its key is committed (``begin_store``); the move to ``stored`` removes the
    # note in the same transaction (``finish_store``). If the move loses (the request was
    # cancelled meanwhile), the manifest is deleted and the note with it (``store_withdrawn``);
    # a process that dies in between leaves the note, and the next tick finishes the job
    # (``store_notes``).

    def begin_store(self, request_id: int, manifest_key: str, now: datetime) -> bool:
        """Note that ``manifest_key`` is about to be written for a request still ``done`` or
        ``fetching``; ``False`` (write nothing) if it is not."""
        with write_transaction(self.sessions) as session:
            state = session.scalar(
                select(Request.state).where(Request.id == request_id).with_for_update()
            )
            if state not in (State.DONE, State.FETCHING):
                return False
            key = _store_note(request_id)
            row = session.get(ServiceState, key)
            if row is None:
                session.add(ServiceState(key=key, value=manifest_key, until=None, updated_at=now))
            else:
                row.value, row.updated_at = manifest_key, now
            return True

    def finish_store(self, request_id: int, reason: str, now: datetime) -> Request | None:
        """The final compare-and-set: ``done``/``fetching`` to ``stored``, and the note of its
        manifest removed, in one transaction. ``None`` if the request had moved on (a cancel
        won): its manifest must then go (``store_withdrawn``)."""
        with write_transaction(self.sessions) as session:
            moved = self._move_in(
                session,
                request_id,
                {State.DONE, State.FETCHING},
                State.STORED,
                reason,
                now,
                {"stored_at": now, "request_reason": None},
            )
            if moved is not None:
                session.execute(
                    delete(ServiceState).where(ServiceState.key == _store_note(request_id))
                )
        if moved is None:
            return None
        self._notify([moved[1]])
        return moved[0]

    def store_notes(self) -> list[tuple[int, str, str]]:
        """Manifests that may have been written without the request being stored: (request
        id, manifest key, the request's state now)."""
        with self.sessions() as session:
            notes = {
                int(key.removeprefix(STORE_NOTE)): str(value)
                for key, value in session.execute(
                    select(ServiceState.key, ServiceState.value).where(
                        ServiceState.key.startswith(STORE_NOTE, autoescape=True)
                    )
                )
            }
            if not notes:
                return []
            states = dict(
                session.execute(
                    select(Request.id, Request.state).where(Request.id.in_(list(notes)))
                ).all()
            )
        return [(rid, key, str(states.get(rid, ""))) for rid, key in sorted(notes.items())]

    def store_withdrawn(self, request_id: int, reason: str | None, now: datetime) -> None:
        """The manifest noted for a request that is not stored has been deleted: drop the
        note, and (``reason``) say so in its audit trail, without changing its state."""
        with write_transaction(self.sessions) as session:
            session.execute(delete(ServiceState).where(ServiceState.key == _store_note(request_id)))
            request = session.scalar(
                select(Request).where(Request.id == request_id).with_for_update()
            )
            if reason is not None and request is not None and request.state != State.STORED:
                session.add(
                    Event(
                        request_id=request_id,
                        at=now,
                        from_state=request.state,
                        to_state=request.state,
                        reason=reason,
                        remote_request_id=request.remote_request_id,
                    )
                )

    def update(self, request_id: int, now: datetime, **changes: Any) -> None:
        """Change bookkeeping columns (next action time, error counts) without a transition."""
        with write_transaction(self.sessions) as session:
            session.execute(
                update(Request).where(Request.id == request_id).values(updated_at=now, **changes)
            )

    def get(self, request_id: int) -> Request | None:
        with self.sessions() as session:
            return session.get(Request, request_id)

    def events(self, request_id: int) -> list[Event]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Event).where(Event.request_id == request_id).order_by(Event.id)
                )
            )

    def in_state(self, *states: State) -> list[Request]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Request).where(Request.state.in_(states)).order_by(Request.id)
                )
            )

    def due_polls(self, now: datetime, limit: int) -> list[Request]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Request)
                    .where(
                        Request.state == State.SUBMITTED,
                        or_(Request.next_action_at.is_(None), Request.next_action_at <= now),
                    )
                    .order_by(Request.next_action_at, Request.id)
                    .limit(limit)
                )
            )

    def due_submits(self, now: datetime, limit: int) -> list[Request]:
        """Requests waiting to be (re)submitted: failed and expired first, then oldest."""
        priority = case(
            {State.FAILED.value: 0, State.EXPIRED.value: 0}, value=Request.state, else_=1
        )
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Request)
                    .where(
                        Request.state.in_(SUBMITTABLE),
                        or_(Request.next_action_at.is_(None), Request.next_action_at <= now),
                    )
                    .order_by(priority, Request.id)
                    .limit(limit)
                )
            )

    def count_in(self, states: Iterable[State]) -> int:
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Request).where(Request.state.in_(list(states)))
                )
                or 0
            )

    # -- files -------------------------------------------------------------------------------

    def record_done(
        self,
        request_id: int,
        remote_id: int,
        urls: Sequence[str],
        expires: datetime,
        now: datetime,
        names: Sequence[str],
        prefix: str,
    ) -> Request | None:
        """Move a request to ``done`` and list its files, in one transaction."""
        with write_transaction(self.sessions) as session:
            request = session.scalar(
                select(Request).where(Request.id == request_id).with_for_update()
            )
            if request is None or request.state != State.SUBMITTED:
                return None
            if request.remote_request_id != remote_id:
                return None
            check_transition(State.SUBMITTED, State.DONE)
            request.state, request.done_at, request.expires_at = State.DONE, now, expires
            request.updated_at, request.errors, request.next_action_at = now, 0, None
            request.reason, request.storage_prefix = f"done with {len(urls)} file(s)", prefix
            for index, (url, name) in enumerate(zip(urls, names, strict=True)):
                session.add(
                    File(
                        request_id=request_id,
                        remote_request_id=remote_id,
                        output_index=index,
                        url=url,
                        name=name,
                        state="pending",
                        attempts=0,
                    )
                )
            reason = f"done: {len(urls)} file(s), expires {expires.isoformat()}"
            session.add(
                Event(
                    request_id=request_id,
                    at=now,
                    from_state=State.SUBMITTED,
                    to_state=State.DONE,
                    remote_request_id=remote_id,
                    reason=reason,
                )
            )
        self._notify([Transition(request_id, State.SUBMITTED, State.DONE, reason, remote_id, now)])
        return request

    def completed_unrecorded(self) -> list[Request]:
        """Finished requests with every file stored but no manifest recorded: a process
        stopped between storing the last file and writing the manifest."""
        pending = (
            select(File.id)
            .where(
                _OF_CURRENT_JOB,
                File.state != "stored",
            )
            .exists()
        )
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Request).where(Request.state.in_((State.DONE, State.FETCHING)), ~pending)
                )
            )

    def pending_files(self, now: datetime, limit: int) -> list[tuple[File, Request]]:
        """Files still to fetch, most urgent expiry first (losing a result is the worst)."""
        with self.sessions() as session:
            rows = session.execute(
                select(File, Request)
                .join(
                    Request,
                    _OF_CURRENT_JOB,
                )
                .where(
                    Request.state.in_((State.DONE, State.FETCHING)),
                    File.state == "pending",
                    or_(File.next_attempt_at.is_(None), File.next_attempt_at <= now),
                )
                .order_by(Request.expires_at, File.request_id, File.output_index)
                .limit(limit)
            ).all()
            return list(rows)

    def count_pending_files(self) -> int:
        """Files of finished requests still to fetch (the budget the submit step keeps back)."""
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(File)
                    .join(
                        Request,
                        _OF_CURRENT_JOB,
                    )
                    .where(Request.state.in_((State.DONE, State.FETCHING)), File.state == "pending")
                )
                or 0
            )

    def files_of(self, request_id: int, remote_id: int | None) -> list[File]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(File)
                    .where(File.request_id == request_id, File.remote_request_id == remote_id)
                    .order_by(File.output_index)
                )
            )

    def file_stored(self, file_id: int, size: int, sha256: str, events: int, now: datetime) -> None:
        with write_transaction(self.sessions) as session:
            session.execute(
                update(File)
                .where(File.id == file_id)
                .values(
                    state="stored",
                    bytes=size,
                    sha256=sha256,
                    event_count=events,
                    stored_at=now,
                    last_error=None,
                    next_attempt_at=None,
                )
            )

    def file_failed(self, file_id: int, error: str, retry_at: datetime | None) -> int:
        """Count a failed attempt; returns the attempts so far."""
        with write_transaction(self.sessions) as session:
            file = session.get(File, file_id)
            assert file is not None
            file.attempts += 1
            file.last_error, file.next_attempt_at = error[:500], retry_at
            return file.attempts

    # -- planning and batched calls ----------------------------------------------------------

    def reserve_many(
        self, kind: str, cost: int, now: datetime, request_ids: Sequence[int | None]
    ) -> list[CallTicket]:
        """Reserve one call of ``cost`` per entry of ``request_ids``, in order, as many as fit
        (none during a 429 backoff): one transaction, one budget query."""
        if not request_ids:
            return []
        with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
            if self._backoff(session, now) is not None:
                return []
            room = self.budget_limit - self._spent(session, now)
            fit = len(request_ids) if cost <= 0 else max(0, min(len(request_ids), room // cost))
            if fit == 0:
                return []
            ids = _insert_calls(session, kind, cost, now, request_ids[:fit])
        return [CallTicket(id=i, kind=kind, cost=cost, reserved_at=now) for i in ids]

    @staticmethod
    def _finish_calls(
        session: Session,
        calls: Sequence[tuple[CallTicket, str, int | None]],
        now: datetime,
    ) -> None:
        if calls:
            bulk_update(
                session,
                ApiCall,
                [
                    {
                        "id": ticket.id,
                        "outcome": outcome,
                        "status_code": code,
                        "finished_at": now,
                        "counted_at": now,
                    }
                    for ticket, outcome, code in calls
                ],
            )

    def finish_calls(
        self, calls: Sequence[tuple[CallTicket, str, int | None]], now: datetime
    ) -> None:
        """Record the outcome of several calls at once (``finish_call`` for each)."""
        if calls:
            with write_transaction(self.sessions) as session:
                self._finish_calls(session, calls, now)

    def release_calls(self, tickets: Sequence[CallTicket], now: datetime) -> None:
        """Reservations that were not sent after all: they cost nothing."""
        if tickets:
            with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
                bulk_update(
                    session,
                    ApiCall,
                    [
                        {"id": t.id, "cost": 0, "outcome": "not_sent", "finished_at": now}
                        for t in tickets
                    ],
                )

    def settle(
        self,
        now: datetime,
        calls: Sequence[tuple[CallTicket, str, int | None]],
        running: Sequence[tuple[int, int, datetime]],
        stored: Sequence[tuple[int, int, str, int]],
        submitted: Sequence[Submitted] = (),
    ) -> None:
        """One transaction for a chunk of calls: each call's outcome; ``running`` (request
        id, polls, next poll) were seen still running now; ``stored`` (file id, bytes,
        sha256, events) were stored and verified; ``submitted`` were accepted by Amplitude
        (each moved from ``submitting`` by compare-and-set, with its audit event)."""
        notes: list[Transition] = []
        with write_transaction(self.sessions) as session:
            if submitted:
                # compare-and-set for the batch: lock the rows still ``submitting`` (an
                # operator may have cancelled one meanwhile), then update those by id
                still = set(
                    session.scalars(
                        select(Request.id)
                        .where(
                            one_of(session, Request.id, [x.request_id for x in submitted]),
                            Request.state == State.SUBMITTING,
                        )
                        .with_for_update()
                    )
                )
                moved = [x for x in submitted if x.request_id in still]
                reasons = [f"submitted as Amplitude request {x.remote_id}" for x in moved]
                if moved:
                    bulk_update(
                        session,
                        Request,
                        [
                            {
                                "id": x.request_id,
                                "state": State.SUBMITTED,
                                "reason": reason,
                                "remote_request_id": x.remote_id,
                                "submitted_at": x.at,
                                "first_submitted_at": x.first_at,
                                "next_action_at": x.next_poll,
                                "errors": 0,
                                "polls": 0,
                                "last_polled_at": None,
                                "done_at": None,
                                "expires_at": None,
                                "updated_at": x.at,
                            }
                            for x, reason in zip(moved, reasons, strict=True)
                        ],
                    )
                    bulk_insert(
                        session,
                        Event,
                        [
                            {
                                "request_id": x.request_id,
                                "at": x.at,
                                "from_state": State.SUBMITTING,
                                "to_state": State.SUBMITTED,
                                "reason": reason,
                                "remote_request_id": x.remote_id,
                            }
                            for x, reason in zip(moved, reasons, strict=True)
                        ],
                    )
                    notes += [
                        Transition(
                            x.request_id,
                            State.SUBMITTING,
                            State.SUBMITTED,
                            reason,
                            x.remote_id,
                            x.at,
                        )
                        for x, reason in zip(moved, reasons, strict=True)
                    ]
            self._finish_calls(session, calls, now)
            if running:
                bulk_update(
                    session,
                    Request,
                    [
                        {
                            "id": rid,
                            "polls": polls,
                            "errors": 0,
                            "last_polled_at": now,
                            "next_action_at": next_at,
                            "updated_at": now,
                        }
                        for rid, polls, next_at in running
                    ],
                )
            if stored:
                bulk_update(
                    session,
                    File,
                    [
                        {
                            "id": file_id,
                            "state": "stored",
                            "bytes": size,
                            "sha256": sha256,
                            "event_count": events,
                            "stored_at": now,
                            "last_error": None,
                            "next_attempt_at": None,
                        }
                        for file_id, size, sha256, events in stored
                    ],
                )
        self._notify(notes)

    def start_submits(self, requests: Sequence[Request], now: datetime) -> set[int]:
        """Move a chunk of waiting requests to ``submitting`` in one transaction, each by
        compare-and-set with its audit event; the ids moved (the others moved on meanwhile).
        Their ``submissions`` count the attempt, as ``move`` would."""
        ids = [r.id for r in requests]
        notes: list[Transition] = []
        with write_transaction(self.sessions) as session:
            rows = session.execute(
                select(Request.id, Request.state, Request.submissions, Request.remote_request_id)
                .where(one_of(session, Request.id, ids), Request.state.in_(SUBMITTABLE))
                .with_for_update()
            ).all()
            if not rows:
                return set()
            changes, events = [], []
            for row in rows:
                check_transition(State(row.state), State.SUBMITTING)
                reason = f"submitting (attempt {row.submissions + 1})"
                changes.append(
                    {
                        "id": row.id,
                        "state": State.SUBMITTING,
                        "submissions": row.submissions + 1,
                        "reason": reason,
                        "updated_at": now,
                    }
                )
                events.append(
                    {
                        "request_id": row.id,
                        "at": now,
                        "from_state": row.state,
                        "to_state": State.SUBMITTING,
                        "reason": reason,
                        "remote_request_id": row.remote_request_id,
                    }
                )
                notes.append(
                    Transition(
                        row.id, row.state, State.SUBMITTING, reason, row.remote_request_id, now
                    )
                )
            bulk_update(session, Request, changes)
            bulk_insert(session, Event, events)
        self._notify(notes)
        return {row.id for row in rows}

    def submitted(self, ids: Sequence[int]) -> list[Request]:
        """The requests among ``ids`` still ``submitted``, in the order of ``ids``."""
        if not ids:
            return []
        with self.sessions() as session:
            found = {
                r.id: r
                for r in session.scalars(
                    select(Request).where(
                        one_of(session, Request.id, ids), Request.state == State.SUBMITTED
                    )
                )
            }
        return [found[i] for i in ids if i in found]

    def poll_candidates(self, due_by: datetime | None = None) -> list[PollCandidate]:
        """Submitted requests (only those due by ``due_by`` if given), as plain rows."""
        query = select(
            Request.id,
            Request.submitted_at,
            Request.last_polled_at,
            Request.next_action_at,
            Request.errors,
            Request.start_date,
            Request.end_date,
        ).where(Request.state == State.SUBMITTED)
        if due_by is not None:
            query = query.where(
                or_(Request.next_action_at.is_(None), Request.next_action_at <= due_by)
            ).order_by(Request.next_action_at, Request.id)
        with self.sessions() as session:
            # submitted: the submission time is set (the column is nullable)
            rows: Sequence[Any] = session.execute(query).all()
        # Unpacked by position: a Row's attribute lookups cost more than the query at 10k rows.
        return [
            PollCandidate(id, submitted, polled, due, errors, _months(start, end))
            for id, submitted, polled, due, errors, start, end in rows
        ]

    def completion_samples(self, since: datetime, limit: int) -> list[CompletionSample]:
        """Requests that Amplitude finished after ``since`` (most recent first)."""
        with self.sessions() as session:
            # both times are set on these rows (the columns are nullable)
            rows: Sequence[Any] = session.execute(
                select(Request.submitted_at, Request.last_polled_at, Request.done_at)
                .where(Request.done_at > since, Request.submitted_at.is_not(None))
                .order_by(Request.done_at.desc())
                .limit(limit)
            ).all()
        out = []
        for submitted, polled, done in rows:
            seen = polled or submitted
            finished = seen + (done - seen) / 2
            out.append(
                CompletionSample(
                    seconds=max(0.0, (finished - submitted).total_seconds()),
                    seen_after=max(0.0, (done - finished).total_seconds()),
                )
            )
        return out

    def files_seen(self, since: datetime, limit: int) -> tuple[int, int]:
        """(files, months of their date ranges) of the ``limit`` requests finished most
        recently after ``since``: what a month of a request's range yields in files. (A mean,
        so a few hundred requests tell it; counting every sample's files cost more than the
        rest of a tick's planning.)"""
        recent = (
            select(Request.id, Request.remote_request_id, Request.start_date, Request.end_date)
            .where(Request.done_at > since, Request.submitted_at.is_not(None))
            .order_by(Request.done_at.desc())
            .limit(limit)
            .subquery()
        )
        with self.sessions() as session:
            rows = session.execute(
                select(recent.c.start_date, recent.c.end_date, func.count(File.id))
                .select_from(recent)
                .outerjoin(
                    File,
                    and_(
                        File.request_id == recent.c.id,
                        File.remote_request_id == recent.c.remote_request_id,
                    ),
                )
                .group_by(recent.c.id, recent.c.start_date, recent.c.end_date)
            ).all()
        return sum(int(n) for _, _, n in rows), sum(_months(start, end) for start, end, _ in rows)

    def submit_head_months(self, now: datetime, limit: int) -> list[int]:
        """Months in the date ranges of the next requests to submit."""
        priority = case(
            {State.FAILED.value: 0, State.EXPIRED.value: 0}, value=Request.state, else_=1
        )
        with self.sessions() as session:
            rows = session.execute(
                select(Request.start_date, Request.end_date)
                .where(
                    Request.state.in_(SUBMITTABLE),
                    or_(Request.next_action_at.is_(None), Request.next_action_at <= now),
                )
                .order_by(priority, Request.id)
                .limit(limit)
            ).all()
        return [_months(row.start_date, row.end_date) for row in rows]

    def freed_by(self, now: datetime, when: datetime) -> int:
        """Cost counted now that no longer counts at ``when`` (it leaves the rolling hour)."""
        with self.sessions() as session:
            total = session.scalar(
                select(func.coalesce(func.sum(ApiCall.cost), 0)).where(
                    ApiCall.counted_at > now - WINDOW, ApiCall.counted_at <= when - WINDOW
                )
            )
        return int(total or 0)

    def budget_frees_at(self, now: datetime, amount: int) -> datetime | None:
        """When at least ``amount`` more cost fits than fits now (``None``: it fits now, or
        it never will by calls leaving the window)."""
        if self.budget_limit - self.spent(now) >= amount:
            return None
        with self.sessions() as session:
            rows = session.execute(
                select(ApiCall.counted_at, ApiCall.cost)
                .where(ApiCall.counted_at > now - WINDOW, ApiCall.cost > 0)
                .order_by(ApiCall.counted_at)
                .limit(max(1, amount))
            ).all()
        freed = 0
        for row in rows:
            freed += int(row.cost)
            if freed >= amount:
                counted_at: datetime = row.counted_at
                return counted_at + WINDOW
        return None

    def next_due(self, now: datetime) -> datetime | None:
        """The earliest time a request or file has work scheduled after ``now``: a required
        poll, a retry of a poll, a submission or a file."""
        with self.sessions() as session:
            request_due = session.scalar(
                select(func.min(Request.next_action_at)).where(
                    Request.state.in_([State.SUBMITTED, *SUBMITTABLE]),
                    Request.next_action_at > now,
                )
            )
            file_due = session.scalar(
                select(func.min(File.next_attempt_at))
                .join(
                    Request,
                    _OF_CURRENT_JOB,
                )
                .where(
                    File.state == "pending",
                    File.next_attempt_at > now,
                    Request.state.in_((State.DONE, State.FETCHING)),
                )
            )
        times = [t for t in (_aware(request_due), _aware(file_due)) if t is not None]
        return min(times) if times else None

    def previous_tick_start(self, tick_id: int) -> datetime | None:
        with self.sessions() as session:
            return _aware(
                session.scalar(
                    select(Tick.started_at)
                    .where(Tick.id < tick_id, Tick.outcome != "skipped")
                    .order_by(Tick.id.desc())
                    .limit(1)
                )
            )

    # -- views -------------------------------------------------------------------------------

    def expiring(self, before: datetime) -> list[Request]:
        """Finished requests whose results expire before ``before`` with files unfetched."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Request).where(
                        Request.state.in_((State.DONE, State.FETCHING)), Request.expires_at < before
                    )
                )
            )

    def save_stored_totals(self, now: datetime) -> None:
        """Record the stored totals up to their watermark, for processes that start later
        (``totals.py``); each tick does, at its end."""
        with write_transaction(self.sessions) as session:
            self.stored_totals.save(session, now)

    def snapshot(self, now: datetime, sla: timedelta) -> Snapshot:
        with self.sessions() as session:
            # every state but stored by the state index (their rows are few); stored ones
            # from the running totals (they are most of the history)
            by_state = {
                state: int(count)
                for state, count in session.execute(
                    select(Request.state, func.count())
                    .where(Request.state.in_([s.value for s in State if s != State.STORED]))
                    .group_by(Request.state)
                )
            }
            stored = self.stored_totals.read(session, now)
            if stored.requests:
                by_state[State.STORED] = stored.requests
            pending = session.scalar(
                select(func.count())
                .select_from(QueueRow)
                .where(*_unadmitted(_queue_floor(session, None).floor))
            )
            active = [s.value for s in OUTSTANDING | {State.QUEUED, State.FAILED, State.EXPIRED}]
            oldest = session.scalar(
                select(func.min(Request.first_submitted_at)).where(Request.state.in_(active))
            )
            past_sla = session.scalar(
                select(func.count())
                .select_from(Request)
                .where(Request.state.in_(active), Request.first_submitted_at < now - sla)
            )
            earliest = session.scalar(
                select(func.min(Request.expires_at)).where(
                    Request.state.in_((State.DONE, State.FETCHING))
                )
            )
            pending_files = session.scalar(
                select(func.count()).select_from(File).where(File.state == "pending")
            )
            last_ok = session.scalar(select(func.max(Tick.finished_at)).where(Tick.outcome == "ok"))
            return Snapshot(
                queue_pending=int(pending or 0),
                by_state=by_state,
                cost_in_window=self._spent(session, now),
                earliest_unfetched_expiry=_aware(earliest),
                oldest_outstanding_since=_aware(oldest),
                past_sla=int(past_sla or 0),
                pending_files=int(pending_files or 0),
                stored_files=stored.files,
                stored_bytes=stored.bytes,
                last_ok_tick=_aware(last_ok),
                rate_limited_until=self._backoff(session, now),
            )

    def request_cost(self, request_id: int) -> tuple[int, int]:
        """(calls, cost) spent on one request, as far as the call ledger still holds them."""
        with self.sessions() as session:
            calls, cost = session.execute(
                select(func.count(), func.coalesce(func.sum(ApiCall.cost), 0)).where(
                    ApiCall.request_id == request_id
                )
            ).one()
            return int(calls or 0), int(cost or 0)

    def is_final(self, request_id: int) -> bool:
        request = self.get(request_id)
        return request is not None and State(request.state) in FINAL

    def try_insert_queue_row(self, **values: Any) -> int | None:
        """Insert a queue row (``dsar enqueue``); ``None`` if the database refused it."""
        try:
            with write_transaction(self.sessions) as session:
                row = QueueRow(**values)
                session.add(row)
                session.flush()
                return row.id
        except IntegrityError:
            return None


STORE_NOTE = "storing:"


def _store_note(request_id: int) -> str:
    return f"{STORE_NOTE}{request_id}"


def _unadmitted(after: int) -> tuple[ColumnElement[bool], ...]:
    """Queue rows past ``after`` with no ledger row. The bound on both sides lets PostgreSQL
    merge the two unique indexes from ``after`` on, instead of hashing the whole ledger."""
    return (
        QueueRow.id > after,
        ~exists().where(Request.queue_id == QueueRow.id, Request.queue_id > after),
    )


def _queue_floor(session: Session, now: datetime | None) -> QueueFloor:
    """The recorded floor; with ``now``, a floor of 0 once the full sweep is due (admission
    then reads the whole queue; a gauge keeps counting from the recorded floor)."""
    row = session.get(ServiceState, QUEUE_FLOOR_KEY)
    if row is None or not row.value:
        return QueueFloor(0, 0)
    try:
        floor, seen = (int(part) for part in row.value.split())
    except ValueError:  # not what set_queue_floor writes (edited by hand?): read it all again
        return QueueFloor(0, 0)
    sweep_due = now is not None and (row.until is None or row.until <= now)
    return QueueFloor(0 if sweep_due else floor, seen)


def _insert_calls(
    session: Session, kind: str, cost: int, now: datetime, request_ids: Sequence[int | None]
) -> list[int]:
    """Insert one reserved call per entry of ``request_ids``; their ids, in that order."""
    values = {"kind": kind, "cost": cost, "reserved_at": now, "counted_at": now}
    if not on_postgres(session):
        return list(
            session.scalars(
                insert(ApiCall).returning(ApiCall.id, sort_by_parameter_order=True),
                [{**values, "request_id": r, "outcome": "reserved"} for r in request_ids],
            )
        )
    # One statement over an array instead of an executemany: the rows differ only in their
    # request id, and rows with the same request id are interchangeable, so each row's id is
    # matched to its place by request id (RETURNING does not promise an order).
    rows = session.execute(
        insert(ApiCall)
        .from_select(
            ["kind", "cost", "reserved_at", "counted_at", "outcome", "request_id"],
            select(
                literal(kind, String),
                literal(cost, Integer),
                literal(now, UTCDateTime),
                literal(now, UTCDateTime),
                literal("reserved", String),
                func.unnest(literal(list(request_ids), ARRAY(Integer))),
            ),
        )
        .returning(ApiCall.id, ApiCall.request_id)
    ).all()
    by_request: dict[int | None, list[int]] = {}
    for call_id, request_id in sorted(rows, reverse=True):
        by_request.setdefault(request_id, []).append(call_id)
    return [by_request[r].pop() for r in request_ids]


def _months(start: date | None, end: date | None) -> int:
    """Calendar months a date range touches (Amplitude writes about one file per month and
    project)."""
    if start is None or end is None:
        return 1
    months = (end.year - start.year) * 12 + end.month - start.month + 1
    return months if months > 0 else 1


def _aware(value: datetime | None) -> datetime | None:
    from dsar_scheduler.adapters.clock import utc

    return None if value is None else utc(value)
