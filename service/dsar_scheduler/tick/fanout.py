"""Calls sent on the lanes, answers settled in the tick's thread.

The tick's thread reserves each call (``spend``), waits for a free lane, starts the call there,
and settles every answer itself: the ledger, the batch and the report are only ever touched
here. While it waits it renews the lease and looks at the stop flag. Whatever ends the fan-out
early (a 429, credentials refused, the lease lost, shutdown, an error), every call already sent
is waited for and recorded before the tick goes on: a call that was sent is never forgotten."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from dsar_scheduler.adapters.amplitude import ApiError
from dsar_scheduler.logs import get_logger
from dsar_scheduler.tick import limits
from dsar_scheduler.tick.batch import batch_of_calls, flush
from dsar_scheduler.tick.context import Context, keep_lease
from dsar_scheduler.tick.report import StopTick

log = get_logger("dsar.tick")

R = TypeVar("R")


def api_answer(call: Callable[[], R]) -> R | ApiError:
    """Run ``call`` on a lane: the API's refusal comes back as a value, to be settled."""
    try:
        return call()
    except ApiError as err:
        return err


@dataclass
class _Flight:
    order: int
    settle: Callable[[Future[Any]], None]


class FanOut:
    """The calls of one fan-out in flight: at most ``ctx.lanes.width`` of them."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.flights: dict[Future[Any], _Flight] = {}
        self.started = 0
        self.settled = 0

    def lane(self) -> None:
        """Wait for a free lane, settling the calls that finish meanwhile. ``StopTick`` on
        shutdown, a lost lease, or an answer that stops the tick (a 429): nothing more is
        sent then."""
        while True:
            if self.ctx.stop.is_set():
                raise StopTick("shutdown")
            keep_lease(self.ctx)
            if len(self.flights) < self.ctx.lanes.width:
                return
            self._settle(self._wait())

    def start(self, work: Callable[[], R], settle: Callable[[Future[R]], None]) -> None:
        """Send ``work`` (network and storage only) on a lane; ``settle`` gets its future in
        the tick's thread once it is done. Call ``lane`` first."""
        future = self.ctx.lanes.start(work)
        self.flights[future] = _Flight(self.started, settle)
        self.started += 1

    def drain(self, error: BaseException | None) -> BaseException | None:
        """Wait for every call in flight and settle it, also after ``error``: each is
        recorded even if another settle stops the tick. The first error is returned."""
        renewing = True
        while self.flights:
            if renewing:  # long downloads may still be running: the lease must outlive them
                try:
                    keep_lease(self.ctx)
                except Exception as exc:
                    renewing, error = False, error or exc
            for future in self._in_order(self._wait()):
                try:
                    self._settle_one(future)
                except Exception as exc:
                    if error is None:
                        error = exc
                    else:
                        log.info("tick.settled_after_stop", error=f"{type(exc).__name__}: {exc}")
        return error

    def _wait(self) -> set[Future[Any]]:
        return self.ctx.lanes.wait_any(self.flights.keys(), limits.LANE_WAIT_S)

    def _in_order(self, done: Collection[Future[Any]]) -> list[Future[Any]]:
        """Settled in the order sent, so runs at the same timings are repeatable."""
        return sorted(done, key=lambda future: self.flights[future].order)

    def _settle(self, done: Collection[Future[Any]]) -> None:
        for future in self._in_order(done):
            self._settle_one(future)

    def _settle_one(self, future: Future[Any]) -> None:
        self.flights.pop(future).settle(future)
        self.settled += 1
        if self.settled % limits.CHUNK == 0:
            flush(self.ctx)  # a chunk of answers per transaction, as a serial tick writes them


@contextmanager
def fan_out(ctx: Context) -> Iterator[FanOut]:
    """A fan-out whose answers are written in batches (``batch_of_calls``); on the way out,
    however it ends, every call still in flight is waited for and settled, then the first
    error (a ``StopTick``, say) goes on."""
    fan = FanOut(ctx)
    with batch_of_calls(ctx):
        try:
            yield fan
        except BaseException as exc:
            fan.drain(exc)
            raise
        error = fan.drain(None)
        if error is not None:
            raise error
