"""Legal deadlines on a real database (SQLite and PostgreSQL): admission fills them from the
queue row, ``dsar extend`` takes the one extension by compare-and-set with its audit event,
the open requests' shares of time are counted for the metrics, and the nearest deadlines are
submitted and polled first."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.clock import FakeClock, SystemClock
from dsar_scheduler.adapters.db import Request, make_engine
from dsar_scheduler.core.deadlines import Deadline
from dsar_scheduler.core.states import State
from dsar_scheduler.core.validation import Accepted, check
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.deadlines import Extension
from dsar_scheduler.metrics import Metrics
from dsar_scheduler.runtime.cli import main
from tests.support.harness import harness

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
KNOWN = "ccpa, gdpr, vcdpa, cpa, icdpa, ocpa, ucpa"


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


def end_of(day: str) -> datetime:
    return at(f"{day} 23:59:59.999999")


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    return Ledger(sessionmaker(make_engine(database_url), expire_on_commit=False), 1000)


def enqueue(ledger: Ledger, **columns: Any) -> None:
    values = {"amplitude_id": 7, "start_date": "2025-01-01", "end_date": "2025-01-31", **columns}
    names = ", ".join(values)
    with ledger.sessions() as session, session.begin():
        session.execute(
            text(f"INSERT INTO dsar_queue ({names}) VALUES ({', '.join(':' + n for n in values)})"),
            values,
        )


def admit_checked(ledger: Ledger, now: datetime = NOW, default: str = "gdpr") -> None:
    """Admission as the tick does it (``check``)."""
    rows = ledger.queue.pending_rows(100)
    ledger.queue.admit([(r, check(r, now, 731, default)) for r in rows], now)


def with_deadlines(ledger: Ledger, *deadlines: Deadline | None) -> list[int]:
    """Queued requests with the deadlines given (``None``: admitted before deadlines)."""
    for _ in deadlines:
        enqueue(ledger)
    rows = ledger.queue.pending_rows(100)
    verdicts = [
        (row, Accepted(7, NOW.date(), NOW.date(), deadline))
        for row, deadline in zip(rows, deadlines, strict=True)
    ]
    ids = [a.id for a in ledger.queue.admit(verdicts, NOW)]
    for request_id, deadline in zip(ids, deadlines, strict=True):
        if deadline is not None and deadline.extended_until is not None:
            set_columns(ledger, request_id, extended_until=deadline.extended_until)
    return ids


def set_columns(ledger: Ledger, request_id: int, **values: Any) -> None:
    with ledger.sessions() as session, session.begin():
        session.execute(update(Request).where(Request.id == request_id).values(**values))


def timed(regime: str, received: str, due: str, extended: str | None = None) -> Deadline:
    return Deadline(regime, at(received), at(due), None if extended is None else at(extended))


# -- admission -----------------------------------------------------------------------------


def test_admission_fills_the_deadline_from_the_queue_row(ledger: Ledger) -> None:
    enqueue(ledger, regime="gdpr", received_at="2025-01-31 08:00:00")
    enqueue(ledger, regime="CCPA", created_at="2026-01-04 10:00:00")  # no received_at
    enqueue(ledger)  # neither: the default regime, from admission (created_at is the wall's)
    enqueue(ledger, regime="lgpd")
    enqueue(ledger, regime="ccpa", received_at="2026-02-01 00:00:00")
    admit_checked(ledger)
    rows = [ledger.requests.get(i) for i in range(1, 6)]
    assert [r.state if r else None for r in rows] == ["queued"] * 3 + ["rejected"] * 2
    got = [(r.regime, r.received_at, r.due_at) for r in rows if r]
    assert got[:3] == [
        ("gdpr", at("2025-01-31 08:00"), end_of("2025-02-28")),
        ("ccpa", at("2026-01-04 10:00"), end_of("2026-02-18")),
        ("gdpr", NOW, end_of("2026-02-05")),
    ]
    assert got[3:] == [(None, None, None)] * 2  # a rejected row tracks no deadline
    assert rows[3] and rows[3].reason == f"regime 'lgpd' is not one of: {KNOWN}"
    assert rows[4] and rows[4].reason == (
        "received_at 2026-02-01 00:00:00 UTC is in the future "
        "(the service's clock says 2026-01-05 09:00:00 UTC)"
    )


def test_the_status_view_shows_the_deadline_and_whether_it_was_met(ledger: Ledger) -> None:
    first, second, third = with_deadlines(
        ledger,
        timed("ccpa", "2026-01-01 09:00", "2026-02-15 23:59:59.999999"),
        timed("ccpa", "2026-01-01 09:00", "2026-02-15 23:59:59.999999"),
        timed("ccpa", "2026-01-01 09:00", "2026-02-15 23:59:59.999999"),
    )
    set_columns(ledger, first, state="stored", stored_at=end_of("2026-02-15"))
    set_columns(ledger, second, state="stored", stored_at=at("2026-02-16 00:00"))
    with ledger.sessions() as session:
        seen = session.execute(
            text("SELECT request_id, regime, deadline FROM dsar_queue_status ORDER BY queue_id")
        ).all()
    assert [tuple(row) for row in seen] == [
        (first, "ccpa", "met"),
        (second, "ccpa", "missed"),
        (third, "ccpa", "open"),
    ]


# -- dsar extend ---------------------------------------------------------------------------


def event_trail(ledger: Ledger, request_id: int) -> list[tuple[str | None, str, str]]:
    return [(e.from_state, e.to_state, e.reason) for e in ledger.requests.events(request_id)]


def test_the_one_extension_is_recorded_with_its_audit_event(ledger: Ledger) -> None:
    enqueue(ledger, regime="gdpr", received_at="2027-01-31 08:00:00")
    admit_checked(ledger, now=at("2027-02-01 10:00"))
    done = ledger.deadlines.extend(1, "records held by a processor", at("2027-02-20 12:00"))
    reason = (
        "deadline extended to 2027-04-30 (gdpr allows one extension, of 2 months): "
        "records held by a processor"
    )
    assert done == Extension(end_of("2027-04-30"), reason)
    request = ledger.requests.get(1)
    assert request is not None
    assert (request.due_at, request.extended_until, request.extension_reason) == (
        end_of("2027-02-28"),
        end_of("2027-04-30"),
        "records held by a processor",
    )
    assert (request.state, request.reason) == ("queued", None)  # no state change
    assert event_trail(ledger, 1) == [(None, "queued", "admitted"), ("queued", "queued", reason)]
    first, extension = ledger.requests.events(1)
    if extension.hash is not None:  # the audit chain covers it
        assert extension.prev_hash == first.hash


def test_a_second_extension_and_one_after_the_deadline_are_refused(ledger: Ledger) -> None:
    late, twice = with_deadlines(
        ledger,
        timed("ccpa", "2026-01-01 09:00", "2026-02-15 23:59:59.999999"),
        timed("ccpa", "2026-01-01 09:00", "2026-02-15 23:59:59.999999"),
    )
    assert ledger.deadlines.extend(late, "too late", at("2026-02-16 00:00")) == (
        f"request {late}: the deadline passed on 2026-02-15; CCPA/CPRA (California) allows an "
        "extension only with notice given before it"
    )
    assert isinstance(ledger.deadlines.extend(twice, "first", at("2026-02-15 23:00")), Extension)
    assert ledger.deadlines.extend(twice, "second", at("2026-02-15 23:30")) == (
        f"request {twice}: already extended once, to 2026-04-01 "
        "(CCPA/CPRA (California) allows one extension)"
    )
    assert len(ledger.requests.events(late)) == 1  # nothing written for a refusal
    assert len(ledger.requests.events(twice)) == 2


def test_extensions_are_refused_for_requests_answered_stopped_or_without_a_deadline(
    ledger: Ledger,
) -> None:
    deadline = timed("gdpr", "2026-01-01 09:00", "2026-02-01 23:59:59.999999")
    stored, cancelled, dead, old = with_deadlines(ledger, deadline, deadline, deadline, None)
    set_columns(ledger, stored, state="stored", stored_at=NOW)
    set_columns(ledger, cancelled, state="cancelled")
    set_columns(ledger, dead, state="dead")
    assert (
        ledger.deadlines.extend(stored, "x", NOW)
        == f"request {stored} is already stored (answered)"
    )
    assert ledger.deadlines.extend(cancelled, "x", NOW) == f"request {cancelled} was cancelled"
    assert ledger.deadlines.extend(old, "x", NOW) == (
        f"request {old} has no deadline (admitted before deadlines)"
    )
    assert ledger.deadlines.extend(99, "x", NOW) == "no request 99"
    # a dead request is still to answer: an operator may extend it, then retry it
    assert isinstance(ledger.deadlines.extend(dead, "x", NOW), Extension)


def test_two_operators_extending_at_once_extend_once(ledger: Ledger) -> None:
    (request_id,) = with_deadlines(
        ledger, timed("ccpa", "2026-01-01 09:00", "2026-02-15 23:59:59.999999")
    )
    results: list[Extension | str] = []
    start = threading.Barrier(4)

    def extend(n: int) -> None:
        start.wait()
        results.append(ledger.deadlines.extend(request_id, f"operator {n}", NOW))

    threads = [threading.Thread(target=extend, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(r, Extension) for r in results) == 1
    assert len(ledger.requests.events(request_id)) == 2


def test_dsar_extend_on_the_command_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI reads the system clock: the request is received a day before it."""
    monkeypatch.setenv("DSAR_DATABASE_URL", database_url)
    ledger = Ledger(sessionmaker(make_engine(database_url), expire_on_commit=False), 1000)
    now = SystemClock().now()
    received = now - timedelta(days=1)
    enqueue(ledger, regime="ccpa", received_at=received.replace(tzinfo=None).isoformat(" "))
    admit_checked(ledger, now=now)
    until = (received + timedelta(days=90)).date()

    assert main(["extend", "1", "--reason", "  needs   the processor's records "]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"request 1: deadline extended to {until} (ccpa allows one extension, of 45 days): "
        "needs the processor's records\n"
    )
    assert main(["extend", "1", "--reason", "again"]) == 1
    assert "not extended: request 1: already extended once" in capsys.readouterr().err
    assert main(["extend", "1", "--reason", "   "]) == 2
    assert "--reason must say why" in capsys.readouterr().err
    assert main(["status", "1"]) == 0
    shown = capsys.readouterr().out
    assert "  deadline: open (ccpa; received " in shown
    assert f"  extended until the end of {until} UTC: needs the processor's records" in shown
    assert main(["status"]) == 0
    overview = capsys.readouterr().out
    assert "deadlines: 1 open request(s) with a deadline; 0 past 50%, 0 past 80%" in overview
    assert f"  #1 queued     ccpa due by the end of {until} UTC, 1% of the time used" in overview


