"""The User Privacy (deletion) API v1: ask for a deletion, list the jobs, cancel an entry.

There is no job id: a job is (project, ``day``), and our entry in it is (``amplitude_id``,
``requested_on_day``), with ``requester`` carrying our own id so that listing entries match
unambiguously (reference/next-capabilities.md §1). The POST and listing answers are kept
byte for byte, with their sha256, as receipts. Status is compared lowercased (the docs write
it both ways); a status this module does not know is passed on, lowercased, for the caller's
rules to judge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from dsar_scheduler.adapters.amplitude.answers import Answer
from dsar_scheduler.adapters.amplitude.errors import ApiError, printable
from dsar_scheduler.adapters.amplitude.ids import check_amplitude_id, positive_id
from dsar_scheduler.adapters.amplitude.project_http import Body, ProjectHttp

#: Amplitude IDs (user and amplitude ids together) per POST [UP].
MAX_IDS_PER_CALL = 100
#: "The largest permitted time range is six months": the shortest six months is 181 days,
#: so a window of at most 180 days (end minus start) is within it on any reading.
MAX_LISTING_DAYS = 180
STAGING, SUBMITTED, DONE = "staging", "submitted", "done"
KNOWN_STATUSES = frozenset({STAGING, SUBMITTED, DONE})
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ].*)?", re.ASCII)


@dataclass(frozen=True)
class DeletionEntry:
    """One subject's membership of a job: keyed by (amplitude_id, requested_on_day)."""

    amplitude_id: int
    requested_on_day: date
    requester: str


@dataclass(frozen=True)
class DeletionReceipt:
    """The POST's answer. ``day`` and ``status`` are ``None`` only when Amplitude scheduled
    nothing (every id invalid); ``invalid_ids`` as strings (an Amplitude ID as its digits):
    nothing to delete for them in this project."""

    project: int
    day: date | None
    status: str | None
    entries: tuple[DeletionEntry, ...]
    invalid_ids: tuple[str, ...]
    body: Body


@dataclass(frozen=True)
class DeletionJob:
    day: date
    status: str
    entries: tuple[DeletionEntry, ...]
    #: When the data stopped being accessible (``done`` follows once backups are cleared).
    active_scrub_done_date: date | None


@dataclass(frozen=True)
class DeletionListing:
    project: int
    start_day: date
    end_day: date
    jobs: tuple[DeletionJob, ...]
    body: Body


@dataclass(frozen=True)
class Cancellation:
    """The DELETE's answer: the entry taken out of the job of ``day``."""

    project: int
    day: date
    entry: DeletionEntry
    body: Body


class DeletionClient:
    """Deletions of one endpoint (``DSAR_DELETION_API_URL``), each call with its project's key."""

    def __init__(self, http: ProjectHttp) -> None:
        self._deletions = http

    def delete_users(
        self,
        project: int,
        amplitude_ids: Sequence[int],
        user_ids: Sequence[str],
        requester: str,
    ) -> DeletionReceipt:
        """Ask for the deletion of up to 100 ids, unknown ones ignored (``ignore_invalid_id``:
        without it one unknown id fails the whole call and marks no one)."""
        _check_ids(amplitude_ids, user_ids)
        if not isinstance(requester, str) or not requester.strip():
            raise ValueError("requester must be a non-empty string (it carries our own id)")
        body: dict[str, Any] = {}
        if amplitude_ids:
            body["amplitude_ids"] = list(amplitude_ids)
        if user_ids:
            body["user_ids"] = list(user_ids)
        # The docs spell the flag both ways; send both so neither reading fails the batch.
        body.update(requester=requester, ignore_invalid_id=True, ignore_invalid_ids=True)
        sent = [*map(str, amplitude_ids), *user_ids]
        answer = self._deletions.call(project, "POST", json=body, sent=sent)
        payload = self._deletions.json(project, answer)
        try:
            return _receipt(project, payload, Body.of(answer.content))
        except ValueError as exc:
            raise self._malformed(project, answer, exc) from None

    def list_deletions(self, project: int, start_day: date, end_day: date) -> DeletionListing:
        """The project's jobs whose ``day`` is in [start_day, end_day] (at most 180 days)."""
        if end_day < start_day:
            raise ValueError("end_day is before start_day")
        if (end_day - start_day).days > MAX_LISTING_DAYS:
            raise ValueError(
                f"a listing window is at most {MAX_LISTING_DAYS} days (Amplitude: six months)"
            )
        params = {"start_day": start_day.isoformat(), "end_day": end_day.isoformat()}
        answer = self._deletions.call(project, "GET", params=params)
        payload = self._deletions.json(project, answer)
        try:
            if not isinstance(payload, list):
                raise ValueError("the listing is not a JSON array")
            jobs = tuple(_job(i, job) for i, job in enumerate(payload))
        except ValueError as exc:
            raise self._malformed(project, answer, exc) from None
        return DeletionListing(project, start_day, end_day, jobs, Body.of(answer.content))

    def cancel_deletion(self, project: int, amplitude_id: int, day: date) -> Cancellation:
        """Take ``amplitude_id`` out of the job of ``day`` (only while it is ``staging``:
        later Amplitude refuses, and the refusal is a ``REJECTED`` error)."""
        check_amplitude_id(amplitude_id)
        suffix = f"/{amplitude_id}/{day.isoformat()}"
        answer = self._deletions.call(project, "DELETE", suffix, sent=[str(amplitude_id)])
        payload = self._deletions.json(project, answer)
        try:
            entry = _entry("the answer", payload)
        except ValueError as exc:
            raise self._malformed(project, answer, exc) from None
        return Cancellation(project, day, entry, Body.of(answer.content))

    def close(self) -> None:
        self._deletions.close()

    def _malformed(self, project: int, answer: Answer, exc: ValueError) -> ApiError:
        return self._deletions.malformed(project, answer, str(exc))


