"""Output files: deterministic gzipped JSON lines in the S3-export event schema.

A file depends only on (seed, subject, project, month window), so two emulators with the same
seed serve the same bytes, and a test can recompute what should have been stored. Files are
produced as a stream of chunks, so a very large file never has to sit in memory.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

CHUNK_SIZE = 64 * 1024
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
SESSION_GAP = timedelta(minutes=30)

_EVENT_TYPES = (
    "session_start",
    "page_viewed",
    "button_clicked",
    "search_performed",
    "item_added_to_cart",
    "checkout_started",
    "purchase_completed",
    "settings_changed",
    "session_end",
)
_PLATFORMS = (
    ("Web", "Chrome", "131", "Chrome", "amplitude-ts/2.11.2"),
    ("Web", "Firefox", "133", "Firefox", "amplitude-ts/2.11.2"),
    ("iOS", "ios", "17.6.1", "Apple iPhone", "amplitude-swift/1.9.2"),
    ("Android", "android", "14", "Samsung Galaxy S23", "amplitude-kotlin/1.18.0"),
)
_PLACES = (
    ("United States", "California", "San Francisco", "en-US"),
    ("United States", "New York", "New York", "en-US"),
    ("Germany", "Berlin", "Berlin", "de-DE"),
    ("France", "Ile-de-France", "Paris", "fr-FR"),
    ("Japan", "Tokyo", "Tokyo", "ja-JP"),
    ("Brazil", "Sao Paulo", "Sao Paulo", "pt-BR"),
)


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One output file: a subject's events in one project over one month (clipped to range)."""

    seed: int
    amplitude_id: int
    user_id: str | None
    project_id: int
    month: date
    window_start: datetime
    window_end: datetime
    events_low: int
    events_high: int

    @property
    def key(self) -> str:
        """Cache key; equal keys always give equal bytes."""
        return (
            f"{self.seed}:{self.amplitude_id}:{self.user_id}:{self.project_id}:"
            f"{self.window_start.isoformat()}:{self.window_end.isoformat()}:"
            f"{self.events_low}-{self.events_high}"
        )


@dataclass(frozen=True)
class FileStats:
    sha256: str
    size: int
    events: int


def months_touched(start: date, end: date) -> list[date]:
    """First day of each calendar month that the inclusive range ``start..end`` touches."""
    months = []
    current = start.replace(day=1)
    while current <= end:
        months.append(current)
        current = _next_month(current)
    return months


def subject_amplitude_id(user_id: str) -> int:
    """A stable Amplitude ID for a request made by ``userId`` (the files need one)."""
    digest = hashlib.sha256(user_id.encode()).digest()
    return 100_000_000_000 + int.from_bytes(digest[:6], "big") % 900_000_000_000


def file_specs(
    *,
    seed: int,
    amplitude_id: int,
    user_id: str | None,
    start: date,
    end: date,
    projects: list[int],
    events_per_file: tuple[int, int],
) -> list[FileSpec]:
    """The files of a request, in ``urls`` order: month by month, project by project."""
    specs: list[FileSpec] = []
    range_start = datetime.combine(start, time(), UTC)
    range_end = datetime.combine(end + timedelta(days=1), time(), UTC)
    for month in months_touched(start, end):
        month_start = datetime.combine(month, time(), UTC)
        month_end = datetime.combine(_next_month(month), time(), UTC)
        specs.extend(
            FileSpec(
                seed=seed,
                amplitude_id=amplitude_id,
                user_id=user_id,
                project_id=project,
                month=month,
                window_start=max(month_start, range_start),
                window_end=min(month_end, range_end),
                events_low=events_per_file[0],
                events_high=events_per_file[1],
            )
            for project in projects
        )
    return specs


def iter_events(spec: FileSpec) -> Iterator[dict[str, Any]]:
    """The events of one file, in time order (the format promises none; this is simplest)."""
    rng = random.Random(f"dsar-file:{spec.key}")
    profile = _profile(spec)
    count = rng.randint(spec.events_low, spec.events_high)
    span_us = int((spec.window_end - spec.window_start) / timedelta(microseconds=1))
    event_id = rng.randint(1, 500)
    session_start: datetime | None = None
    last: datetime | None = None
    for i in range(count):
        offset = int((i + rng.random()) * span_us / count)
        when = spec.window_start + timedelta(microseconds=min(offset, span_us - 1))
        if last is None or session_start is None or when - last > SESSION_GAP:
            session_start = when
        last = when
        event_id += 1
        yield _event(spec, profile, rng, when, session_start, event_id)


