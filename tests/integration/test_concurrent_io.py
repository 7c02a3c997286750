"""Polls and file fetches on DSAR_CONCURRENCY lanes, over real loopback HTTP against the
emulator: every lane used and never more, submissions one at a time, the budget never passed,
and every call that was sent recorded whatever stops the tick (a 429, SIGTERM, a failure).

The transports count the requests in flight (a request ends when its body is closed) and can
hold the first few requests of an origin until that many are in flight at once: so a test
knows the lanes really ran together, with no timing in its assertions."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.core.states import State
from dsar_scheduler.runtime.migrate import upgrade
from dsar_scheduler.tick.spend import BUDGET_FULL
from tests.support.faultkit import is_status, swap_client
from tests.support.harness import Harness, harness

FAST = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}
HALF_HOUR = timedelta(minutes=30)


@dataclass
class _Hold:
    origin: str
    count: int
    then: Callable[[], None] | None
    arrived: int = 0
    released: bool = False


class InFlight:
    """Requests in flight across the transports that share it, and the most seen at once."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()  # per origin, and "all"
        self.sent: Counter[str] = Counter()
        self._hold: _Hold | None = None

    def reset(self) -> None:
        with self.lock:
            self.most.clear()
            self.sent.clear()

    def hold(self, origin: str, count: int, then: Callable[[], None] | None = None) -> None:
        """The next ``count`` requests to ``origin`` wait until all of them are in flight;
        then ``then`` runs and they go on (after 10 s they go on anyway, and the test's
        count of the most in flight shows it)."""
        self._hold = _Hold(origin, count, then)

    def enter(self, origin: str) -> None:
        with self.lock:
            for key in (origin, "all"):
                self.now[key] += 1
                self.most[key] = max(self.most[key], self.now[key])
            self.sent[origin] += 1
            hold = self._hold
            if hold is None or hold.origin != origin:
                return
            hold.arrived += 1
            if hold.arrived == hold.count:
                self._hold = None
                if hold.then is not None:
                    hold.then()
                hold.released = True
                self.lock.notify_all()
            else:
                self.lock.wait_for(lambda: hold.released, timeout=10)

    def leave(self, origin: str) -> None:
        with self.lock:
            for key in (origin, "all"):
                self.now[key] -= 1


class _Body(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, done: Callable[[], None]) -> None:
        self.inner = inner
        self.done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        yield from self.inner

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self.done is not None:
                self.done, done = None, self.done
                done()


class Counted(httpx.BaseTransport):
    """Forwards to the network, counting in ``flights``; ``fail``: requests it answers by
    raising (a bug's exception, not the network's) instead of sending."""

    def __init__(
        self,
        flights: InFlight,
        origin: str,
        fail: Callable[[httpx.Request], bool] | None = None,
    ) -> None:
        self.inner = httpx.HTTPTransport()
        self.flights = flights
        self.origin = origin
        self.fail = fail

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.fail is not None and self.fail(request):
            raise RuntimeError("a bug on a lane")
        self.flights.enter(self.origin)
        try:
            response = self.inner.handle_request(request)
        except BaseException:
            self.flights.leave(self.origin)
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        body = _Body(response.stream, lambda: self.flights.leave(self.origin))
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=body,
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


def counted(h: Harness, fail: Callable[[httpx.Request], bool] | None = None) -> InFlight:
    flights = InFlight()
    swap_client(
        h.app,
        Counted(flights, "api", fail),
        download_transport=Counted(flights, "s3"),
    )
    return flights


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/dsar.db"
    upgrade(url)
    return url


def submit_all(h: Harness, subjects: int) -> list[int]:
    """Queue ``subjects`` requests and submit them all in one tick; their remote ids."""
    for n in range(subjects):
        h.enqueue(7000 + n)
    h.tick()
    assert h.states() == {State.SUBMITTED: subjects}
    return [remote(h, rid) for rid in range(1, subjects + 1)]


def remote(h: Harness, request_id: int) -> int:
    request = h.app.ledger.requests.get(request_id)
    assert request is not None and request.remote_request_id is not None
    return request.remote_request_id


def calls(h: Harness) -> Counter[str]:
    """The ledger's calls by outcome (``reserved``: sent or not, never settled)."""
    with h.app.sessions() as session:
        rows = session.execute(text("SELECT outcome, COUNT(*) FROM dsar_api_calls GROUP BY 1"))
        return Counter({str(outcome): int(n) for outcome, n in rows})


