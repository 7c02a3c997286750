"""The audit hash chain (``core.chain``), by table: what verifies, and every way of breaking
it found at the right place with the right name."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dsar_scheduler.core.chain import (
    ChainVerdict,
    canonical_bytes,
    canonical_time,
    event_hash,
    verify_chain,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Ev:
    id: int
    request_id: int
    at: datetime
    from_state: str | None
    to_state: str
    reason: str
    remote_request_id: int | None
    prev_hash: str | None = None
    hash: str | None = None


STEPS = [
    (None, "queued", "admitted", None),
    ("queued", "submitting", "submitting (attempt 1)", None),
    ("submitting", "submitted", "submitted as Amplitude request 77", 77),
    ("submitted", "done", "done: 2 file(s), expires 2026-01-08T10:00:00+00:00", 77),
    ("done", "stored", "2 file(s) stored and verified", 77),
]


def chained(events: list[Ev], prev: str | None = None) -> list[Ev]:
    """``events`` with their hashes, as the ledger writes them."""
    out = []
    for event in events:
        digest = event_hash(event, prev)
        out.append(replace(event, prev_hash=prev, hash=digest))
        prev = digest
    return out


def life(request_id: int = 42, first_id: int = 1) -> list[Ev]:
    return chained(
        [
            Ev(first_id + i, request_id, T0 + timedelta(minutes=30 * i, microseconds=i), *step)
            for i, step in enumerate(STEPS)
        ]
    )


def test_a_whole_life_verifies() -> None:
    events = life()
    verdict = verify_chain(events, events[-1].hash)
    assert verdict == ChainVerdict(True, 5, 0)
    assert verdict.describe() == "verified: 5 chained event(s)"


def test_no_events_and_no_head_verifies() -> None:
    assert verify_chain([], None).ok


def test_the_hash_is_sha256_of_the_documented_encoding() -> None:
    """What the bundle's README tells an auditor to compute, byte for byte."""
    event = Ev(1, 42, T0, None, "queued", "admitted — ok", None)
    expected = (
        b'{"at":"2026-01-05T09:00:00.000000Z","from_state":null,"prev_hash":null,'
        b'"reason":"admitted \\u2014 ok","remote_request_id":null,"request_id":42,'
        b'"to_state":"queued","v":1}'
    )
    assert canonical_bytes(event, None) == expected
    assert event_hash(event, None) == hashlib.sha256(expected).hexdigest()
    assert json.loads(expected)["reason"] == "admitted — ok"


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (T0, "2026-01-05T09:00:00.000000Z"),
        (T0.replace(tzinfo=None), "2026-01-05T09:00:00.000000Z"),  # naive is UTC
        (T0 + timedelta(microseconds=7), "2026-01-05T09:00:00.000007Z"),
        (
            datetime(2026, 1, 5, 10, 30, 0, 5, tzinfo=timezone(timedelta(hours=1, minutes=30))),
            "2026-01-05T09:00:00.000005Z",
        ),
    ],
)
def test_times_are_encoded_in_utc_with_microseconds(at: datetime, text: str) -> None:
    assert canonical_time(at) == text


def test_the_same_instant_in_any_zone_hashes_the_same() -> None:
    event = Ev(1, 42, T0, None, "queued", "admitted", None)
    naive = replace(event, at=T0.replace(tzinfo=None))
    shifted = replace(event, at=T0.astimezone(timezone(timedelta(hours=-5))))
    assert event_hash(event, None) == event_hash(naive, None) == event_hash(shifted, None)


EDITS = {
    "request_id": 43,
    "at": T0 + timedelta(days=3),
    "from_state": "dead",
    "to_state": "cancelled",
    "reason": "something else",
    "remote_request_id": 78,
    "prev_hash": "0" * 64,
    "hash": "f" * 64,
}


@pytest.mark.parametrize("position", range(len(STEPS)))
@pytest.mark.parametrize("field", sorted(EDITS))
def test_editing_any_field_of_any_event_is_found_there(position: int, field: str) -> None:
    events = life()
    head = events[-1].hash
    events[position] = replace(events[position], **{field: EDITS[field]})
    verdict = verify_chain(events, head)
    assert not verdict.ok
    assert (verdict.problem, verdict.position, verdict.event_id) == (
        "edited",
        position,
        events[position].id,
    )