def iter_file_chunks(spec: FileSpec, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The gzipped file as a stream of chunks (gzip header mtime 0: bytes are reproducible)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    pending: list[bytes] = []
    pending_size = 0
    for event in iter_events(spec):
        line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        out = compressor.compress(line)
        if out:
            pending.append(out)
            pending_size += len(out)
        if pending_size >= chunk_size:
            yield b"".join(pending)
            pending, pending_size = [], 0
    pending.append(compressor.flush())
    yield b"".join(pending)


def file_bytes(spec: FileSpec) -> bytes:
    return b"".join(iter_file_chunks(spec))


def file_stats(spec: FileSpec) -> FileStats:
    """sha256, size and event count of the file, computed by streaming it once."""
    digest = hashlib.sha256()
    size = 0
    for chunk in iter_file_chunks(spec):
        digest.update(chunk)
        size += len(chunk)
    return FileStats(digest.hexdigest(), size, event_count(spec))


def event_count(spec: FileSpec) -> int:
    """Events in the file, without generating it (the count is the RNG's first draw)."""
    return random.Random(f"dsar-file:{spec.key}").randint(spec.events_low, spec.events_high)


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


@dataclass(frozen=True)
class _Profile:
    """What stays the same for one subject in one project across months."""

    device_id: str
    platform: tuple[str, str, str, str, str]
    place: tuple[str, str, str, str]
    version_name: str
    user_created: datetime
    ip_address: str


def profile_device_id(seed: int, amplitude_id: int, project_id: int) -> str:
    """The ``device_id`` on every event of one Amplitude ID in one project (``_profile``'s
    first draw), for the identity endpoints to name without generating a file."""
    return _uuid4(_profile_rng(seed, amplitude_id, project_id))


def _profile_rng(seed: int, amplitude_id: int, project_id: int) -> random.Random:
    return random.Random(f"dsar-profile:{seed}:{amplitude_id}:{project_id}")


def _profile(spec: FileSpec) -> _Profile:
    rng = _profile_rng(spec.seed, spec.amplitude_id, spec.project_id)
    return _Profile(
        device_id=_uuid4(rng),
        platform=rng.choice(_PLATFORMS),
        place=rng.choice(_PLACES),
        version_name=f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        user_created=datetime(2019, 1, 1, tzinfo=UTC)
        + timedelta(seconds=rng.randint(0, 5 * 365 * 86_400)),
        ip_address=f"203.0.113.{rng.randint(1, 254)}",
    )


def _event(
    spec: FileSpec,
    profile: _Profile,
    rng: random.Random,
    when: datetime,
    session_start: datetime,
    event_id: int,
) -> dict[str, Any]:
    """One event as Amplitude exports it; the fields keep Amplitude's order, and the RNG is
    drawn in the same order for every event, so a file's bytes depend on its seed only."""
    event_type = rng.choice(_EVENT_TYPES)
    times = _event_times(rng, when, profile.user_created, session_start)
    return {
        "$insert_id": _uuid4(rng),
        "$schema": 12,
        "amplitude_id": spec.amplitude_id,
        "app": spec.project_id,
        "user_id": spec.user_id,
        "device_id": profile.device_id,
        "event_id": event_id,
        "event_type": event_type,
        **times,
        "uuid": _uuid4(rng),
        **_device_and_place(profile),
        "event_properties": _event_properties(event_type, rng),
        "user_properties": {"plan": rng.choice(("free", "plus", "pro")), "beta_user": False},
        "group_properties": {},
        "groups": {},
        "data": {},
        "paying": None,
        "sample_rate": None,
        "is_attribution_event": False,
    }


def _event_times(
    rng: random.Random, when: datetime, user_created: datetime, session_start: datetime
) -> dict[str, Any]:
    client_time = when - timedelta(milliseconds=rng.randint(0, 900))
    uploaded = when + timedelta(milliseconds=rng.randint(50, 30_000))
    processed = uploaded + timedelta(milliseconds=rng.randint(5, 2_000))
    return {
        "event_time": _fmt(when),
        "client_event_time": _fmt(client_time),
        "client_upload_time": _fmt(uploaded - timedelta(milliseconds=40)),
        "server_received_time": _fmt(uploaded),
        "server_upload_time": _fmt(uploaded),
        "processed_time": _fmt(processed),
        "user_creation_time": _fmt(user_created),
        "session_id": int(session_start.timestamp() * 1000),
    }


def _device_and_place(profile: _Profile) -> dict[str, Any]:
    platform, os_name, os_version, device_family, library = profile.platform
    country, region, city, language = profile.place
    return {
        "platform": platform,
        "os_name": os_name,
        "os_version": os_version,
        "device_family": device_family,
        "device_type": device_family,
        "version_name": profile.version_name,
        "country": country,
        "region": region,
        "city": city,
        "language": language,
        "ip_address": profile.ip_address,
        "library": library,
    }


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _event_properties(event_type: str, rng: random.Random) -> dict[str, Any]:
    if event_type == "page_viewed":
        return {"path": rng.choice(("/", "/pricing", "/docs", "/account")), "referrer": None}
    if event_type == "search_performed":
        return {"query_length": rng.randint(1, 40), "results": rng.randint(0, 200)}
    if event_type in ("item_added_to_cart", "purchase_completed"):
        return {"sku": f"SKU-{rng.randint(1000, 9999)}", "price": round(rng.uniform(1, 300), 2)}
    if event_type == "button_clicked":
        return {"button": rng.choice(("signup", "save", "share", "close"))}
    return {}


def _fmt(when: datetime) -> str:
    return when.astimezone(UTC).strftime(TIME_FORMAT)