def sent_to_emulator(h: Harness, kind: str) -> int:
    """Status GETs (``.../requests/<id>``) or output GETs (``.../outputs/<n>``) it saw."""
    parent = "requests" if kind == "status" else "outputs"
    return sum(
        1
        for c in h.emulator.calls("api")
        if c.method == "GET" and c.path.rstrip("/").split("/")[-2] == parent
    )


def status_rows(h: Harness) -> Counter[str]:
    with h.app.sessions() as session:
        rows = session.execute(
            text("SELECT outcome, COUNT(*) FROM dsar_api_calls WHERE kind = 'status' GROUP BY 1")
        )
        return Counter({str(outcome): int(n) for outcome, n in rows})


BASELINE = {"policy": "baseline", "submit_batch_size": 40, "emulator_options": FAST}


# -- every lane used, and no more --------------------------------------------------------------


@pytest.mark.parametrize("width", [8, 1])
def test_polls_and_fetches_fill_every_lane_and_submissions_stay_serial(
    database_url: str, tmp_path: Path, clock: FakeClock, width: int
) -> None:
    with harness(database_url, tmp_path, clock, concurrency=width, **BASELINE) as h:
        flights = counted(h)
        remote_ids = submit_all(h, 40)
        assert flights.most["all"] == 1  # the POSTs, one at a time
        clock.advance(HALF_HOUR)
        flights.reset()
        flights.hold("api", width)
        report = h.tick()
        assert report.polled == 40
        assert flights.sent["api"] == 40
        assert flights.most["all"] == width
        for remote_id in remote_ids:
            h.emulator.complete(remote_id)
        clock.advance(HALF_HOUR)
        flights.reset()
        flights.hold("s3", width)
        report = h.tick()
        assert (report.done, report.files_stored, report.requests_stored) == (40, 240, 40)
        assert flights.most["s3"] == width
        assert flights.most["all"] == width  # a redirect and its download share a lane
        assert h.states() == {State.STORED: 40}
        assert calls(h)["reserved"] == 0


