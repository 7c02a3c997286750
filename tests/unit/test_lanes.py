"""The lanes a tick sends its calls on, and the fan-out that keeps them full: never more than
``width`` calls at once, and every call sent is settled, whatever stops the fan-out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dsar_scheduler.tick.context import Context
from dsar_scheduler.tick.fanout import api_answer, fan_out
from dsar_scheduler.tick.lanes import InlineLanes, Lanes, ThreadLanes, lanes_for
from dsar_scheduler.tick.report import StopTick


class Running:
    """Work that counts how many copies of itself run at once and waits for ``go``."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.now = 0
        self.most = 0
        self.go = threading.Event()

    def work(self, value: int = 0) -> Callable[[], int]:
        def run() -> int:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
                self.lock.notify_all()
            self.go.wait(10)
            with self.lock:
                self.now -= 1
            return value

        return run

    def wait_for(self, count: int) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: self.now == count, timeout=10), self.now


@pytest.fixture
def threads() -> Iterator[ThreadLanes]:
    lanes = ThreadLanes(4)
    yield lanes
    lanes.close()


def test_thread_lanes_run_at_most_width_at_once(threads: ThreadLanes) -> None:
    running = Running()
    futures = [threads.start(running.work(n)) for n in range(12)]
    running.wait_for(4)
    assert sum(f.running() for f in futures) == 4
    assert not any(f.done() for f in futures)
    running.go.set()
    assert [f.result(timeout=10) for f in futures] == list(range(12))
    assert running.most == 4


def test_wait_any_returns_what_finished_or_nothing(threads: ThreadLanes) -> None:
    running = Running()
    slow = threads.start(running.work())
    quick = threads.start(lambda: 7)
    assert threads.wait_any({slow, quick}, timeout=10) == {quick}
    assert threads.wait_any({slow}, timeout=0.01) == set()
    running.go.set()
    assert threads.wait_any({slow}, timeout=10) == {slow}


def test_inline_lanes_run_the_work_at_once_in_the_callers_thread() -> None:
    lanes = InlineLanes()
    assert lanes.width == 1
    future = lanes.start(threading.get_ident)
    assert future.done() and future.result() == threading.get_ident()
    failed = lanes.start(lambda: 1 // 0)
    assert isinstance(failed.exception(), ZeroDivisionError)
    pending: Future[int] = Future()
    assert lanes.wait_any({future, pending}, timeout=0) == {future}


def test_the_service_uses_threads_at_every_width() -> None:
    """At width 1 too: the tick's thread stays free to renew the lease during a download."""
    for width in (1, 8):
        lanes = lanes_for(width)
        assert isinstance(lanes, ThreadLanes) and lanes.width == width
        assert lanes.start(threading.get_ident).result(timeout=10) != threading.get_ident()
        lanes.close()


# -- the fan-out ------------------------------------------------------------------------------


def context(lanes: Lanes) -> Context:
    """What the fan-out reads of a tick's context: lanes, the stop flag, a lease just
    renewed, and no batch yet (no ledger is touched: the settles here write nothing)."""
    ctx = SimpleNamespace(lanes=lanes, stop=threading.Event(), renewed=time.monotonic(), batch=None)
    return cast(Context, ctx)


class Settled:
    """Settles that note what they were given; ``stop_on``: those values stop the tick."""

    def __init__(self, stop_on: tuple[int, ...] = ()) -> None:
        self.values: list[int] = []
        self.stop_on = stop_on

    def __call__(self, future: Future[Any]) -> None:
        value = future.result()
        self.values.append(value)
        if value in self.stop_on:
            raise StopTick(f"stopped by {value}")


def test_the_fan_out_keeps_width_calls_in_flight_and_settles_them_all(
    threads: ThreadLanes,
) -> None:
    ctx = context(threads)
    running, settled = Running(), Settled()
    threading.Thread(target=lambda: (running.wait_for(4), running.go.set())).start()
    with fan_out(ctx) as fan:
        for n in range(10):
            fan.lane()
            fan.start(running.work(n), settled)
    assert sorted(settled.values) == list(range(10))
    assert running.most == 4
    assert fan.flights == {}


def test_a_settle_that_stops_the_tick_still_lets_every_call_in_flight_be_settled(
    threads: ThreadLanes,
) -> None:
    ctx = context(threads)
    running, settled = Running(), Settled(stop_on=(0, 2))
    with pytest.raises(StopTick, match="stopped by 0"), fan_out(ctx) as fan:
        for n in range(4):
            fan.lane()
            fan.start(running.work(n), settled)
        running.go.set()
        wait(list(fan.flights), timeout=10)
        fan.lane()  # settles 0 first (the order sent), which stops the tick
        fan.start(running.work(99), settled)  # never reached
    # 1, 2 and 3 were settled on the way out; 2's own stop did not cut that short
    assert settled.values == [0, 1, 2, 3]
    assert fan.flights == {}


def test_shutdown_stops_sending_at_once_and_the_calls_in_flight_are_settled(
    threads: ThreadLanes,
) -> None:
    ctx = context(threads)
    running, settled = Running(), Settled()
    with pytest.raises(StopTick, match="shutdown"), fan_out(ctx) as fan:
        for n in range(3):
            fan.lane()
            fan.start(running.work(n), settled)
        running.wait_for(3)
        ctx.stop.set()
        running.go.set()
        fan.lane()
        fan.start(running.work(99), settled)  # never reached
    assert sorted(settled.values) == [0, 1, 2]


def test_an_error_on_the_way_out_still_settles_the_calls_in_flight(
    threads: ThreadLanes,
) -> None:
    ctx = context(threads)
    running, settled = Running(), Settled()
    with pytest.raises(RuntimeError, match="database gone"), fan_out(ctx) as fan:
        fan.lane()
        fan.start(running.work(1), settled)
        running.go.set()
        raise RuntimeError("database gone")
    assert settled.values == [1]


def test_inline_lanes_fan_out_one_call_at_a_time() -> None:
    ctx = context(InlineLanes())
    order: list[str] = []

    def work(n: int) -> Callable[[], int]:
        def run() -> int:
            order.append(f"send {n}")
            return n

        return run

    def settle(future: Future[Any]) -> None:
        order.append(f"settle {future.result()}")

    with fan_out(ctx) as fan:
        for n in range(3):
            fan.lane()
            fan.start(work(n), settle)
    assert order == ["send 0", "settle 0", "send 1", "settle 1", "send 2", "settle 2"]


def test_api_answer_hands_back_the_apis_refusal_as_a_value() -> None:
    from dsar_scheduler.adapters.amplitude import ApiError, ErrorKind

    err = ApiError(ErrorKind.RATE_LIMITED, "429")

    def refused() -> int:
        raise err

    assert api_answer(refused) is err
    assert api_answer(lambda: 5) == 5
    with pytest.raises(ZeroDivisionError):
        api_answer(lambda: 1 // 0)


def test_dsar_concurrency_defaults_to_eight_and_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dsar_scheduler.config import ConfigError, load_settings

    assert load_settings().concurrency == 8
    monkeypatch.setenv("DSAR_CONCURRENCY", "3")
    assert load_settings().concurrency == 3
    for bad in ("0", "65"):
        monkeypatch.setenv("DSAR_CONCURRENCY", bad)
        with pytest.raises(ConfigError, match="DSAR_CONCURRENCY"):
            load_settings()