def test_an_edit_hashed_again_breaks_the_link_to_the_next_event() -> None:
    events = life()
    head = events[-1].hash
    edited = replace(events[2], reason="submitted as Amplitude request 99")
    events[2] = replace(edited, hash=event_hash(edited, edited.prev_hash))
    verdict = verify_chain(events, head)
    assert (verdict.ok, verdict.problem, verdict.position) == (False, "removed", 3)
    assert "altered and hashed again" in verdict.detail


@pytest.mark.parametrize("removed", [1, 2, 3])
def test_removing_a_middle_event_is_found_at_the_next(removed: int) -> None:
    events = life()
    head = events[-1].hash
    del events[removed]
    verdict = verify_chain(events, head)
    assert (verdict.ok, verdict.problem, verdict.position) == (False, "removed", removed)
    assert verdict.event_id == removed + 2  # ids start at 1: the event after the gap


def test_removing_the_first_event_is_found() -> None:
    events = life()
    verdict = verify_chain(events[1:], events[-1].hash)
    assert (verdict.problem, verdict.position, verdict.event_id) == ("removed", 0, 2)
    assert "events before it were removed" in verdict.detail


@pytest.mark.parametrize("count", [1, 2])
def test_removing_the_last_events_is_found_by_the_head(count: int) -> None:
    events = life()
    head = events[-1].hash
    kept = events[:-count]
    verdict = verify_chain(kept, head)
    assert (verdict.ok, verdict.problem, verdict.position, verdict.event_id) == (
        False,
        "removed",
        len(kept),
        None,
    )
    assert "the last event(s) were removed" in verdict.detail
    assert verdict.describe().startswith(f"broken after the last event (position {len(kept)})")


def test_removing_every_event_is_found_by_the_head() -> None:
    events = life()
    verdict = verify_chain([], events[-1].hash)
    assert (verdict.ok, verdict.problem, verdict.position) == (False, "removed", 0)


@pytest.mark.parametrize("first", [0, 1, 2, 3])
def test_swapping_two_neighbours_is_found_as_reordered(first: int) -> None:
    events = life()
    head = events[-1].hash
    events[first], events[first + 1] = events[first + 1], events[first]
    verdict = verify_chain(events, head)
    assert (verdict.ok, verdict.problem, verdict.position) == (False, "reordered", first)
    assert verdict.event_id == events[first].id


def test_a_head_cleared_is_found() -> None:
    events = life()
    verdict = verify_chain(events, None)
    assert (verdict.ok, verdict.problem, verdict.position) == (False, "head missing", 5)


def test_an_event_chained_after_the_head_is_found() -> None:
    events = life()
    head = events[-2].hash
    verdict = verify_chain(events, head)
    assert (verdict.ok, verdict.problem) == (False, "added")


def test_legacy_events_before_the_chain_are_named_not_failed() -> None:
    legacy = [Ev(i + 1, 42, T0 + timedelta(minutes=i), *STEPS[i]) for i in range(2)]
    rest = chained([Ev(i + 1, 42, T0 + timedelta(minutes=i), *STEPS[i]) for i in range(2, 5)])
    events = legacy + rest
    verdict = verify_chain(events, rest[-1].hash)
    assert (verdict.ok, verdict.events, verdict.legacy) == (True, 5, 2)
    assert verdict.describe() == (
        "verified: 3 chained event(s); 2 unchained legacy event(s) before the chain starts"
    )


def test_a_request_with_only_legacy_events_verifies() -> None:
    events = [Ev(i + 1, 42, T0, *STEPS[i]) for i in range(3)]
    verdict = verify_chain(events, None)
    assert (verdict.ok, verdict.legacy) == (True, 3)


def test_an_unhashed_event_inside_the_chain_is_found() -> None:
    events = life()
    head = events[-1].hash
    events.insert(3, Ev(99, 42, T0, "submitted", "failed", "written around the chain", 77))
    verdict = verify_chain(events, head)
    assert (verdict.ok, verdict.problem, verdict.position, verdict.event_id) == (
        False,
        "unchained",
        3,
        99,
    )


def test_an_event_moved_from_another_request_is_found() -> None:
    ours, theirs = life(42), life(43, first_id=10)
    events = [*ours[:2], theirs[2], *ours[2:]]
    verdict = verify_chain(events, ours[-1].hash)
    assert (verdict.ok, verdict.position, verdict.event_id) == (False, 2, 12)
