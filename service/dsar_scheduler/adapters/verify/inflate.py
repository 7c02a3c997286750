"""Inflating a gzip stream in bounded steps: each step makes at most ``SLICE`` bytes of
text, so a highly compressible chunk never expands all at once. Concatenated members are
accepted, as ``gzip`` and ``zcat`` accept them; zlib checks each member's CRC and length."""

from __future__ import annotations

import zlib

from dsar_scheduler.adapters.verify.result import VerificationError, fail

MIB = 2**20
SLICE = 2 * MIB  # most text one inflate step makes: bounds memory, fits a 1 MiB chunk's text
_PIECE = 256 * 1024  # most compressed bytes per zlib call: bounds the unconsumed-tail copy
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 31  # 16 + MAX_WBITS: a gzip wrapper; zlib checks the CRC-32 and ISIZE trailer

# zlib's words for a failed trailer check, and ours.
_ZLIB_MESSAGES = {
    "incorrect data check": "gzip CRC check failed",
    "incorrect length check": "gzip length check failed (ISIZE does not match the data)",
}

#: What one step made (in order) and the error it stopped at, if any.
Step = tuple[list[bytes], "VerificationError | None"]


class ChunkInput:
    """A received chunk not yet wholly inflated: its bytes, how far zlib has read, and where
    it starts in the stream (for messages)."""

    __slots__ = ("data", "offset", "pos")

    def __init__(self, data: bytes, offset: int) -> None:
        self.data = memoryview(data)
        self.offset = offset
        self.pos = 0


class GzipInflater:
    """The state of inflating one stream; touched only by the step in flight, if any."""

    def __init__(self) -> None:
        self.members = 0  # gzip members started
        self._decomp: zlib._Decompress | None = None  # the member in progress, if any
        self._head = b""  # first bytes of the member in progress, until the magic is checked
        #: The last zlib call filled its output: more may be pending.
        self.undrained = False

    @property
    def in_member(self) -> bool:
        """A member has started and not ended: a stream ending now is truncated."""
        return self._decomp is not None

    def step(self, item: ChunkInput) -> Step:
        """Inflate from ``item`` until ``SLICE`` bytes came out or its input is used up.

        Capping each zlib call's output is what keeps memory bounded for a highly
        compressible chunk: a 1 MiB chunk can expand to 1 GiB, and only ``SLICE`` of it exists
        at a time.
        """
        outs: list[bytes] = []
        room = SLICE
        data = item.data
        try:
            while room:
                pos = item.pos
                if self._decomp is None:
                    if pos >= len(data):
                        break
                    self._decomp = zlib.decompressobj(wbits=_GZIP_WBITS)
                    self.members += 1
                    self._head = b""
                if len(self._head) < len(_GZIP_MAGIC):
                    self._check_magic(item)
                piece = data[pos : pos + _PIECE]
                try:
                    out = self._decomp.decompress(piece, room)
                except zlib.error as exc:
                    fail(self._describe_zlib_error(exc))
                # A full output may leave more pending inside zlib even with no input left.
                self.undrained = len(out) == room
                if out:
                    outs.append(out)
                    room -= len(out)
                if self._decomp.eof:
                    item.pos = pos + len(piece) - len(self._decomp.unused_data)
                    self._decomp = None
                    self.undrained = False
                    continue
                item.pos = pos + len(piece) - len(self._decomp.unconsumed_tail)
                if item.pos >= len(data) and not self.undrained:
                    break
        except VerificationError as exc:
            return outs, exc
        return outs, None

    def _check_magic(self, item: ChunkInput) -> None:
        """Tell "not gzip at all" and "junk after the last member" apart from corrupt data."""
        pos = item.pos
        self._head += item.data[pos : pos + len(_GZIP_MAGIC) - len(self._head)].tobytes()
        if _GZIP_MAGIC.startswith(self._head):
            return
        if self.members == 1:
            fail("not a gzip file (bad magic number)")
        fail(f"trailing garbage after the gzip stream at byte {item.offset + pos}")

    def _describe_zlib_error(self, exc: zlib.error) -> str:
        detail = str(exc).split(": ", 1)[-1]
        where = f" (gzip member {self.members})" if self.members > 1 else ""
        return _ZLIB_MESSAGES.get(detail, f"gzip stream corrupt: {detail}") + where
