"""``manifest.json``: what was stored for one request, written last, as the proof of delivery."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Protocol

from dsar_scheduler import __version__
from dsar_scheduler.core.coverage import decode_ids

MANIFEST_NAME = "manifest.json"


class StoredRequest(Protocol):
    """The request attributes a manifest records (the ledger's rows have them, ORM or frozen);
    read-only, so a frozen row satisfies it as well as a mapped one."""

    @property
    def id(self) -> int: ...
    @property
    def queue_id(self) -> int | None: ...
    @property
    def external_ref(self) -> str | None: ...
    @property
    def amplitude_id(self) -> int | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def start_date(self) -> date | None: ...
    @property
    def end_date(self) -> date | None: ...
    @property
    def remote_request_id(self) -> int | None: ...
    @property
    def queued_at(self) -> datetime: ...
    @property
    def submitted_at(self) -> datetime | None: ...
    @property
    def done_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime | None: ...


class StoredFile(Protocol):
    """The file attributes a manifest records."""

    @property
    def name(self) -> str: ...
    @property
    def output_index(self) -> int: ...
    @property
    def bytes(self) -> int | None: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def event_count(self) -> int | None: ...
    @property
    def amplitude_ids(self) -> str | None: ...


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _subject(request: StoredRequest) -> dict[str, Any]:
    """Who the export is about, as the request named them (a user ID only when given)."""
    subject: dict[str, Any] = {"amplitude_id": request.amplitude_id}
    if request.user_id is not None:
        subject["user_id"] = request.user_id
    return subject


def _file_ids(text: str | None) -> dict[str, Any]:
    """A file's distinct Amplitude IDs, as counted when it was verified (if they were)."""
    ids = decode_ids(text)
    if ids is None:
        return {}
    return {"amplitude_ids": sorted(ids.ids), "amplitude_ids_complete": not ids.capped}


def build_manifest(
    request: StoredRequest,
    files: Sequence[StoredFile],
    stored_at: datetime,
    coverage: dict[str, Any] | None = None,
) -> bytes:
    """The manifest's bytes: the request, its date range, every stored file with its checksum,
    event count and Amplitude IDs, the totals an auditor checks the files against, and the
    coverage check (``core.coverage.section``)."""
    body: dict[str, Any] = {
        "manifest_version": 1,
        "generator": f"dsar-scheduler {__version__}",
        "request_id": request.id,
        "queue_id": request.queue_id,
        "external_ref": request.external_ref,
        "subject": _subject(request),
        "date_range": {
            "start": request.start_date.isoformat() if request.start_date else None,
            "end": request.end_date.isoformat() if request.end_date else None,
        },
        "amplitude_request_id": request.remote_request_id,
        "requested_at": _iso(request.queued_at),
        "submitted_at": _iso(request.submitted_at),
        "done_at": _iso(request.done_at),
        "expires_at": _iso(request.expires_at),
        "stored_at": _iso(stored_at),
        "files": [
            {
                "name": f.name,
                "output_index": f.output_index,
                "bytes": f.bytes,
                "sha256": f.sha256,
                "event_count": f.event_count,
                **_file_ids(f.amplitude_ids),
                "format": "gzip, JSON lines, one event per line",
            }
            for f in files
        ],
        "total_events": sum(f.event_count or 0 for f in files),
        "total_bytes": sum(f.bytes or 0 for f in files),
    }
    if coverage is not None:
        body["coverage"] = coverage
    return (json.dumps(body, indent=2, sort_keys=False) + "\n").encode()
