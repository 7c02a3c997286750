"""User Search and User Activity for one project: who a user ID, device ID, Amplitude ID or
user-ID prefix names, and one user's IDs and recent events. The caller has checked the key
and the search budget and holds no lock."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from dsar_scheduler.tools.emulator.content import file_specs, iter_events
from dsar_scheduler.tools.emulator.identities import UserRecord
from dsar_scheduler.tools.emulator.privacy_requests import (
    ActivityRequest,
    parse_activity,
    query_value,
)
from dsar_scheduler.tools.emulator.privacy_state import PrivacyState
from dsar_scheduler.tools.emulator.responses import json_response
from dsar_scheduler.tools.emulator.server import HttpRequest, HttpResponse


@dataclass(frozen=True)
class EventSource:
    seed: int
    events_per_file: tuple[int, int]


class SearchRoutes:
    def __init__(self, privacy: PrivacyState, lock: threading.RLock, source: EventSource) -> None:
        self._privacy = privacy
        self._lock = lock
        self._source = source

    def search(self, project_id: int, request: HttpRequest, today: date) -> HttpResponse:
        user = query_value(request, "user")
        if not user:
            return json_response(400, {"error": "user is required"})
        with self._lock:
            kind, records = self._privacy.identities.search(project_id, user, today)
        return json_response(200, {"matches": [r.match() for r in records], "type": kind})

    def activity(self, project_id: int, request: HttpRequest, today: date) -> HttpResponse:
        try:
            ask = parse_activity(request)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        identities = self._privacy.identities
        with self._lock:
            record = identities.record_of_id(project_id, ask.amplitude_id, today)
            if record is None:
                return json_response(200, {"userData": {}, "events": []})
            devices = identities.device_ids(project_id, record)
        user_data = {
            "canonical_amplitude_id": record.canonical_id,
            "merged_amplitude_ids": list(record.merged_ids),
            "device_ids": devices,
            "user_id": record.user_id,
        }
        events = self._events(project_id, record, ask, today)
        return json_response(200, {"userData": user_data, "events": events})

    def _events(
        self, project_id: int, record: UserRecord, ask: ActivityRequest, today: date
    ) -> list[dict[str, Any]]:
        """The user's events of the last ``activity_days`` in this project, the merged IDs'
        with their own ``amplitude_id`` and no user ID, newest first unless asked."""
        start = today - timedelta(days=self._privacy.config.activity_days)
        owners = [(record.canonical_id, record.user_id)] + [(m, None) for m in record.merged_ids]
        events = [
            event
            for amplitude_id, user_id in owners
            for spec in file_specs(
                seed=self._source.seed,
                amplitude_id=amplitude_id,
                user_id=user_id,
                start=start,
                end=today,
                projects=[project_id],
                events_per_file=self._source.events_per_file,
            )
            for event in iter_events(spec)
        ]
        events.sort(key=lambda e: (e["event_time"], e["uuid"]), reverse=ask.latest_first)
        return events[ask.offset : ask.offset + ask.limit]
