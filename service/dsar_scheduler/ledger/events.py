"""The one way an audit event is written: chained to its request's last event.

Each event carries the hash of the one before it (``prev_hash``) and its own (``core.chain``),
and the request keeps the newest hash (``chain_head``). The head must be read and moved in the
transaction that writes the event, under the request's compare-and-set (its row locked, or on
SQLite the database's write lock): two writers reading the same head would fork the chain.
Every caller already holds that lock for its state change; these helpers take the head it read
with the lock and hand back the new one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from dsar_scheduler.adapters.db import Event, Request, bulk_insert, bulk_update
from dsar_scheduler.core.chain import event_hash
from dsar_scheduler.ledger.rows import Transition


def event_values(note: Transition, prev_hash: str | None) -> dict[str, object]:
    """The ``dsar_request_events`` row of a state change that follows ``prev_hash``."""
    return {
        "request_id": note.request_id,
        "at": note.at,
        "from_state": note.from_state,
        "to_state": note.to_state,
        "reason": note.reason,
        "remote_request_id": note.remote_request_id,
        "prev_hash": prev_hash,
        "hash": event_hash(note, prev_hash),
    }


def append_event(session: Session, request: Request, note: Transition) -> None:
    """Write ``note``'s event after ``request``'s last one and move its head; ``request`` is
    the ORM row the caller locked (``SELECT … FOR UPDATE``) in this transaction, read under
    that lock (``populate_existing`` if the session held it before)."""
    values = event_values(note, request.chain_head)
    session.add(Event(**values))
    request.chain_head = str(values["hash"])


def append_note(session: Session, request: Request, reason: str, at: datetime) -> None:
    """An audit entry that changes no state (``from`` = ``to``: an extension, a delivery, a
    purge's progress) on ``request``, locked as for ``append_event``; not for the transition
    listener, which counts state changes."""
    note = Transition(
        request.id, request.state, request.state, reason, request.remote_request_id, at
    )
    append_event(session, request, note)


def append_events(
    session: Session, notes: Sequence[Transition], heads: Mapping[int, str | None]
) -> dict[int, str]:
    """Bulk-insert the events of ``notes`` (several for one request follow each other in
    order), each request's chain continuing from ``heads`` (read with its row lock in this
    transaction; a request missing there starts a new chain). Returns each request's new
    head, which the caller must write in the same transaction (``with_heads``)."""
    current: dict[int, str | None] = dict(heads)
    rows = []
    for note in notes:
        values = event_values(note, current.get(note.request_id))
        current[note.request_id] = str(values["hash"])
        rows.append(values)
    bulk_insert(session, Event, rows)
    return {request_id: head for request_id, head in current.items() if head is not None}


def with_heads(
    changes: Sequence[Mapping[str, Any]], heads: Mapping[int, str]
) -> list[dict[str, Any]]:
    """A bulk update by id (``bulk_update`` rows) that also moves each request's head."""
    return [{**change, "chain_head": heads[change["id"]]} for change in changes]


def write_heads(session: Session, heads: Mapping[int, str]) -> None:
    """Set the heads of requests that have no other change to write (new requests)."""
    bulk_update(session, Request, [{"id": rid, "chain_head": head} for rid, head in heads.items()])
