"""The simulator's lanes: a tick's network work overlapping in virtual time, run one piece
after another in this thread, so a run stays deterministic.

``width`` lanes each have the time at which they are next free. ``start`` runs the work at
once on the lane that frees first, with the shared ``FakeClock`` set to when that lane can
begin (the in-process transport moves the clock by each call's time while the work runs),
keeps the time it finished with its future, and puts the clock back. ``wait_any`` moves the
clock to the earliest finish among the futures it is given, never backwards, and returns
those that have finished by then. This is how a thread pool of ``width`` workers behaves:
work queues in order for the first free worker, and the caller sees each result at the
moment it would arrive.

Work begins in the order it is started and at non-decreasing times (each piece takes the
earliest-free lane, and the caller's clock never goes back), so calls reach the emulator in
time order unless one piece makes several calls; the emulator counts the rare charge made
out of order that would have met a 429 (``Emulator.late_overruns``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection
from concurrent.futures import Future
from datetime import datetime
from typing import Any, TypeVar

from dsar_scheduler.adapters.clock import FakeClock

R = TypeVar("R")


class VirtualLanes:
    """``Lanes`` (tick/lanes.py) on a virtual clock: ``width`` pieces of work at once."""

    def __init__(self, clock: FakeClock, width: int) -> None:
        if width < 1:
            raise ValueError("width must be >= 1")
        self._clock = clock
        self._free: list[datetime] = [clock.now()] * width
        self._finish: weakref.WeakKeyDictionary[Future[Any], datetime] = weakref.WeakKeyDictionary()
        self.started = 0
        #: Virtual seconds of work run on all lanes together (the network's time).
        self.busy_seconds = 0.0

    @property
    def width(self) -> int:
        return len(self._free)

    def start(self, work: Callable[[], R]) -> Future[R]:
        """Run ``work`` now, as it would run on the first lane free; a done future."""
        now = self._clock.now()
        lane = min(range(len(self._free)), key=self._free.__getitem__)
        self._clock.set(max(now, self._free[lane]))
        future: Future[R] = Future()
        try:
            future.set_result(work())
        except Exception as exc:  # the caller sees it from the future, as from a thread
            future.set_exception(exc)
        finally:
            finish = self._clock.now()
            self._clock.set(now)
        self.busy_seconds += (finish - max(now, self._free[lane])).total_seconds()
        self._free[lane] = finish
        self._finish[future] = finish
        self.started += 1
        return future

    def wait_any(self, pending: Collection[Future[Any]], timeout: float) -> set[Future[Any]]:
        """The futures of ``pending`` finished by the earliest finish among them, the clock
        moved to it (``timeout`` is wall time: nothing here waits on the wall clock)."""
        if not pending:
            return set()
        now = self._clock.now()
        finishes = {f: self._finish.get(f, now) for f in pending}
        at = max(now, min(finishes.values()))
        self._clock.set(at)
        return {f for f, finish in finishes.items() if finish <= at}

    def busy_until(self) -> datetime:
        """When the last piece of work started so far finishes."""
        return max(self._free)

    def close(self) -> None:
        """Nothing runs in the background: nothing to stop."""
