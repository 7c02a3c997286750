"""Deletion jobs: one batch per (project, ``day``), its timeline on the clock's calendar, and
what each Amplitude ID's deletion has reached.

The API has no job id: a job is (project, ``day``) and a member is (``amplitude_id``,
``requested_on_day``). A POST joins the project's open batch while that batch is still in
``staging`` (``day`` - 3 after today); otherwise it opens a new one at today + U(10, 13) days,
which is then always after every earlier ``day``. Not locked itself: the emulator holds its
lock around each call. Draws are seeded by (project, date), not by call order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from dsar_scheduler.tools.emulator.privacy_config import PrivacyConfig

DeletionStatus = Literal["staging", "submitted", "done"]


class NotStaging(Exception):
    """The job has left ``staging``: its members can no longer be removed."""


@dataclass
class Entry:
    amplitude_id: int
    requested_on_day: date
    requester: str | None

    def body(self) -> dict[str, Any]:
        return {
            "amplitude_id": self.amplitude_id,
            "requested_on_day": self.requested_on_day.isoformat(),
            "requester": self.requester,
        }


@dataclass
class DeletionJob:
    project_id: int
    day: date
    #: ``active_scrub_done_date``: drawn when the batch opens.
    scrub_on: date
    done_on: date
    staging_until: date
    entries: list[Entry] = field(default_factory=list)
    #: Set when a ``delete_from_org`` request put members in it (listed as ``app``).
    org_wide: bool = False

    def status(self, today: date) -> DeletionStatus:
        if today >= self.done_on:
            return "done"
        return "submitted" if today >= self.staging_until else "staging"

    def entry(self, amplitude_id: int) -> Entry | None:
        return next((e for e in self.entries if e.amplitude_id == amplitude_id), None)


@dataclass(frozen=True)
class JobView:
    """A snapshot of one job for tests: its dates and members as of ``today``."""

    project_id: int
    day: date
    status: DeletionStatus
    active_scrub_done_date: date
    done_on: date
    amplitude_ids: tuple[int, ...]


class DeletionBook:
    """Every deletion job of every project, and an index of the jobs each ID is in."""

    def __init__(self, seed: int, cfg: PrivacyConfig) -> None:
        self._seed = seed
        self._cfg = cfg
        self._jobs: dict[int, list[DeletionJob]] = {}
        self._jobs_of: dict[tuple[int, int], list[DeletionJob]] = {}

    def open_batch(self, project_id: int, today: date) -> DeletionJob | None:
        """The project's batch still in ``staging``, if any (at most one: a new batch opens
        only once the previous one left it)."""
        jobs = self._jobs.get(project_id, [])
        if jobs and jobs[-1].status(today) == "staging":
            return jobs[-1]
        return None

    def batch_for(self, project_id: int, today: date) -> DeletionJob:
        """The open batch, or a new one (not yet stored: ``add`` stores it)."""
        open_job = self.open_batch(project_id, today)
        if open_job is not None:
            return open_job
        cfg = self._cfg
        rng = random.Random(f"privacy-batch:{self._seed}:{project_id}:{today.isoformat()}")
        day = today + timedelta(days=rng.randint(*cfg.batch_delay_days))
        scrub_on = day + timedelta(days=rng.randint(*cfg.scrub_delay_days))
        return DeletionJob(
            project_id=project_id,
            day=day,
            scrub_on=scrub_on,
            done_on=scrub_on + timedelta(days=cfg.done_after_scrub_days),
            staging_until=day - timedelta(days=cfg.staging_cutoff_days),
        )

    def add(self, job: DeletionJob, amplitude_id: int, today: date, requester: str | None) -> Entry:
        """Put an ID in a batch from ``batch_for``; an ID already in it keeps its entry."""
        jobs = self._jobs.setdefault(job.project_id, [])
        if not jobs or jobs[-1] is not job:
            jobs.append(job)
        existing = job.entry(amplitude_id)
        if existing is not None:
            return existing
        entry = Entry(amplitude_id, today, requester)
        job.entries.append(entry)
        self._jobs_of.setdefault((job.project_id, amplitude_id), []).append(job)
        return entry

    def remove(self, project_id: int, amplitude_id: int, day: date, today: date) -> Entry | None:
        """Take an ID out of a job in ``staging``; ``None`` when the job or the ID is not
        there; ``NotStaging`` once the job left ``staging``."""
        job = self.job(project_id, day)
        entry = job.entry(amplitude_id) if job is not None else None
        if job is None or entry is None:
            return None
        if job.status(today) != "staging":
            raise NotStaging(
                f"the job for {day.isoformat()} is {job.status(today)}: "
                "only a job in staging can be changed"
            )
        job.entries.remove(entry)
        self._jobs_of[(project_id, amplitude_id)].remove(job)
        return entry

    def job(self, project_id: int, day: date) -> DeletionJob | None:
        return next((j for j in self._jobs.get(project_id, []) if j.day == day), None)

    def in_window(self, project_id: int, start: date, end: date) -> list[DeletionJob]:
        return [j for j in self._jobs.get(project_id, []) if start <= j.day <= end]

    def gone_on(self, project_id: int, amplitude_id: int) -> date | None:
        """When the ID stops being found in the project (``gone_from``), if a job has it."""
        jobs = self._jobs_of.get((project_id, amplitude_id))
        if not jobs:
            return None
        return min(j.scrub_on if self._cfg.gone_from == "scrub" else j.done_on for j in jobs)

    def done_on(self, project_id: int, amplitude_id: int) -> date | None:
        jobs = self._jobs_of.get((project_id, amplitude_id))
        return min((j.done_on for j in jobs), default=None) if jobs else None

    def views(self, project_id: int, today: date) -> list[JobView]:
        return [
            JobView(
                project_id=j.project_id,
                day=j.day,
                status=j.status(today),
                active_scrub_done_date=j.scrub_on,
                done_on=j.done_on,
                amplitude_ids=tuple(e.amplitude_id for e in j.entries),
            )
            for j in self._jobs.get(project_id, [])
        ]


def status_text(status: DeletionStatus, case: str, day: date) -> str:
    """The status as the API spells it: ``mixed`` capitalises the jobs of odd days."""
    if case == "capitalized" or (case == "mixed" and day.toordinal() % 2):
        return status.capitalize()
    return status


def listing_body(job: DeletionJob, today: date, case: str) -> dict[str, Any]:
    """One job as the GET listing shows it; ``active_scrub_done_date`` once it is reached."""
    body: dict[str, Any] = {
        "day": job.day.isoformat(),
        "status": status_text(job.status(today), case, job.day),
        "amplitude_ids": [e.body() for e in job.entries],
    }
    if job.org_wide:
        body["app"] = job.project_id
    if today >= job.scrub_on:
        body["active_scrub_done_date"] = job.scrub_on.isoformat()
    return body
