"""The verifier a download is fed through: hashing, counting, inflating and checking the
lines while the bytes stream past, in memory that does not grow with the file.

Inflating is the slowest part and zlib releases the GIL while it works, so past the first
``_THREAD_AFTER`` bytes it runs on a worker thread, one bounded step ahead of the caller, who
meanwhile hashes, checks the lines of the step before, stores the bytes and reads the network:
work that needs the GIL stays on one thread.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dsar_scheduler.adapters.verify.inflate import MIB, ChunkInput, GzipInflater, Step
from dsar_scheduler.adapters.verify.lines import MAX_LINE_BYTES, JsonLinesChecker
from dsar_scheduler.adapters.verify.result import VerificationError, VerifiedFile, fail

_THREAD_AFTER = MIB  # a file this big so far is inflated on the worker (small ones inline)


class GzipJsonLinesVerifier:
    """Hashes, counts, decompresses and parses a gzip JSON-lines stream fed chunk by chunk.

    ``update`` raises :class:`VerificationError` once a problem is visible (bad magic, corrupt
    deflate data, a bad line, more bytes than ``Content-Length``) so a bad download stops
    early: in the chunk's own ``update`` for a small file; for a big one (whose inflating runs
    on a worker thread, a chunk behind) by the next ``update`` or ``finish``. ``finish``
    catches what only the end can show (truncation, length mismatch). Concatenated gzip
    members are accepted, as ``gzip`` and ``zcat`` accept them. Once an error has been
    raised, every later call raises the same error. ``close`` (also done by ``finish`` and by
    any error) stops the worker of a stream given up half way; one dropped without it stops
    when collected.
    """

    def __init__(
        self, expected_length: int | None = None, max_line_bytes: int = MAX_LINE_BYTES
    ) -> None:
        if expected_length is not None and expected_length < 0:
            raise ValueError("expected_length must not be negative")
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.expected_length = expected_length
        self.max_line_bytes = max_line_bytes
        self._hash = hashlib.sha256()
        self._bytes = 0
        self._error: VerificationError | None = None
        self._result: VerifiedFile | None = None
        self._closed = False
        self._inflater = GzipInflater()  # touched only by the step in flight, if any
        self._checker = JsonLinesChecker(max_line_bytes)
        # The pipeline (touched only by the caller):
        self._work: deque[ChunkInput] = deque()  # received, not yet wholly inflated
        self._ready: list[bytes] = []  # inflated, not yet split into lines
        self._inflight: Future[Step] | None = None
        self._worker: ThreadPoolExecutor | None = None
        #: Stops the worker exactly once.
        self._worker_done: weakref.finalize[..., Any] | None = None

    # -- public ---------------------------------------------------------------------------

    def update(self, chunk: bytes) -> None:
        """Feed the next chunk of the stream as received; raise early if it is already wrong."""
        if self._result is not None:
            raise RuntimeError("update() after finish()")
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError("update() after close()")
        try:
            self._hash.update(chunk)  # while the step before inflates: both release the GIL
            self._bytes += len(chunk)
            if self.expected_length is not None and self._bytes > self.expected_length:
                fail(
                    f"got more than {self.expected_length} bytes "
                    f"({self._bytes} so far), Content-Length said {self.expected_length}"
                )
            if chunk:
                self._work.append(ChunkInput(bytes(chunk), self._bytes - len(chunk)))
                self._pump(final=False)
        except VerificationError as exc:
            self._failed(exc)
            raise

    def finish(self) -> VerifiedFile:
        """Check that the stream ended where a complete file ends and return its summary."""
        if self._result is not None:
            return self._result
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError("finish() after close()")
        try:
            self._result = self._finish()
        except VerificationError as exc:
            self._failed(exc)
            raise
        finally:
            self._stop_worker()
        return self._result

    def close(self) -> None:
        """Give up on the stream: stop the worker thread, if any. Harmless after ``finish``."""
        self._closed = True
        self._stop_worker()

    # -- internals: errors ----------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise VerificationError(str(self._error)) from self._error

    def _failed(self, exc: VerificationError) -> None:
        self._error = exc
        self._stop_worker()

    def _stop_worker(self) -> None:
        if self._worker_done is not None:
            self._worker_done()  # a step in flight ends on its own, bounded
        self._worker = self._worker_done = self._inflight = None

    def _finish(self) -> VerifiedFile:
        self._pump(final=True)  # the text still in the pipeline comes first in the file
        if self.expected_length is not None and self._bytes != self.expected_length:
            fail(f"got {self._bytes} bytes, Content-Length said {self.expected_length}")
        if self._inflater.members == 0:
            fail("not a gzip file (the stream is empty)")
        if self._inflater.in_member:
            fail(f"gzip stream truncated (ended after {self._bytes} bytes)")
        self._checker.end()
        checker = self._checker
        return VerifiedFile(
            bytes=self._bytes,
            sha256=self._hash.hexdigest(),
            event_count=checker.events,
            amplitude_ids=frozenset(checker.amplitude_ids),
            ids_capped=checker.ids_capped,
        )

    # -- internals: the pipeline (caller's thread) ----------------------------------------

    def _pump(self, final: bool) -> None:
        """Inflate what has been received, a step at a time, parsing each step's text while
        the next one runs. Unless ``final``, return with the first step of the newest chunk
        still in flight, so that it runs while the caller stores that chunk and reads the
        next; everything before it has been inflated and checked."""
        while True:
            if self._inflight is None and self._work:
                self._start_step()
            self._parse_ready()
            if self._inflight is None:
                if not self._work:
                    return
                continue
            if not final and len(self._work) == 1:
                return
            step, self._inflight = self._inflight, None
            self._step_done(step.result())

    def _start_step(self) -> None:
        if self._bytes < _THREAD_AFTER:
            self._step_done(self._inflater.step(self._work[0]))
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsar-inflate")
            # Also when the verifier is dropped without finish() or close().
            self._worker_done = weakref.finalize(self, _retire, self._worker)
        self._inflight = self._worker.submit(self._inflater.step, self._work[0])

    def _step_done(self, result: Step) -> None:
        """Take a finished step's text, drop the input it used up, raise the error it met
        (after the text before it, which comes first in the file, has been checked)."""
        outs, error = result
        self._ready.extend(outs)
        work, undrained = self._work, self._inflater.undrained
        while work and work[0].pos >= len(work[0].data) and not undrained:
            work.popleft()
        if error is not None:
            self._parse_ready()
            raise error

    def _parse_ready(self) -> None:
        while self._ready:
            self._checker.text(self._ready.pop(0))


def _retire(worker: ThreadPoolExecutor) -> None:
    worker.shutdown(wait=False)
