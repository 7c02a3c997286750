"""Admission rules for queue rows: pure functions, so every rejection reason is unit-tested.

Rows are read as text (``CAST(col AS TEXT)``) because SQLite stores whatever it is given: a
date column may hold ``'yesterday'`` and an integer column ``'abc'``. Reading them through typed
columns would crash the tick instead of rejecting the row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from dsar_scheduler.core.deadlines import Deadline, deadline_for, regime_named

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
#: Amplitude IDs are positive 64-bit integers.
MAX_AMPLITUDE_ID = 2**63 - 1
#: A ``received_at`` this far ahead of the service's clock is still taken (clocks differ a
#: little); further ahead it is a mistake (a local time written as UTC, east of Greenwich).
RECEIVED_AT_SKEW = timedelta(minutes=5)
ACCESS, DELETION, BOTH = "access", "deletion", "access_and_deletion"
REQUEST_TYPES = (ACCESS, DELETION, BOTH)
#: Longer than any user ID Amplitude keeps; a longer value is a mistake upstream.
MAX_USER_ID = 1024


@dataclass(frozen=True)
class RawQueueRow:
    queue_id: int
    amplitude_id: str | None
    start_date: str | None
    end_date: str | None
    external_ref: str | None
    requested_by: str | None
    #: The legal regime, when the privacy team received the request (naive UTC), and when
    #: the row was inserted (the database's clock): read for the deadline (``check``).
    regime: str | None = None
    received_at: str | None = None
    created_at: str | None = None
    #: What is asked (``access`` when empty) and the subject by user ID.
    request_type: str | None = None
    user_id: str | None = None


@dataclass(frozen=True)
class Accepted:
    #: The subject: by Amplitude ID, user ID or both (one at least).
    amplitude_id: int | None
    #: The data's date range: an access request's (none for a deletion).
    start: date | None
    end: date | None
    #: The request's legal deadline (``check``; ``validate`` alone leaves it out).
    deadline: Deadline | None = None
    request_type: str = "access"
    user_id: str | None = None


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


def parse_request_type(raw: str | None) -> str | Rejected:
    """``access`` (the default), ``deletion`` or ``access_and_deletion``, any case."""
    text = (raw or "").strip().lower() or ACCESS
    if text not in REQUEST_TYPES:
        known = ", ".join(REQUEST_TYPES)
        return Rejected(f"request_type {(raw or '')[:40]!r} is not one of {known}")
    return text


def parse_user_id(raw: str | None) -> str | Rejected | None:
    """The user ID as given (Amplitude's user IDs are case-sensitive; only the whitespace
    around it is dropped); ``None`` when the row has none."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if len(text) > MAX_USER_ID:
        return Rejected(f"user_id is longer than {MAX_USER_ID} characters")
    return text


def parse_subject(row: RawQueueRow) -> tuple[int | None, str | None] | Rejected:
    """The subject's Amplitude ID and user ID: one at least; one given must be valid."""
    user_id = parse_user_id(row.user_id)
    if isinstance(user_id, Rejected):
        return user_id
    if user_id is not None and (row.amplitude_id is None or row.amplitude_id.strip() == ""):
        return None, user_id
    amplitude_id = parse_amplitude_id(row.amplitude_id)
    if isinstance(amplitude_id, str):
        if user_id is None and amplitude_id == "amplitude_id is missing":
            return Rejected(
                "amplitude_id is missing (a row names its subject by amplitude_id, user_id or both)"
            )
        return Rejected(amplitude_id)
    return amplitude_id, user_id


def validate(row: RawQueueRow, today: date, max_range_days: int) -> Accepted | Rejected:
    """Check one row; the first problem found is the reason given to upstream."""
    kind = parse_request_type(row.request_type)
    if isinstance(kind, Rejected):
        return kind
    subject = parse_subject(row)
    if isinstance(subject, Rejected):
        return subject
    amplitude_id, user_id = subject
    if kind == DELETION:  # a deletion erases everything: no date range
        return Accepted(amplitude_id, None, None, request_type=kind, user_id=user_id)
    dates = parse_range(row, today, max_range_days)
    if isinstance(dates, Rejected):
        return dates
    return Accepted(amplitude_id, *dates, request_type=kind, user_id=user_id)


def parse_range(row: RawQueueRow, today: date, max_range_days: int) -> tuple[date, date] | Rejected:
    """An access request's date range: both days, in order, not in the future, not longer
    than allowed."""
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
    return start, end


def check(
    row: RawQueueRow,
    now: datetime,
    max_range_days: int,
    default_regime: str,
    can_delete: bool = True,
) -> Accepted | Rejected:
    """``validate``, then the request's deadline: the row's regime (none: ``default_regime``)
    from when it was received (none: when the row was inserted). ``can_delete``: project
    keys are configured, without which no deletion can be resolved or sent."""
    verdict = validate(row, now.date(), max_range_days)
    if isinstance(verdict, Rejected):
        return verdict
    if verdict.request_type != ACCESS and not can_delete:
        return Rejected(
            f"a {verdict.request_type} request needs the projects' keys "
            "(DSAR_PROJECTS_FILE), and none are configured"
        )
    regime = regime_named(row.regime, default_regime)
    if isinstance(regime, str):
        return Rejected(regime)
    received = received_at(row, now)
    if isinstance(received, str):
        return Rejected(received)
    return replace(verdict, deadline=deadline_for(regime, received))


def received_at(row: RawQueueRow, now: datetime) -> datetime | str:
    """When the request was received: the row's ``received_at`` (refused if in the future);
    absent, the row's insert time, or ``now`` if that is ahead of the service's clock (the
    database's clock is not the service's: a test's or the simulator's virtual one)."""
    if row.received_at is None or row.received_at.strip() == "":
        inserted = parse_time(row.created_at, "created_at")
        if isinstance(inserted, str) or inserted > now + RECEIVED_AT_SKEW:
            return now
        return inserted
    received = parse_time(row.received_at, "received_at")
    if isinstance(received, datetime) and received > now + RECEIVED_AT_SKEW:
        return (
            f"received_at {received:%Y-%m-%d %H:%M:%S} UTC is in the future "
            f"(the service's clock says {now:%Y-%m-%d %H:%M:%S} UTC)"
        )
    return received


def parse_time(raw: str | None, column: str) -> datetime | str:
    """A time (aware, UTC) from ISO 8601 text: a date, or a date and time; one without an
    offset is UTC (the queue's columns hold naive UTC)."""
    text = (raw or "").strip()
    if not text:
        return f"{column} is missing"
    try:
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time; or one at the edge of year 1 or 9999
        return f"{column} is not a date and time (ISO 8601, UTC): {text[:40]!r}"
