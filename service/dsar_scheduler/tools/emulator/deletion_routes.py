"""The User Privacy API's three calls for one project: POST (mark IDs for deletion in the
open batch), GET (the jobs whose ``day`` is in a window) and DELETE (take one ID out of a
job still in ``staging``). The caller has checked the key and the limits and holds no lock.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from dsar_scheduler.tools.emulator.privacy_jobs import (
    DeletionJob,
    NotStaging,
    listing_body,
    status_text,
)
from dsar_scheduler.tools.emulator.privacy_requests import (
    DeletionRequest,
    parse_deletion,
    parse_path_day,
    parse_window,
)
from dsar_scheduler.tools.emulator.privacy_state import PrivacyState
from dsar_scheduler.tools.emulator.responses import json_response
from dsar_scheduler.tools.emulator.server import HttpRequest, HttpResponse


def json_value_response(status: int, body: Any) -> HttpResponse:
    """A JSON answer whose top level may be a list (the listing is one)."""
    return HttpResponse(status, [("Content-Type", "application/json")], json.dumps(body).encode())


@dataclass
class _Marking:
    """What one project makes of a POST's IDs: the IDs to mark (with the user ID each maps
    to) and those it does not know."""

    targets: dict[int, str | None] = field(default_factory=dict)
    invalid: list[int | str] = field(default_factory=list)


class DeletionRoutes:
    def __init__(self, privacy: PrivacyState, lock: threading.RLock) -> None:
        self._privacy = privacy
        self._lock = lock

    def create(self, project_id: int, request: HttpRequest, today: date) -> HttpResponse:
        cfg = self._privacy.config
        try:
            ask = parse_deletion(request, cfg.max_ids_per_request)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        with self._lock:
            if ask.delete_from_org:
                return json_value_response(200, self._org_wide(ask, today))
            marking = self._marking(project_id, ask, today)
            if marking.invalid and not ask.ignore_invalid:
                body = {
                    "error": "Invalid ids: nothing was marked for deletion "
                    "(set ignore_invalid_id to skip them)",
                    "invalid_ids": marking.invalid,
                }
                return json_response(400, body)
            return json_response(200, self._mark(project_id, ask, marking, today))

    def listing(self, project_id: int, request: HttpRequest, today: date) -> HttpResponse:
        cfg = self._privacy.config
        try:
            start, end = parse_window(request, cfg.max_listing_window_days)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        with self._lock:
            jobs = self._privacy.jobs.in_window(project_id, start, end)
            body = [listing_body(job, today, cfg.status_case) for job in jobs]
        return json_value_response(200, body)

    def remove(self, project_id: int, raw_id: str, raw_day: str, today: date) -> HttpResponse:
        try:
            day = parse_path_day(raw_day)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        with self._lock:
            job = self._privacy.jobs.job(project_id, day)
            amplitude_id = self._member(job, raw_id) if job is not None else None
            if amplitude_id is None:
                message = f"no deletion of {raw_id} in the job for {day.isoformat()}"
                return json_response(404, {"error": message})
            try:
                entry = self._privacy.jobs.remove(project_id, amplitude_id, day, today)
            except NotStaging as exc:
                return json_response(400, {"error": str(exc)})
        assert entry is not None
        return json_response(200, entry.body())

    def _member(self, job: DeletionJob, raw_id: str) -> int | None:
        """The job's member a path names: an Amplitude ID, or a user ID (any of its IDs)."""
        if raw_id.isdigit():
            return int(raw_id) if job.entry(int(raw_id)) is not None else None
        population = self._privacy.population
        subject = population.by_user_id(raw_id)
        if subject is None:
            return None
        ids = (e.amplitude_id for e in job.entries)
        return next((a for a in ids if population.owner_of(a) is subject), None)

    def _marking(self, project_id: int, ask: DeletionRequest, today: date) -> _Marking:
        """Resolve every ID before marking any, so a refused POST marks nothing. A user ID
        stands for its canonical ID only: merged IDs must be listed themselves."""
        identities = self._privacy.identities
        marking = _Marking()
        for amplitude_id in ask.amplitude_ids:
            record = identities.record_of_id(project_id, amplitude_id, today)
            if record is None:
                marking.invalid.append(amplitude_id)
            else:
                marking.targets.setdefault(amplitude_id, record.user_id)
        for user_id in ask.user_ids:
            record = identities.record_of_user(project_id, user_id, today)
            if record is None:
                marking.invalid.append(user_id)
            else:
                marking.targets.setdefault(record.canonical_id, user_id)
        return marking

    def _mark(
        self, project_id: int, ask: DeletionRequest, marking: _Marking, today: date
    ) -> dict[str, Any]:
        jobs = self._privacy.jobs
        job = jobs.batch_for(project_id, today)
        entries = []
        for amplitude_id, user_id in marking.targets.items():
            body = jobs.add(job, amplitude_id, today, ask.requester).body()
            if ask.include_mapped_user_ids:
                body["user_id"] = user_id
            entries.append(body)
        if ask.delete_from_org and marking.targets:
            job.org_wide = True
        return {
            "day": job.day.isoformat(),
            "status": status_text(job.status(today), self._privacy.config.status_case, job.day),
            "amplitude_ids": entries,
            "invalid_ids": marking.invalid,
        }

    def _org_wide(self, ask: DeletionRequest, today: date) -> list[dict[str, Any]]:
        """``delete_from_org``: one job per project that knows any of the IDs, each answer
        with its ``app``; unknown IDs are skipped (the flag forces ``ignore_invalid_id``)."""
        answers = []
        for keys in self._privacy.projects:
            marking = self._marking(keys.project_id, ask, today)
            if marking.targets:
                answer = self._mark(keys.project_id, ask, marking, today)
                answers.append({**answer, "app": keys.project_id})
        return answers