def _check_ids(amplitude_ids: Sequence[int], user_ids: Sequence[str]) -> None:
    """Refused before anything is sent: more than 100 ids, none, or ids of the wrong kind."""
    total = len(amplitude_ids) + len(user_ids)
    if not 0 < total <= MAX_IDS_PER_CALL:
        raise ValueError(f"{total} ids in one deletion call; 1 to {MAX_IDS_PER_CALL} allowed")
    for amplitude_id in amplitude_ids:
        check_amplitude_id(amplitude_id)
    if not all(isinstance(u, str) and u.strip() for u in user_ids):
        raise ValueError("every user id must be a non-empty string")


# -- parsing: every ValueError names the field, never the value (it may be personal data) --


def _receipt(project: int, payload: Any, body: Body) -> DeletionReceipt:
    if not isinstance(payload, dict):
        raise ValueError("the answer is not a JSON object")
    entries = _entries("the answer", payload.get("amplitude_ids"))
    invalid = payload.get("invalid_ids") or []
    if not isinstance(invalid, list) or not all(_is_id(i) for i in invalid):
        raise ValueError("invalid_ids is not a list of ids")
    scheduled = bool(entries) or payload.get("day") not in (None, "")
    return DeletionReceipt(
        project=project,
        day=_day("day", payload.get("day")) if scheduled else None,
        status=_status(payload.get("status")) if scheduled else None,
        entries=entries,
        invalid_ids=tuple(str(i) for i in invalid),
        body=body,
    )


def _job(index: int, job: Any) -> DeletionJob:
    where = f"job {index}"
    if not isinstance(job, dict):
        raise ValueError(f"{where} is not a JSON object")
    scrubbed = job.get("active_scrub_done_date")
    return DeletionJob(
        day=_day(f"{where}: day", job.get("day")),
        status=_status(job.get("status"), where),
        entries=_entries(where, job.get("amplitude_ids")),
        active_scrub_done_date=(
            None if scrubbed in (None, "") else _day(f"{where}: active_scrub_done_date", scrubbed)
        ),
    )


def _entries(where: str, value: Any) -> tuple[DeletionEntry, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{where}: amplitude_ids is not a list")
    return tuple(_entry(f"{where}: entry {i}", entry) for i, entry in enumerate(value))


def _entry(where: str, entry: Any) -> DeletionEntry:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not a JSON object")
    amplitude_id = positive_id(entry.get("amplitude_id"))
    if amplitude_id is None:
        raise ValueError(f"{where}: amplitude_id is not a positive integer")
    requester = entry.get("requester")
    if requester is not None and not isinstance(requester, str):
        raise ValueError(f"{where}: requester is not a string")
    return DeletionEntry(
        amplitude_id=amplitude_id,
        requested_on_day=_day(f"{where}: requested_on_day", entry.get("requested_on_day")),
        requester=printable(requester or ""),
    )


def _is_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _day(where: str, value: Any) -> date:
    """``YYYY-MM-DD``, or a date-time whose date part is that."""
    if not isinstance(value, str) or not _DAY.fullmatch(value.strip()):
        raise ValueError(f"{where} is not a YYYY-MM-DD date")
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise ValueError(f"{where} is not a real date") from None


def _status(value: Any, where: str = "the answer") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: status is missing")
    return printable(value.strip().lower())[:40]