# -- the shares of time gone (metrics) -----------------------------------------------------


def test_open_requests_are_counted_by_the_share_of_their_time_gone(ledger: Ledger) -> None:
    """Ten days to answer each (round shares), received so many days before now."""
    now = at("2026-01-06 00:01")

    def received_days_ago(d: float, regime: str = "ccpa", extended: float = 0) -> Deadline:
        received = now - timedelta(days=d)
        due = received + timedelta(days=10)
        return Deadline(regime, received, due, due + timedelta(days=extended) if extended else None)

    ids = with_deadlines(
        ledger,
        received_days_ago(1),  # 10%
        received_days_ago(5.01),  # 50.1%: past half
        received_days_ago(8.5),  # 85%: past 80%
        received_days_ago(12),  # past the deadline
        received_days_ago(12, extended=10),  # 60% of the extended time
        received_days_ago(9, regime="gdpr"),  # 90%
        received_days_ago(12),  # stored: answered, not counted
        received_days_ago(12),  # cancelled
        received_days_ago(12),  # dead: still to answer, counted
        None,  # no deadline
    )
    set_columns(ledger, ids[6], state="stored", stored_at=now)
    set_columns(ledger, ids[7], state="cancelled")
    set_columns(ledger, ids[8], state="dead")
    counts = {c.regime: c for c in ledger.deadlines.open_counts(now)}
    assert set(counts) == {"ccpa", "gdpr"}
    ccpa, gdpr = counts["ccpa"], counts["gdpr"]
    assert (ccpa.open, ccpa.past, ccpa.missed) == (6, {0.5: 5, 0.8: 3}, 2)
    assert (gdpr.open, gdpr.past, gdpr.missed) == (1, {0.5: 1, 0.8: 1}, 0)
    # over the whole ledger: the two open ones past it, and the one answered late
    assert ledger.deadlines.misses(now) == (9, 3)
    set_columns(ledger, ids[6], stored_at=now - timedelta(days=2.5))  # on time after all
    assert ledger.deadlines.misses(now) == (9, 2)
    set_columns(ledger, ids[7], state="stored", stored_at=now)  # the cancelled one, late
    assert ledger.deadlines.misses(now) == (9, 3)
    # the nearest deadlines in force first (the extended one is not among them)
    assert [r.id for r in ledger.deadlines.nearest(4)] == [ids[3], ids[8], ids[5], ids[2]]

    metrics = Metrics()
    metrics.watch_ledger(ledger, lambda: now, timedelta(days=6), 14_400)
    sample = metrics.registry.get_sample_value
    assert sample("dsar_requests_deadline_open", {"regime": "ccpa"}) == 6
    assert sample("dsar_requests_deadline_elapsed", {"regime": "ccpa", "share": "0.5"}) == 5
    assert sample("dsar_requests_deadline_elapsed", {"regime": "ccpa", "share": "0.8"}) == 3
    assert sample("dsar_requests_deadline_missed", {"regime": "ccpa"}) == 2
    assert sample("dsar_requests_deadline_elapsed", {"regime": "gdpr", "share": "0.8"}) == 1
    # every regime of the table is there, at 0 when it has no request
    assert sample("dsar_requests_deadline_missed", {"regime": "vcdpa"}) == 0


