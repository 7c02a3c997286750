"""The org's DSAR jobs: when each finishes, how, and when its results expire."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from dsar_scheduler.tools.emulator.config import EmulatorConfig
from dsar_scheduler.tools.emulator.content import FileSpec

JobStatus = Literal["staging", "submitted", "done", "failed"]
Outcome = Literal["done", "failed"]


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of one job; ``status`` is as of the time the snapshot was taken."""

    request_id: int
    amplitude_id: int | None
    user_id: str | None
    start_date: date
    end_date: date
    created_at: datetime
    staging_until: datetime
    finishes_at: datetime
    outcome: Outcome
    fail_reason: str | None
    expires_at: datetime | None
    file_count: int
    status: JobStatus


@dataclass
class Job:
    request_id: int
    amplitude_id: int | None
    user_id: str | None
    start: date
    end: date
    created_at: datetime
    staging_until: datetime
    finishes_at: datetime
    outcome: Outcome
    fail_reason: str | None
    expires_at: datetime | None
    files: list[FileSpec]

    def status(self, now: datetime) -> JobStatus:
        if now >= self.finishes_at:
            return self.outcome
        return "submitted" if now >= self.staging_until else "staging"

    def ended(self) -> datetime:
        """When a job stops mattering: its results expire, or (failed) it finished."""
        if self.outcome == "done" and self.expires_at is not None:
            return self.expires_at
        return self.finishes_at

    def info(self, now: datetime) -> JobInfo:
        return JobInfo(
            request_id=self.request_id,
            amplitude_id=self.amplitude_id,
            user_id=self.user_id,
            start_date=self.start,
            end_date=self.end,
            created_at=self.created_at,
            staging_until=self.staging_until,
            finishes_at=self.finishes_at,
            outcome=self.outcome,
            fail_reason=self.fail_reason,
            expires_at=self.expires_at,
            file_count=len(self.files),
            status=self.status(now),
        )


@dataclass(frozen=True)
class Subject:
    """What a POST asked for."""

    amplitude_id: int | None
    user_id: str | None
    start: date
    end: date


class JobBook:
    """Every job by request id. Not locked itself: the emulator holds its lock around each
    call, so the seeded draws happen in the order the calls arrive."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._rng = random.Random(f"jobs:{config.seed}")
        self._jobs: dict[int, Job] = {}
        self._next_id = config.first_request_id
        self._last_forget: datetime | None = None

    def open(self, now: datetime, subject: Subject, files: list[FileSpec]) -> Job:
        """A new job whose completion time and outcome are drawn from the seeded RNG."""
        cfg = self._config
        if cfg.completion_mode_s is None:
            delay = self._rng.uniform(cfg.completion_min_s, cfg.completion_max_s)
        else:
            delay = self._rng.triangular(
                cfg.completion_min_s, cfg.completion_max_s, cfg.completion_mode_s
            )
        failed = self._rng.random() < cfg.fail_rate
        reason = self._rng.choice(cfg.fail_reasons) if failed else None
        finishes_at = now + timedelta(seconds=delay)
        staging = min(cfg.staging_max_s, cfg.staging_fraction * delay)
        job = Job(
            request_id=self._next_id,
            amplitude_id=subject.amplitude_id,
            user_id=subject.user_id,
            start=subject.start,
            end=subject.end,
            created_at=now,
            staging_until=now + timedelta(seconds=staging),
            finishes_at=finishes_at,
            outcome="failed" if failed else "done",
            fail_reason=reason,
            expires_at=None if failed else self.expiry(finishes_at),
            files=files,
        )
        self._jobs[job.request_id] = job
        self._next_id += 1
        return job

    def get(self, request_id: int) -> Job:
        try:
            return self._jobs[request_id]
        except KeyError:
            raise KeyError(f"no emulated request {request_id}") from None

    def find(self, raw_id: str) -> Job | None:
        """The job a URL's id segment names, or ``None`` (not a number, or unknown)."""
        return self._jobs.get(int(raw_id)) if raw_id.isdigit() else None

    def snapshot(self, now: datetime) -> dict[int, JobInfo]:
        return {rid: job.info(now) for rid, job in self._jobs.items()}

    def force(self, request_id: int, outcome: Outcome, reason: str | None, when: datetime) -> None:
        job = self.get(request_id)
        job.finishes_at = when
        job.staging_until = min(job.staging_until, when)
        job.outcome = outcome
        job.fail_reason = reason
        job.expires_at = self.expiry(when) if outcome == "done" else None

    def expire(self, request_id: int, now: datetime) -> None:
        job = self.get(request_id)
        if job.outcome != "done":
            raise ValueError(f"request {request_id} is not done")
        job.expires_at = floor_seconds(now) - timedelta(seconds=1)

    def forget_old(self, now: datetime) -> list[Job]:
        """Drop jobs whose results expired (or that failed) ``forget_after_s`` ago, at most
        once per ten clock minutes; returns them so their cached files can go too."""
        keep = self._config.forget_after_s
        if keep is None:
            return []
        if self._last_forget is not None and now - self._last_forget < timedelta(minutes=10):
            return []
        self._last_forget = now
        cutoff = now - timedelta(seconds=keep)
        stale = [job for job in self._jobs.values() if job.ended() < cutoff]
        for job in stale:
            del self._jobs[job.request_id]
        return stale

    def expiry(self, done_at: datetime) -> datetime:
        """Whole seconds, so the ``expires`` string and the enforced expiry agree."""
        return floor_seconds(done_at + timedelta(seconds=self._config.result_ttl_s))


def floor_seconds(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(microsecond=0)
