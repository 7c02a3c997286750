"""The files of finished requests, and the store protocol that ends a request.

Writing the manifest and moving the request to ``stored`` cannot be one atomic step (one is in
storage, the other in the database), and ``dsar cancel`` may land in between. The rule:
whichever commits its compare-and-set first wins. A stored request always has its manifest; a
request that is not stored never keeps one. Before the manifest is written, a note naming its
key is committed (``begin_store``); the move to ``stored`` removes the note in the same
transaction (``finish_store``). If the move loses (the request was cancelled meanwhile), the
manifest is deleted and the note with it (``store_withdrawn``); a process that dies in between
leaves the note, and the next tick finishes the job (``store_notes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import (
    File,
    Request,
    ServiceState,
    write_transaction,
)
from dsar_scheduler.core.states import State, check_transition
from dsar_scheduler.ledger.convert import (
    FILE_COLUMNS,
    REQUEST_COLUMNS,
    file_and_request,
    request_row,
)
from dsar_scheduler.ledger.events import append_event
from dsar_scheduler.ledger.requests import move_in
from dsar_scheduler.ledger.rows import (
    FileRow,
    RequestRow,
    StoreNote,
    Transition,
    TransitionListener,
)

STORE_NOTE = "storing:"
#: Requests whose files are being fetched.
FETCHING = (State.DONE, State.FETCHING)
#: A file of its request's current remote job (the files of a job that failed or expired and
#: was resubmitted stay in the table, under the old remote id).
OF_CURRENT_JOB = and_(
    File.request_id == Request.id, File.remote_request_id == Request.remote_request_id
)


class Files:
    """Each finished request's files, from listing to stored, and the request's last step."""

    def __init__(self, sessions: sessionmaker[Session], notify: TransitionListener) -> None:
        self.sessions = sessions
        self._notify = notify

    def record_done(
        self,
        request_id: int,
        remote_id: int,
        urls: Sequence[str],
        expires: datetime,
        now: datetime,
        names: Sequence[str],
        prefix: str,
    ) -> RequestRow | None:
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
            session.add_all(_listed(request_id, remote_id, urls, names))
            reason = f"done: {len(urls)} file(s), expires {expires.isoformat()}"
            done = Transition(request_id, State.SUBMITTED, State.DONE, reason, remote_id, now)
            append_event(session, request, done)
            row = request_row(request)
        self._notify([done])
        return row

    def completed_unrecorded(self) -> list[RequestRow]:
        """Finished requests with every file stored but no manifest recorded: a process
        stopped between storing the last file and writing the manifest."""
        pending = select(File.id).where(OF_CURRENT_JOB, File.state != "stored").exists()
        with self.sessions() as session:
            rows = session.execute(
                select(*REQUEST_COLUMNS).where(Request.state.in_(FETCHING), ~pending)
            ).all()
        return [RequestRow(*row) for row in rows]

    def pending(self, now: datetime, limit: int) -> list[tuple[FileRow, RequestRow]]:
        """Files still to fetch, most urgent expiry first (losing a result is the worst)."""
        with self.sessions() as session:
            rows = session.execute(
                select(*FILE_COLUMNS, *REQUEST_COLUMNS)
                .select_from(File)
                .join(Request, OF_CURRENT_JOB)
                .where(
                    Request.state.in_(FETCHING),
                    File.state == "pending",
                    or_(File.next_attempt_at.is_(None), File.next_attempt_at <= now),
                )
                .order_by(Request.expires_at, File.request_id, File.output_index)
                .limit(limit)
            ).all()
        return [file_and_request(row) for row in rows]

    def count_pending(self) -> int:
        """Files of finished requests still to fetch (the budget the submit step keeps back)."""
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(File)
                    .join(Request, OF_CURRENT_JOB)
                    .where(Request.state.in_(FETCHING), File.state == "pending")
                )
                or 0
            )

    def of(self, request_id: int, remote_id: int | None) -> list[FileRow]:
        """The files of one remote job of a request, in output order."""
        with self.sessions() as session:
            rows = session.execute(
                select(*FILE_COLUMNS)
                .where(File.request_id == request_id, File.remote_request_id == remote_id)
                .order_by(File.output_index)
            ).all()
        return [FileRow(*row) for row in rows]

    def record_stored(
        self, file_id: int, size: int, sha256: str, events: int, ids: str, now: datetime
    ) -> None:
        """A file stored and verified (``ids``: its Amplitude IDs, ``core.coverage``)."""
        with write_transaction(self.sessions) as session:
            session.execute(
                update(File)
                .where(File.id == file_id)
                .values(**stored_values(size, sha256, events, ids, now))
            )

    def record_failure(self, file_id: int, error: str, retry_at: datetime | None) -> int:
        """Count a failed attempt; returns the attempts so far."""
        with write_transaction(self.sessions) as session:
            file = session.get(File, file_id)
            assert file is not None
            file.attempts += 1
            file.last_error, file.next_attempt_at = error[:500], retry_at
            return file.attempts

    def begin_store(self, request_id: int, manifest_key: str, now: datetime) -> bool:
        """Note that ``manifest_key`` is about to be written for a request still ``done`` or
        ``fetching``; ``False`` (write nothing) if it is not."""
        with write_transaction(self.sessions) as session:
            state = session.scalar(
                select(Request.state).where(Request.id == request_id).with_for_update()
            )
            if state not in FETCHING:
                return False
            key = _store_note(request_id)
            row = session.get(ServiceState, key)
            if row is None:
                session.add(ServiceState(key=key, value=manifest_key, until=None, updated_at=now))
            else:
                row.value, row.updated_at = manifest_key, now
            return True

    def finish_store(self, request_id: int, reason: str, now: datetime) -> RequestRow | None:
        """The final compare-and-set: ``done``/``fetching`` to ``stored``, and the note of its
        manifest removed, in one transaction. ``None`` if the request had moved on (a cancel
        won): its manifest must then go (``store_withdrawn``)."""
        with write_transaction(self.sessions) as session:
            moved = move_in(session, request_id, set(FETCHING), State.STORED, reason, now, {})
            if moved is None:
                return None
            request, note = moved
            request.stored_at, request.reason = now, None  # the reason is in the event
            session.execute(delete(ServiceState).where(ServiceState.key == _store_note(request_id)))
            row = request_row(request)
        self._notify([note])
        return row

    def store_notes(self) -> list[StoreNote]:
        """Manifests that may have been written without the request being stored."""
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
        return [StoreNote(rid, key, str(states.get(rid, ""))) for rid, key in sorted(notes.items())]

    def store_withdrawn(self, request_id: int, reason: str | None, now: datetime) -> None:
        """The manifest noted for a request that is not stored has been deleted: drop the
        note, and (``reason``) say so in its audit trail, without changing its state."""
        with write_transaction(self.sessions) as session:
            session.execute(delete(ServiceState).where(ServiceState.key == _store_note(request_id)))
            request = session.scalar(
                select(Request).where(Request.id == request_id).with_for_update()
            )
            if reason is not None and request is not None and request.state != State.STORED:
                state, remote_id = request.state, request.remote_request_id
                note = Transition(request_id, state, state, reason, remote_id, now)
                append_event(session, request, note)


def _listed(
    request_id: int, remote_id: int, urls: Sequence[str], names: Sequence[str]
) -> list[File]:
    """The files of a finished remote job, still to fetch, in output order."""
    return [
        File(
            request_id=request_id,
            remote_request_id=remote_id,
            output_index=index,
            url=url,
            name=name,
            state="pending",
            attempts=0,
        )
        for index, (url, name) in enumerate(zip(urls, names, strict=True))
    ]


def stored_values(
    size: int, sha256: str, events: int, ids: str, now: datetime
) -> dict[str, object]:
    """The columns of a file stored and verified."""
    return {
        "state": "stored",
        "bytes": size,
        "sha256": sha256,
        "event_count": events,
        "amplitude_ids": ids,
        "stored_at": now,
        "last_error": None,
        "next_attempt_at": None,
    }


def _store_note(request_id: int) -> str:
    return f"{STORE_NOTE}{request_id}"