# -- urgency: submissions and polls --------------------------------------------------------


def test_the_nearest_deadlines_are_submitted_first(ledger: Ledger) -> None:
    ids = with_deadlines(
        ledger,
        timed("ccpa", "2026-01-01 09:00", "2026-02-15 23:59:59.999999"),
        None,
        timed("gdpr", "2026-01-02 09:00", "2026-02-02 23:59:59.999999"),
        timed("ccpa", "2025-11-01 09:00", "2025-12-16 23:59:59.999999"),  # past due already
        timed("ccpa", "2025-12-01 09:00", "2026-01-15 23:59:59.999999", "2026-03-01 23:59"),
        timed("gdpr", "2026-01-02 09:00", "2026-02-02 23:59:59.999999"),
    )
    # a failed request goes first among equal deadlines (5 before 2), not before a nearer one
    set_columns(ledger, ids[0], state="failed")
    set_columns(ledger, ids[5], state="failed")
    order = [r.id for r in ledger.requests.due_submits(NOW, 10)]
    assert order == [ids[3], ids[5], ids[2], ids[0], ids[4], ids[1]]
    assert [r.id for r in ledger.requests.due_submits(NOW, 2)] == [ids[3], ids[5]]
    assert ledger.facts.submit_head_months(NOW, 10) == [1] * 6


