"""Where a tick's network work runs: up to ``width`` pieces of it at once (DSAR_CONCURRENCY).

Work given to a lane does network and storage only (the Amplitude client, a download, the
storage put with its verifier); it never touches the ledger, ``ctx.batch`` or ``ctx.report``.
Every ledger write happens in the tick's own thread when the work's future is settled
(``tick.fanout``), so the database sees one tick thread as before."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

R = TypeVar("R")


class Lanes(Protocol):
    """Where a tick's network work runs: up to ``width`` pieces of work at once."""

    @property
    def width(self) -> int: ...

    def start(self, work: Callable[[], R]) -> Future[R]: ...

    def wait_any(self, pending: Collection[Future[Any]], timeout: float) -> set[Future[Any]]:
        """At least one finished future of ``pending`` (or none after ``timeout`` wall
        seconds)."""
        ...

    def close(self) -> None: ...


class ThreadLanes:
    """A pool of ``width`` threads over the shared (thread-safe) httpx clients. The caller
    keeps at most ``width`` pieces of work started and not settled, so none waits for a
    thread."""

    def __init__(self, width: int) -> None:
        if width < 1:
            raise ValueError("width must be at least 1")
        self._width = width
        self._pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="dsar-lane")

    @property
    def width(self) -> int:
        return self._width

    def start(self, work: Callable[[], R]) -> Future[R]:
        return self._pool.submit(work)

    def wait_any(self, pending: Collection[Future[Any]], timeout: float) -> set[Future[Any]]:
        done, _ = concurrent.futures.wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        return set(done)

    def close(self) -> None:
        """Stop the threads once their work is done (a tick leaves none in flight)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class InlineLanes:
    """One lane, the caller's own thread: ``start`` runs the work at once and hands back a
    finished future. For tools and tests that want no threads; the service uses
    ``ThreadLanes`` even at width 1 (``lanes_for``)."""

    width = 1

    def start(self, work: Callable[[], R]) -> Future[R]:
        future: Future[R] = Future()
        try:
            future.set_result(work())
        except Exception as exc:
            future.set_exception(exc)
        return future

    def wait_any(self, pending: Collection[Future[Any]], timeout: float) -> set[Future[Any]]:
        return {future for future in pending if future.done()}

    def close(self) -> None:
        return None


def lanes_for(width: int) -> Lanes:
    """The service's lanes for DSAR_CONCURRENCY: threads at every width. At width 1 too, so
    the tick's thread stays free to renew the lease and look at the stop flag while one long
    download runs (a download on the tick's own thread could outlast the lease)."""
    return ThreadLanes(width)
