"""The audit trail's hash chain: each request event carries the hash of the event before it,
and the request keeps the hash of its last one (``chain_head``), so an event edited, removed
or moved after it was written no longer verifies, and the check says where.

The hash is SHA-256 over a canonical encoding that anyone can rebuild without this service
(an evidence bundle's README repeats it): JSON with sorted keys, no spaces, ASCII only, the
time as ISO-8601 UTC with microseconds and a ``Z``, integers as integers, absent values as
``null``. Both databases hand back the time to the microsecond that was written, so the
encoding is the same on write and on read, on SQLite and on PostgreSQL.

Requests admitted before the chain existed have events without a hash: the chain starts at
their first hashed event (which then has no ``prev_hash``), and the verdict names the unchained
events before it rather than failing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

#: Part of every hashed encoding, so that a later change of the encoding is told apart.
CHAIN_VERSION = 1
#: The hash as stored: 64 lowercase hexadecimal characters.
HASH_LENGTH = 64


class ChainFields(Protocol):
    """What an event's hash covers (a ledger transition, an event row, a bundle's entry)."""

    @property
    def request_id(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def from_state(self) -> str | None: ...
    @property
    def to_state(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def remote_request_id(self) -> int | None: ...


class ChainedEvent(ChainFields, Protocol):
    """An event as written: its fields, the hash it follows and its own."""

    @property
    def id(self) -> int: ...
    @property
    def prev_hash(self) -> str | None: ...
    @property
    def hash(self) -> str | None: ...


def canonical_time(at: datetime) -> str:
    """``2026-01-05T09:00:00.000000Z``: UTC, always with microseconds (a naive time is UTC,
    as the ledger stores it)."""
    aware = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return aware.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_bytes(event: ChainFields, prev_hash: str | None) -> bytes:
    """The bytes an event's hash is taken over."""
    remote = event.remote_request_id
    body = {
        "v": CHAIN_VERSION,
        "request_id": int(event.request_id),
        "at": canonical_time(event.at),
        "from_state": None if event.from_state is None else str(event.from_state),
        "to_state": str(event.to_state),
        "reason": str(event.reason),
        "remote_request_id": None if remote is None else int(remote),
        "prev_hash": prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def event_hash(event: ChainFields, prev_hash: str | None) -> str:
    """The hash of an event that follows ``prev_hash`` (``None``: the first of its chain)."""
    return hashlib.sha256(canonical_bytes(event, prev_hash)).hexdigest()


@dataclass(frozen=True)
class ChainVerdict:
    """What the check of one request's chain found.

    ``position``: 0-based index, among the events in id order, of the first event that does
    not verify (``len(events)`` when the end is wrong: the last events removed); ``event_id``
    its id (``None`` past the end). ``legacy``: events written before the chain existed,
    before its first hashed event."""

    ok: bool
    events: int
    legacy: int = 0
    problem: str | None = None
    position: int | None = None
    event_id: int | None = None
    detail: str = ""

    def describe(self) -> str:
        """One sentence for an operator or an auditor."""
        if self.ok:
            chained = self.events - self.legacy
            text = f"verified: {chained} chained event(s)"
            if self.legacy:
                text += f"; {self.legacy} unchained legacy event(s) before the chain starts"
            return text
        where = (
            f"at event {self.event_id} (position {self.position})"
            if self.event_id is not None
            else f"after the last event (position {self.position})"
        )
        return f"broken {where}: {self.problem}: {self.detail}"


def verify_chain(events: Sequence[ChainedEvent], head: str | None) -> ChainVerdict:
    """Check ``events`` (one request's, in id order) against each other and ``head`` (the
    request's ``chain_head``): every hashed event's hash is its own fields' hash, each one
    names the hash of the one before it, the first names none, and the last is the head."""
    legacy = _leading_unhashed(events)
    chained = events[legacy:]
    later = {e.hash: i for i, e in enumerate(events) if e.hash is not None}
    previous: str | None = None
    for offset, event in enumerate(chained):
        position = legacy + offset
        broken = _check_event(event, previous, position, later)
        if broken is not None:
            problem, detail = broken
            return ChainVerdict(False, len(events), legacy, problem, position, event.id, detail)
        previous = event.hash
    return _check_head(events, legacy, previous, head)


def _leading_unhashed(events: Sequence[ChainedEvent]) -> int:
    count = 0
    for event in events:
        if event.hash is not None:
            break
        count += 1
    return count


def _check_event(
    event: ChainedEvent, previous: str | None, position: int, later: dict[str, int]
) -> tuple[str, str] | None:
    """``(problem, detail)`` if the event at ``position`` does not verify."""
    if event.hash is None:
        return "unchained", "an event without a hash inside the chain (written around it)"
    if event_hash(event, event.prev_hash) != event.hash:
        return "edited", "its fields (or its prev_hash or hash) are not what was hashed"
    if event.prev_hash == previous:
        return None
    found = later.get(event.prev_hash) if event.prev_hash is not None else None
    if found is not None and found > position:
        return "reordered", f"it follows the event now at position {found}, which comes later"
    if previous is None:
        return (
            "removed",
            "the first chained event names a previous event that is not there "
            "(the events before it were removed)",
        )
    return (
        "removed",
        "it does not follow the event before it: an event between them was removed, or the "
        "event before it was altered and hashed again",
    )


def _check_head(
    events: Sequence[ChainedEvent], legacy: int, last: str | None, head: str | None
) -> ChainVerdict:
    end = len(events)
    if head == last:
        return ChainVerdict(True, end, legacy)
    if head is None:
        detail = "the request names no chain head, yet its events are chained"
        return ChainVerdict(False, end, legacy, "head missing", end, None, detail)
    if any(e.hash == head for e in events):
        detail = "events follow the one the request's chain head names (added afterwards)"
        return ChainVerdict(False, end, legacy, "added", end, None, detail)
    detail = (
        "the request's chain head is the hash of an event that is not there: "
        "the last event(s) were removed"
    )
    return ChainVerdict(False, end, legacy, "removed", end, None, detail)