def test_poll_candidates_carry_the_deadline_in_force(ledger: Ledger) -> None:
    ids = with_deadlines(
        ledger,
        timed("ccpa", "2026-01-01 09:00", "2026-02-15 23:59:59.999999"),
        timed("ccpa", "2026-01-01 09:00", "2026-02-15 23:59:59.999999", "2026-04-01 23:59"),
        None,
    )
    for request_id in ids:
        set_columns(ledger, request_id, state="submitted", submitted_at=NOW, remote_request_id=1)
    deadlines = {c.id: c.deadline for c in ledger.facts.poll_candidates()}
    assert deadlines == {
        ids[0]: end_of("2026-02-15"),
        ids[1]: at("2026-04-01 23:59"),
        ids[2]: None,
    }


def test_with_room_for_two_submissions_the_two_nearest_deadlines_go(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """The whole tick, its submissions capped at two (DSAR_SUBMIT_BATCH_SIZE): the two rows
    with the nearest deadlines are submitted, whatever order they were queued in."""
    received = ["2026-01-04 09:00:00", "2025-12-01 09:00:00", "2026-01-05 08:00:00", "2025-12-20"]
    with harness(database_url, tmp_path, clock, submit_batch_size=2) as h:
        for n, when in enumerate(received):
            h.enqueue(300 + n)
            with h.app.sessions() as session, session.begin():
                session.execute(
                    text("UPDATE dsar_queue SET regime = 'ccpa', received_at = :r WHERE id = :i"),
                    {"r": when, "i": n + 1},
                )
        h.tick()
        states = {n: h.app.ledger.requests.get(n) for n in range(1, 5)}
    submitted = sorted(n for n, r in states.items() if r and r.state == State.SUBMITTED)
    assert submitted == [2, 4]
