"""Admission rules for queue rows: pure functions, so every rejection reason is unit-tested.

Rows are read as text (``CAST(col AS TEXT)``) because SQLite stores whatever it is given: a
date column may hold ``'yesterday'`` and an integer column ``'abc'``. Reading them through typed
columns would crash the tick instead of rejecting the row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
#: Amplitude IDs are positive 64-bit integers.
MAX_AMPLITUDE_ID = 2**63 - 1


@dataclass(frozen=True)
class RawQueueRow:
    queue_id: int
    amplitude_id: str | None
    start_date: str | None
    end_date: str | None
    external_ref: str | None
    requested_by: str | None


@dataclass(frozen=True)
class Accepted:
    amplitude_id: int
    start: date
    end: date


@dataclass(frozen=True)
class Rejected:
    reason: str


def parse_amplitude_id(raw: str | None) -> int | str:
    """The id, or the reason it is not one."""
    if raw is None or raw.strip() == "":
        return "amplitude_id is missing"
    text = raw.strip()
    # SQLite may hand back 123.0 for a REAL; accept integral values only.
    if re.fullmatch(r"[+-]?\d+(\.0+)?", text) is None:
        return f"amplitude_id is not an integer: {text[:40]!r}"
    value = int(text.split(".")[0])
    if value <= 0:
        return f"amplitude_id must be positive, got {value}"
    if value > MAX_AMPLITUDE_ID:
        return "amplitude_id is larger than a 64-bit integer"
    return value


def parse_date(raw: str | None, column: str) -> date | str:
    """A date from ``YYYY-MM-DD`` (a trailing time part, as some drivers render, is allowed)."""
    if raw is None or raw.strip() == "":
        return f"{column} is missing"
    text = raw.strip()
    if _DATE.match(text) is None:
        return f"{column} is not a date (YYYY-MM-DD): {text[:40]!r}"
    rest = text[10:]
    if rest and re.fullmatch(r"[ T]00:00(:00(\.0+)?)?", rest) is None:
        return f"{column} is not a date (YYYY-MM-DD): {text[:40]!r}"
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return f"{column} is not a valid calendar date: {text[:40]!r}"


def validate(row: RawQueueRow, today: date, max_range_days: int) -> Accepted | Rejected:
    """Check one row; the first problem found is the reason given to upstream."""
    amplitude_id = parse_amplitude_id(row.amplitude_id)
    if isinstance(amplitude_id, str):
        return Rejected(amplitude_id)
    start = parse_date(row.start_date, "start_date")
    if isinstance(start, str):
        return Rejected(start)
    end = parse_date(row.end_date, "end_date")
    if isinstance(end, str):
        return Rejected(end)
    if end < start:
        return Rejected(f"end_date {end} is before start_date {start}")
    if start > today:
        return Rejected(f"start_date {start} is in the future")
    if end - start > timedelta(days=max_range_days):
        return Rejected(
            f"date range of {(end - start).days + 1} days is longer than the "
            f"{max_range_days} days allowed (DSAR_MAX_RANGE_DAYS)"
        )
    return Accepted(amplitude_id=amplitude_id, start=start, end=end)
