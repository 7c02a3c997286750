"""Streaming verification of a DSAR result file: gzipped JSON lines, one event per line.

A file is stored under its final name only after this verifier accepted every byte of it, so a
truncated download, a corrupt body or an error page served with status 200 is never mistaken
for a result. The check runs while the bytes stream past, in memory that does not grow with the
file: the decompressed text is produced in bounded slices and only the unfinished last line is
kept.

Speed: inflating is the slowest part and zlib releases the GIL while it works, so past the
first MiB it runs on a worker thread, a bounded step (at most 2 MiB of text) ahead of the
caller, who meanwhile hashes, parses the lines of the step before, stores the bytes and reads
the network: work that needs the GIL stays on one thread. Lines are parsed a slice at a time
with the ``json`` module's own scanner; a line that scanner does not accept outright is judged
by the plain one-line path (``_line``), so what is accepted, and the message of what is not,
do not depend on how the text was sliced.
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
import re
import weakref
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn, cast

__all__ = ["GzipJsonLinesVerifier", "VerificationError", "VerifiedFile"]

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 31  # 16 + MAX_WBITS: a gzip wrapper; zlib checks the CRC-32 and ISIZE trailer
_MIB = 2**20
_SLICE = 2 * _MIB  # most text one inflate step makes: bounds memory, fits a 1 MiB chunk's text
_PIECE = 256 * 1024  # most compressed bytes per zlib call: bounds the unconsumed-tail copy
_THREAD_AFTER = _MIB  # a file this big so far is inflated on the worker (small ones inline)
#: Longest line accepted. The largest event Amplitude's SDKs send is about 8 MiB (1,000
#: properties of at most 4 KiB, twice); a line costs about three times its length to check.
MAX_LINE_BYTES = 16 * _MIB

# zlib's words for a failed trailer check, and ours.
_ZLIB_MESSAGES = {
    "incorrect data check": "gzip CRC check failed",
    "incorrect length check": "gzip length check failed (ISIZE does not match the data)",
}

_BLANK = re.compile(rb"[ \t\n\r\x0b\x0c]*")  # what bytes.strip() removes: a blank line
_JSON_SPACE = " \t\r"  # JSON whitespace, less the newline that ends a line
#: ``json.loads``'s own C scanner: one JSON value at an offset of a longer text.
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    cast(Any, json.JSONDecoder())  # typeshed types the argument as the scanner class itself
)


@dataclass(frozen=True)
class VerifiedFile:
    """What the ledger and the manifest record about a stored file."""

    bytes: int  # bytes of the gzip stream as stored (never re-encoded)
    sha256: str  # hex digest of those bytes
    event_count: int  # JSON lines (events) inside


class VerificationError(Exception):
    """The stream is not a complete, intact gzip of JSON-object lines; the message says why."""


def _size(n: int) -> str:
    return f"{n // _MIB} MiB" if n >= _MIB and n % _MIB == 0 else f"{n} bytes"


class _Input:
    """A received chunk not yet wholly inflated: its bytes, how far zlib has read, and where
    it starts in the stream (for messages)."""

    __slots__ = ("data", "offset", "pos")

    def __init__(self, data: bytes, offset: int) -> None:
        self.data = memoryview(data)
        self.offset = offset
        self.pos = 0


_Step = tuple[list[bytes], "VerificationError | None"]


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
        self._events = 0
        self._line_no = 0  # physical lines completed so far, blank ones included
        self._partial = bytearray()  # the unfinished last line
        self._error: VerificationError | None = None
        self._result: VerifiedFile | None = None
        self._closed = False
        # Inflating (touched only by the step in flight, if there is one):
        self._members = 0  # gzip members started
        self._decomp: zlib._Decompress | None = None  # the member in progress, if any
        self._head = b""  # first bytes of the member in progress, until the magic is checked
        self._undrained = False  # the last zlib call filled its output: more may be pending
        # The pipeline (touched only by the caller):
        self._work: deque[_Input] = deque()  # received, not yet wholly inflated
        self._ready: list[bytes] = []  # inflated, not yet split into lines
        self._inflight: Future[_Step] | None = None
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
                self._fail(
                    f"got more than {self.expected_length} bytes "
                    f"({self._bytes} so far), Content-Length said {self.expected_length}"
                )
            if chunk:
                self._work.append(_Input(bytes(chunk), self._bytes - len(chunk)))
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

    @staticmethod
    def _fail(message: str) -> NoReturn:
        raise VerificationError(message)

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
            self._fail(f"got {self._bytes} bytes, Content-Length said {self.expected_length}")
        if self._members == 0:
            self._fail("not a gzip file (the stream is empty)")
        if self._decomp is not None:
            self._fail(f"gzip stream truncated (ended after {self._bytes} bytes)")
        if self._partial:  # a last line without its newline is still a line
            self._line(self._partial)
            self._partial.clear()
        return VerifiedFile(
            bytes=self._bytes, sha256=self._hash.hexdigest(), event_count=self._events
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
            self._step_done(self._step(self._work[0]))
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsar-inflate")
            # Also when the verifier is dropped without finish() or close().
            self._worker_done = weakref.finalize(self, _retire, self._worker)
        self._inflight = self._worker.submit(self._step, self._work[0])

    def _step_done(self, result: _Step) -> None:
        """Take a finished step's text, drop the input it used up, raise the error it met
        (after the text before it, which comes first in the file, has been checked)."""
        outs, error = result
        self._ready.extend(outs)
        while self._work and self._work[0].pos >= len(self._work[0].data) and not self._undrained:
            self._work.popleft()
        if error is not None:
            self._parse_ready()
            raise error

    def _parse_ready(self) -> None:
        while self._ready:
            self._text(self._ready.pop(0))

    # -- internals: inflating (the worker's thread, or inline) ----------------------------

    def _step(self, item: _Input) -> _Step:
        """Inflate from ``item`` until ``_SLICE`` bytes came out or its input is used up.

        Capping each zlib call's output is what keeps memory bounded for a highly
        compressible chunk: a 1 MiB chunk can expand to 1 GiB, and only ``_SLICE`` of it
        exists at a time.
        """
        outs: list[bytes] = []
        room = _SLICE
        data = item.data
        try:
            while room:
                pos = item.pos
                if self._decomp is None:
                    if pos >= len(data):
                        break
                    self._decomp = zlib.decompressobj(wbits=_GZIP_WBITS)
                    self._members += 1
                    self._head = b""
                if len(self._head) < len(_GZIP_MAGIC):
                    self._check_magic(item)
                piece = data[pos : pos + _PIECE]
                try:
                    out = self._decomp.decompress(piece, room)
                except zlib.error as exc:
                    self._fail(self._describe_zlib_error(exc))
                # A full output may leave more pending inside zlib even with no input left.
                self._undrained = len(out) == room
                if out:
                    outs.append(out)
                    room -= len(out)
                if self._decomp.eof:
                    item.pos = pos + len(piece) - len(self._decomp.unused_data)
                    self._decomp = None
                    self._undrained = False
                    continue
                item.pos = pos + len(piece) - len(self._decomp.unconsumed_tail)
                if item.pos >= len(data) and not self._undrained:
                    break
        except VerificationError as exc:
            return outs, exc
        return outs, None

    def _check_magic(self, item: _Input) -> None:
        """Tell "not gzip at all" and "junk after the last member" apart from corrupt data."""
        pos = item.pos
        self._head += item.data[pos : pos + len(_GZIP_MAGIC) - len(self._head)].tobytes()
        if _GZIP_MAGIC.startswith(self._head):
            return
        if self._members == 1:
            self._fail("not a gzip file (bad magic number)")
        self._fail(f"trailing garbage after the gzip stream at byte {item.offset + pos}")

    def _describe_zlib_error(self, exc: zlib.error) -> str:
        detail = str(exc).split(": ", 1)[-1]
        where = f" (gzip member {self._members})" if self._members > 1 else ""
        return _ZLIB_MESSAGES.get(detail, f"gzip stream corrupt: {detail}") + where

    # -- internals: lines (caller's thread) -----------------------------------------------

    def _text(self, out: bytes) -> None:
        """Split decompressed text into lines, keeping only the unfinished last one."""
        start = 0
        if self._partial:
            newline = out.find(b"\n")
            if newline < 0:
                self._extend_partial(out)
                return
            self._check_line_length(len(self._partial) + newline)
            self._partial += memoryview(out)[:newline]
            self._line(self._partial)  # empties it
            self._partial.clear()
            start = newline + 1
        last = out.rfind(b"\n")
        if last >= start:
            self._lines(out if start == 0 and last == len(out) - 1 else out[start : last + 1])
            start = last + 1
        if start < len(out):
            self._extend_partial(memoryview(out)[start:])

    def _extend_partial(self, data: bytes | memoryview) -> None:
        self._check_line_length(len(self._partial) + len(data))
        self._partial += data

    def _check_line_length(self, length: int) -> None:
        if length > self.max_line_bytes:
            self._fail(f"line {self._line_no + 1} longer than {_size(self.max_line_bytes)}")

    def _lines(self, data: bytes) -> None:
        """Check the complete lines in ``data`` (which ends with a newline), in order.

        The fast path decodes them at once and runs the ``json`` scanner along the text,
        counting a line that holds exactly one JSON object; any other line (blank, invalid,
        not an object, not UTF-8, too long) goes to ``_line``, which accepts or rejects it as
        if it had come alone.
        """
        if len(data) > self.max_line_bytes:
            too_long = self._first_long_line(data)
            if too_long >= 0:
                self._lines(data[:too_long])
                self._check_line_length(data.index(b"\n", too_long) - too_long)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = data.rfind(b"\n", 0, exc.start) + 1
            end = data.index(b"\n", exc.start)
            if bad:
                self._lines(data[:bad])
            self._line(data[bad:end])  # raises: the line is not UTF-8
            self._lines(data[end + 1 :])
            return
        scan, find = _scan, text.find
        first_line, events = self._line_no, 0
        pos, lines, size = 0, 0, len(text)
        while pos < size:
            newline = find("\n", pos)
            try:
                value, end = scan(text, pos)
            except (StopIteration, ValueError, RecursionError):
                value = None
            if type(value) is dict and (
                end == newline or (end < newline and not text[end:newline].strip(_JSON_SPACE))
            ):
                events += 1
            else:
                self._line_no, self._events = first_line + lines, self._events + events
                events = 0
                self._line(text[pos:newline].encode("utf-8"))
            lines += 1
            pos = newline + 1
        self._line_no, self._events = first_line + lines, self._events + events

    def _first_long_line(self, data: bytes) -> int:
        """Offset of the first line in ``data`` longer than the limit, or -1."""
        pos = 0
        while pos < len(data):
            newline = data.index(b"\n", pos)
            if newline - pos > self.max_line_bytes:
                return pos
            pos = newline + 1
        return -1

    def _line(self, line: bytes | bytearray) -> None:
        """One line on its own: blank, or one JSON object in UTF-8, or an error naming it."""
        self._line_no += 1
        if _BLANK.fullmatch(line):
            return  # blank lines (a trailing newline, CRLF endings) are not events
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(f"line {self._line_no} is not valid UTF-8")
        if isinstance(line, bytearray):
            line.clear()  # the unfinished-line buffer: a long line is not held three times
        try:
            value = json.loads(text)
        except ValueError:
            self._fail(f"line {self._line_no} is not valid JSON")
        except RecursionError:
            self._fail(f"line {self._line_no} is nested too deeply to parse")
        if not isinstance(value, dict):
            self._fail(f"line {self._line_no} is not a JSON object")
        self._events += 1


def _retire(worker: ThreadPoolExecutor) -> None:
    worker.shutdown(wait=False)
