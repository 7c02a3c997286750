"""A request driven through its whole life by the ledger's own writes (no emulator): every
path that writes an audit event, for the audit chain and evidence tests."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import text

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.core.states import State
from dsar_scheduler.core.validation import validate
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.rows import Submitted

FILES = (b"first file bytes", b"second file bytes")


def admit(ledger: Ledger, clock: FakeClock, *amplitude_ids: object) -> list[int]:
    """Insert queue rows as upstream would and admit them (bad ones are rejected)."""
    with ledger.sessions() as session, session.begin():
        for number, amplitude_id in enumerate(amplitude_ids):
            session.execute(
                text(
                    "INSERT INTO dsar_queue (amplitude_id, start_date, end_date, external_ref, "
                    "requested_by) VALUES (:a, '2025-01-01', '2025-03-31', :r, 'privacy desk')"
                ),
                {"a": amplitude_id, "r": f"T-{amplitude_id}-{number}"},
            )
    rows = ledger.queue.pending_rows(100)
    admitted = ledger.queue.admit(
        [(r, validate(r, clock.now().date(), 731)) for r in rows], clock.now()
    )
    return [a.id for a in admitted]


def submit(ledger: Ledger, clock: FakeClock, request_id: int, remote_id: int) -> None:
    """``queued`` (or failed, expired) -> ``submitting`` -> ``submitted``, with the POST's call."""
    request = ledger.requests.get(request_id)
    assert request is not None
    ticket = ledger.budget.reserve_many("submit", 8, clock.now(), [request_id])[0]
    assert ledger.requests.start_submits([request], clock.now()) == {request_id}
    clock.advance(timedelta(seconds=2, microseconds=123))
    now = clock.now()
    accepted = Submitted(request_id, remote_id, now, now, now + timedelta(hours=8))
    ledger.record_chunk(now, [(ticket, "ok", 202)], [], [], [accepted])


def finish(ledger: Ledger, clock: FakeClock, request_id: int, remote_id: int) -> None:
    """``submitted`` -> ``done`` -> ``fetching`` -> ``stored``, each file stored with its call."""
    clock.advance(timedelta(hours=8))
    poll = ledger.budget.reserve_many("status", 1, clock.now(), [request_id])[0]
    ledger.record_chunk(clock.now(), [(poll, "ok", 200)], [], [])
    urls = [f"https://amplitude.com/api/2/dsar/requests/{remote_id}/outputs/{i}" for i in (0, 1)]
    names = [f"{remote_id}-{i}.json.gz" for i in (0, 1)]
    done = ledger.files.record_done(
        request_id,
        remote_id,
        urls,
        clock.now() + timedelta(days=2),
        clock.now(),
        names,
        f"req-{request_id:08d}",
    )
    assert done is not None
    files = ledger.files.of(request_id, remote_id)
    for file, body in zip(files, FILES, strict=True):
        clock.advance(timedelta(minutes=1))
        fetch = ledger.budget.reserve_many("fetch", 1, clock.now(), [request_id])[0]
        digest = hashlib.sha256(body).hexdigest()
        ledger.record_chunk(
            clock.now(), [(fetch, "ok", 302)], [], [(file.id, len(body), digest, 3, "")]
        )
        if file.output_index == 0:
            moved = ledger.requests.move(
                request_id, {State.DONE}, State.FETCHING, "first file stored", clock.now()
            )
            assert moved is not None
    clock.advance(timedelta(seconds=1))
    assert ledger.files.begin_store(request_id, f"req-{request_id:08d}/manifest.json", clock.now())
    assert ledger.files.finish_store(request_id, "2 file(s) stored and verified", clock.now())


def whole_life(ledger: Ledger, clock: FakeClock, amplitude_id: int = 501) -> int:
    """One request from the queue to ``stored``, through a failed first job and an operator's
    cancel and retry: every kind of event write. Its id."""
    (request_id,) = admit(ledger, clock, amplitude_id)
    submit(ledger, clock, request_id, 7001)
    clock.advance(timedelta(hours=1))
    failed = ledger.requests.move(
        request_id, {State.SUBMITTED}, State.FAILED, "Amplitude: failed", clock.now(), failures=1
    )
    assert failed is not None
    cancelled = ledger.requests.move(
        request_id, {State.FAILED}, State.CANCELLED, "cancelled by an operator", clock.now()
    )
    assert cancelled is not None
    ledger.requests.move(request_id, {State.CANCELLED}, State.QUEUED, "retry", clock.now())
    submit(ledger, clock, request_id, 7002)
    finish(ledger, clock, request_id, 7002)
    return request_id
