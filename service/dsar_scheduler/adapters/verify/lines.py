"""Checking decompressed text line by line: each line blank, or one JSON object in UTF-8.

Lines are parsed a slice at a time with the ``json`` module's own scanner; a line that
scanner does not accept outright is judged by the plain one-line path (``_line``), so what
is accepted, and the message of what is not, do not depend on how the text was sliced.
Only the unfinished last line is kept between slices. The distinct ``amplitude_id``s of the
events are collected on the way (bounded), for the coverage check of an export by user ID.
"""

from __future__ import annotations

import json
import json.scanner
import re
from collections.abc import Callable
from typing import Any, cast

from dsar_scheduler.adapters.verify.inflate import MIB
from dsar_scheduler.adapters.verify.result import fail

#: Longest line accepted. The largest event Amplitude's SDKs send is about 8 MiB (1,000
#: properties of at most 4 KiB, twice); checking a line holds a few copies of it in memory.
MAX_LINE_BYTES = 16 * MIB
#: Most distinct ``amplitude_id``s collected per file: one subject's export holds a handful;
#: past this the file is not one subject's, and the set is marked incomplete.
MAX_IDS = 1000

_BLANK = re.compile(rb"[ \t\n\r\x0b\x0c]*")  # what bytes.strip() removes: a blank line
_JSON_SPACE = " \t\r"  # JSON whitespace, less the newline that ends a line
#: ``json.loads``'s own C scanner: one JSON value at an offset of a longer text.
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    cast(Any, json.JSONDecoder())  # typeshed types the argument as the scanner class itself
)


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB and n % MIB == 0 else f"{n} bytes"


class JsonLinesChecker:
    """Counts the events in the text fed to ``text`` and collects their distinct integer
    ``amplitude_id``s (at most ``MAX_IDS``; ``ids_capped`` past that); raises
    ``VerificationError`` at the first line that is not blank and not one JSON object."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.events = 0
        self.amplitude_ids: set[int] = set()
        self.ids_capped = False
        self._line_no = 0  # physical lines completed so far, blank ones included
        self._partial = bytearray()  # the unfinished last line

    def text(self, out: bytes) -> None:
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

    def end(self) -> None:
        """The text is over: a last line without its newline is still a line."""
        if self._partial:
            self._line(self._partial)
            self._partial.clear()

    def _extend_partial(self, data: bytes | memoryview) -> None:
        self._check_line_length(len(self._partial) + len(data))
        self._partial += data

    def _check_line_length(self, length: int) -> None:
        if length > self.max_line_bytes:
            fail(f"line {self._line_no + 1} longer than {_size(self.max_line_bytes)}")

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
        scan, find, ids = _scan, text.find, self.amplitude_ids
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
                subject = value.get("amplitude_id")
                if type(subject) is int and subject not in ids:
                    self._new_id(subject)
            else:
                self._line_no, self.events = first_line + lines, self.events + events
                events = 0
                self._line(text[pos:newline].encode("utf-8"))
            lines += 1
            pos = newline + 1
        self._line_no, self.events = first_line + lines, self.events + events

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
            fail(f"line {self._line_no} is not valid UTF-8")
        if isinstance(line, bytearray):
            line.clear()  # the unfinished-line buffer: a long line is not held three times
        try:
            value = json.loads(text)
        except ValueError:
            fail(f"line {self._line_no} is not valid JSON")
        except RecursionError:
            fail(f"line {self._line_no} is nested too deeply to parse")
        if not isinstance(value, dict):
            fail(f"line {self._line_no} is not a JSON object")
        self.events += 1
        subject = value.get("amplitude_id")
        if type(subject) is int and subject not in self.amplitude_ids:
            self._new_id(subject)

    def _new_id(self, amplitude_id: int) -> None:
        """An ``amplitude_id`` not seen before in the file, kept while there is room."""
        if len(self.amplitude_ids) < MAX_IDS:
            self.amplitude_ids.add(amplitude_id)
        else:
            self.ids_capped = True
