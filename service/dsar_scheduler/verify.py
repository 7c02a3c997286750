"""Streaming verification of a DSAR result file: gzipped JSON lines, one event per line.

A file is stored under its final name only after this verifier accepted every byte of it, so a
truncated download, a corrupt body or an error page served with status 200 is never mistaken
for a result. The check runs while the bytes stream past, in memory that does not grow with the
file: the decompressed text is produced in bounded slices and only the unfinished last line is
kept.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import NoReturn

__all__ = ["GzipJsonLinesVerifier", "VerificationError", "VerifiedFile"]

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 31  # 16 + MAX_WBITS: a gzip wrapper; zlib checks the CRC-32 and ISIZE trailer
_SLICE = 256 * 1024  # most decompressed bytes produced per zlib call: bounds memory per chunk
_MIB = 2**20

# zlib's words for a failed trailer check, and ours.
_ZLIB_MESSAGES = {
    "incorrect data check": "gzip CRC check failed",
    "incorrect length check": "gzip length check failed (ISIZE does not match the data)",
}


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


class GzipJsonLinesVerifier:
    """Hashes, counts, decompresses and parses a gzip JSON-lines stream fed chunk by chunk.

    ``update`` raises :class:`VerificationError` as soon as a problem is visible (bad magic,
    corrupt deflate data, a bad line, more bytes than ``Content-Length``) so a bad download
    stops early; ``finish`` catches what only the end can show (truncation, length mismatch).
    Concatenated gzip members are accepted, as ``gzip`` and ``zcat`` accept them. Once an
    error has been raised, every later call raises the same error.
    """

    def __init__(self, expected_length: int | None = None, max_line_bytes: int = 64 * _MIB) -> None:
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
        self._members = 0  # gzip members started
        self._decomp: zlib._Decompress | None = None  # the member in progress, if any
        self._head = b""  # first bytes of the member in progress, until the magic is checked
        self._error: VerificationError | None = None
        self._result: VerifiedFile | None = None

    # -- public ---------------------------------------------------------------------------

    def update(self, chunk: bytes) -> None:
        """Feed the next chunk of the stream as received; raise early if it is already wrong."""
        if self._result is not None:
            raise RuntimeError("update() after finish()")
        self._raise_if_failed()
        try:
            self._hash.update(chunk)
            self._bytes += len(chunk)
            if self.expected_length is not None and self._bytes > self.expected_length:
                self._fail(
                    f"got more than {self.expected_length} bytes "
                    f"({self._bytes} so far), Content-Length said {self.expected_length}"
                )
            self._feed(bytes(chunk))
        except VerificationError as exc:
            self._error = exc
            raise

    def finish(self) -> VerifiedFile:
        """Check that the stream ended where a complete file ends and return its summary."""
        if self._result is not None:
            return self._result
        self._raise_if_failed()
        try:
            self._result = self._finish()
        except VerificationError as exc:
            self._error = exc
            raise
        return self._result

    # -- internals ------------------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise VerificationError(str(self._error)) from self._error

    @staticmethod
    def _fail(message: str) -> NoReturn:
        raise VerificationError(message)

    def _finish(self) -> VerifiedFile:
        if self.expected_length is not None and self._bytes != self.expected_length:
            self._fail(f"got {self._bytes} bytes, Content-Length said {self.expected_length}")
        if self._members == 0:
            self._fail("not a gzip file (the stream is empty)")
        if self._decomp is not None:
            self._fail(f"gzip stream truncated (ended after {self._bytes} bytes)")
        if self._partial:  # a last line without its newline is still a line
            line = bytes(self._partial)
            self._partial.clear()
            self._line(line)
        return VerifiedFile(
            bytes=self._bytes, sha256=self._hash.hexdigest(), event_count=self._events
        )

    def _feed(self, data: bytes) -> None:
        """Run ``data`` through the gzip members it belongs to, starting new members as needed."""
        while data:
            if self._decomp is None:
                self._decomp = zlib.decompressobj(wbits=_GZIP_WBITS)
                self._members += 1
                self._head = b""
            if len(self._head) < len(_GZIP_MAGIC):
                self._check_magic(data)
            data = self._inflate(self._decomp, data)

    def _check_magic(self, data: bytes) -> None:
        """Tell "not gzip at all" and "junk after the last member" apart from corrupt data."""
        self._head += data[: len(_GZIP_MAGIC) - len(self._head)]
        if _GZIP_MAGIC.startswith(self._head):
            return
        if self._members == 1:
            self._fail("not a gzip file (bad magic number)")
        offset = self._bytes - len(data)
        self._fail(f"trailing garbage after the gzip stream at byte {offset}")

    def _inflate(self, decomp: zlib._Decompress, data: bytes) -> bytes:
        """Decompress in slices of at most ``_SLICE`` bytes; return input past the member's end.

        Slicing is what keeps memory bounded for a highly compressible chunk: a 64 KiB chunk
        can expand to 64 MiB, and only ``_SLICE`` of it exists at a time.
        """
        while True:
            try:
                out = decomp.decompress(data, _SLICE)
            except zlib.error as exc:
                self._fail(self._describe_zlib_error(exc))
            if out:
                self._text(out)
            if decomp.eof:
                self._decomp = None
                return decomp.unused_data
            data = decomp.unconsumed_tail
            # A full slice may leave output pending inside zlib even with no input left.
            if not data and len(out) < _SLICE:
                return b""

    def _describe_zlib_error(self, exc: zlib.error) -> str:
        detail = str(exc).split(": ", 1)[-1]
        where = f" (gzip member {self._members})" if self._members > 1 else ""
        return _ZLIB_MESSAGES.get(detail, f"gzip stream corrupt: {detail}") + where

    def _text(self, out: bytes) -> None:
        """Split decompressed text into lines, keeping only the unfinished last one."""
        start = 0
        while (newline := out.find(b"\n", start)) >= 0:
            if self._partial:
                self._check_line_length(len(self._partial) + newline - start)
                self._partial += out[start:newline]
                line = bytes(self._partial)
                self._partial.clear()
            else:
                self._check_line_length(newline - start)
                line = out[start:newline]
            self._line(line)
            start = newline + 1
        rest = len(out) - start
        if rest:
            self._check_line_length(len(self._partial) + rest)
            self._partial += out[start:]

    def _check_line_length(self, length: int) -> None:
        if length > self.max_line_bytes:
            self._fail(f"line {self._line_no + 1} longer than {_size(self.max_line_bytes)}")

    def _line(self, line: bytes) -> None:
        self._line_no += 1
        if not line.strip():
            return  # blank lines (a trailing newline, CRLF endings) are not events
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(f"line {self._line_no} is not valid UTF-8")
        try:
            value = json.loads(text)
        except ValueError:
            self._fail(f"line {self._line_no} is not valid JSON")
        except RecursionError:
            self._fail(f"line {self._line_no} is nested too deeply to parse")
        if not isinstance(value, dict):
            self._fail(f"line {self._line_no} is not a JSON object")
        self._events += 1