def test_the_budget_binds_mid_fan_out_and_is_never_passed(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """The hour is nearly spent when 40 polls are due: exactly what is left is reserved and
    sent, eight at a time, and the tick stops on the full budget."""
    with harness(sqlite_url, tmp_path, clock, cost_budget_per_hour=1000, **BASELINE) as h:
        flights = counted(h)
        submit_all(h, 40)  # 320 of the 800
        clock.advance(timedelta(minutes=61))
        spend_elsewhere(h, 780)  # another replica's calls: 20 left this hour
        flights.hold("api", 8)
        report = h.tick()
        assert report.stopped_by == BUDGET_FULL
        assert flights.most["all"] == 8
        assert sent_to_emulator(h, "status") == 20 == report.polled
        assert h.app.ledger.budget.spent(clock.now()) == 800 == h.app.settings.budget_limit
        assert status_rows(h)["ok"] == 20 + 780
        assert calls(h)["reserved"] == 0
        assert h.emulator.rate_limited_count() == 0


def spend_elsewhere(h: Harness, cost: int) -> None:
    now = h.clock.now()
    tickets = h.app.ledger.budget.reserve_many("status", 1, now, [None] * cost)
    assert len(tickets) == cost
    h.app.ledger.record_chunk(now, [(t, "ok", 200) for t in tickets], [], [], [])


def test_a_backlog_larger_than_the_budget_never_passes_it_on_eight_lanes(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """The planner spending a small budget on polls and fetches eight at a time: no hour
    of the emulator's record over the limit, no 429."""
    with harness(
        sqlite_url,
        tmp_path,
        clock,
        concurrency=8,
        cost_budget_per_hour=300,
        emulator_options={**FAST, "budget_per_hour": 300},
    ) as h:
        flights = counted(h)
        for n in range(40):
            h.enqueue(5000 + n, "2025-01-01", "2025-03-31")
        h.run_until(h.all_final, max_ticks=300)
        assert h.states() == {State.STORED: 40}
        assert h.emulator.rate_limited_count() == 0
        assert flights.most["all"] <= 8
        api = sorted(h.emulator.calls("api"), key=lambda c: c.at)
        for i, first in enumerate(api):
            window = sum(c.cost for c in api[i:] if c.at < first.at + timedelta(hours=1))
            assert window <= 240
        assert calls(h)["reserved"] == 0


# -- whatever stops the tick, every call sent is recorded --------------------------------------


def test_a_429_mid_fan_out_stops_sending_and_every_call_sent_is_recorded(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, **BASELINE) as h:
        flights = counted(h)
        submit_all(h, 40)
        clock.advance(HALF_HOUR)
        h.emulator.faults.script("api", "429", count=1)
        flights.hold("api", 8)  # eight polls in flight when the 429 comes back
        report = h.tick()
        assert report.stopped_by == "rate limited"
        sent = sent_to_emulator(h, "status")
        assert 8 <= sent < 40
        rows = status_rows(h)
        assert rows["reserved"] == 0
        assert rows["rate_limited"] == 1
        assert rows["ok"] == sent - 1 == report.polled
        assert rows["not_sent"] == 40 - sent  # the chunk's other reservations released
        assert h.app.ledger.budget.backoff_until(clock.now()) is not None


def test_sigterm_mid_fan_out_stops_sending_at_once_and_records_the_calls_in_flight(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(sqlite_url, tmp_path, clock, **BASELINE) as h:
        flights = counted(h)
        submit_all(h, 40)
        clock.advance(HALF_HOUR)
        stop = threading.Event()
        flights.hold("api", 8, then=stop.set)  # the signal comes with eight polls in flight
        report = h.app.tick(stop=stop)
        assert report.stopped_by == "shutdown"
        assert sent_to_emulator(h, "status") == 8 == report.polled
        rows = status_rows(h)
        assert (rows["ok"], rows["reserved"], rows["not_sent"]) == (8, 0, 32)


def test_sigterm_stops_the_downloads_in_flight_and_leaves_no_partial_file(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(sqlite_url, tmp_path, clock, **BASELINE) as h:
        flights = counted(h)
        for remote_id in submit_all(h, 10):
            h.emulator.complete(remote_id)
        clock.advance(HALF_HOUR)
        stop = threading.Event()
        flights.hold("s3", 8, then=stop.set)  # eight downloads under way
        report = h.app.tick(stop=stop)
        assert report.stopped_by == "shutdown"
        assert report.done == 10 and report.files_stored == 0
        assert flights.sent["s3"] == 8  # nothing sent after the signal
        assert not [p for p in h.files_root.rglob("*") if p.is_file()]
        with h.app.sessions() as session:
            redirects = session.execute(
                text("SELECT COUNT(*) FROM dsar_api_calls WHERE kind = 'fetch' AND outcome = 'ok'")
            ).scalar()
            pending = session.execute(
                text("SELECT COUNT(*) FROM dsar_files WHERE state = 'pending'")
            ).scalar()
        assert (redirects, pending) == (8, 60)  # each redirect recorded, every file to fetch
        assert calls(h)["reserved"] == 0
        h.run_until(h.all_final)
        assert h.states() == {State.STORED: 10}


# -- one request's trouble stays its own -------------------------------------------------------


def test_a_failing_poll_and_a_torn_download_among_many_hold_back_no_other(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(database_url, tmp_path, clock, **BASELINE) as h:
        counted(h)
        for remote_id in submit_all(h, 20):
            h.emulator.complete(remote_id)
        clock.advance(HALF_HOUR)
        h.emulator.faults.script("api", "5xx", count=1)
        h.emulator.faults.script("s3", "torn", count=1)
        report = h.tick()
        assert report.stopped_by is None
        assert (report.polled, report.done) == (19, 19)
        assert report.files_stored == 19 * 6 - 1
        assert report.requests_stored == 18
        assert h.emulator.faults.pending() == 0
        h.run_until(h.all_final)
        assert h.states() == {State.STORED: 20}
        assert not list(h.files_root.rglob(".*.partial-*"))


def test_an_unexpected_error_on_a_lane_is_kept_to_its_request(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with harness(sqlite_url, tmp_path, clock, **BASELINE) as h:
        submit_all(h, 20)
        broken = remote(h, 7)
        counted(h, fail=lambda r: is_status(r) and r.url.path.endswith(f"/{broken}"))
        clock.advance(HALF_HOUR)
        report = h.tick()
        assert report.polled == 19 and report.outcome == "error"
        assert report.errors == ["request 7 (poll): RuntimeError"]
        request = h.app.ledger.requests.get(7)
        assert request is not None and request.state == State.SUBMITTED
        assert request.next_action_at is not None and request.next_action_at > clock.now()
