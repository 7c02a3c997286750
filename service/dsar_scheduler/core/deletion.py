"""The life of one deletion entry (a subject's Amplitude ID in one project) from our POST to a
verified erasure, as pure rules over the entries, Amplitude's answers and the time.

Amplitude's User Privacy API has no job id: a job is (project, ``day``) and an entry is
(``amplitude_id``, ``requested_on_day``), so each POST carries our own ``requester`` and every
listing entry is matched on it. Statuses are compared case-insensitively (the docs mix cases).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

#: Amplitude's limits: IDs per POST; the widest listing window it answers ("max 6 months":
#: 180 days is inside six months whichever months they are).
MAX_IDS_PER_CALL = 100
MAX_LISTING_WINDOW = timedelta(days=180)
#: "within 30 days after receiving the request" (the User Privacy API's promise).
PROMISED = timedelta(days=30)
#: A job past ``day`` is listed this long after it, for its scrub and ``done`` (5 days after).
LISTING_TAIL = timedelta(days=10)
#: A staged entry can be taken out of its job until this long before the job's ``day``.
CANCEL_CUTOFF = timedelta(days=3)
#: A job is ``done`` about this long after its ``day`` (the scrub, then the backups cleared).
BACKUP_WAIT = timedelta(days=5)
#: After a verified deletion, look again for the user coming back (re-ingestion).
RECHECKS = (timedelta(days=7), timedelta(days=30))


class Entry(StrEnum):
    PENDING = "pending"  # resolved, not yet sent
    SUBMITTING = "submitting"  # in a POST whose answer we have not recorded (maybe a crash)
    STAGING = "staging"  # in a job that can still be cancelled
    SUBMITTED = "submitted"  # the job is running, cannot be stopped
    SCRUBBED = "scrubbed"  # no longer accessible (``active_scrub_done_date``); backups remain
    DONE = "done"  # Amplitude says done
    VERIFIED = "verified"  # done, and User Search no longer finds it
    INVALID = "invalid"  # Amplitude did not know the ID in this project: nothing to delete
    CANCELLED = "cancelled"  # taken out of its job while staging


#: Entries Amplitude is working on: the listing is read for them.
IN_FLIGHT = frozenset({Entry.SUBMITTING, Entry.STAGING, Entry.SUBMITTED, Entry.SCRUBBED})
#: Entries at their end.
SETTLED = frozenset({Entry.VERIFIED, Entry.INVALID, Entry.CANCELLED})


@dataclass(frozen=True)
class EntryRow:
    """One deletion entry as the ledger keeps it."""

    id: int
    project_id: int
    amplitude_id: int
    state: Entry
    day: date | None = None
    requested_on_day: date | None = None
    submitted_at: datetime | None = None


@dataclass(frozen=True)
class Batch:
    """One POST: at most 100 IDs of one project."""

    project_id: int
    entry_ids: tuple[int, ...]
    amplitude_ids: tuple[int, ...]


def batches(entries: Iterable[EntryRow]) -> list[Batch]:
    """The pending entries as POSTs, per project, in order, at most 100 IDs each."""
    by_project: dict[int, list[EntryRow]] = {}
    for row in entries:
        if row.state is Entry.PENDING:
            by_project.setdefault(row.project_id, []).append(row)
    out = []
    for project_id, rows in sorted(by_project.items()):
        for start in range(0, len(rows), MAX_IDS_PER_CALL):
            chunk = rows[start : start + MAX_IDS_PER_CALL]
            out.append(
                Batch(
                    project_id,
                    tuple(r.id for r in chunk),
                    tuple(r.amplitude_id for r in chunk),
                )
            )
    return out


@dataclass(frozen=True)
class ListedEntry:
    """One ``amplitude_ids`` item of a POST answer or a listing job."""

    amplitude_id: int
    requested_on_day: date | None
    requester: str | None


@dataclass(frozen=True)
class Job:
    """One listing job (or a POST answer, which describes the job it joined)."""

    day: date
    status: str
    entries: tuple[ListedEntry, ...]
    active_scrub_done_date: date | None = None


@dataclass(frozen=True)
class Change:
    """What the ledger records for one entry: its new state, the job's day and dates."""

    entry_id: int
    state: Entry
    day: date | None
    requested_on_day: date | None
    scrub_done: date | None
    reason: str


def status_of(job: Job) -> Entry:
    """A job's status as an entry state; the scrub date, once given, is the step that
    matters legally (the data is no longer accessible) until the job says done."""
    status = job.status.strip().lower()
    if status == "done":
        return Entry.DONE
    if job.active_scrub_done_date is not None:
        return Entry.SCRUBBED
    if status == "submitted":
        return Entry.SUBMITTED
    return Entry.STAGING


def after_post(
    batch: Batch, job: Job, invalid_ids: Iterable[int], requester: str
) -> tuple[list[Change], list[int]]:
    """The entries' changes from a POST answer, and the entry ids the answer did not mention
    (left as they were: the listing settles them)."""
    invalid = set(invalid_ids)
    listed = {e.amplitude_id: e for e in job.entries if e.requester in (None, requester)}
    changes: list[Change] = []
    missing: list[int] = []
    for entry_id, amplitude_id in zip(batch.entry_ids, batch.amplitude_ids, strict=True):
        if amplitude_id in invalid:
            reason = "Amplitude does not know this ID in the project: nothing to delete"
            changes.append(Change(entry_id, Entry.INVALID, None, None, None, reason))
        elif amplitude_id in listed:
            state = status_of(job)
            reason = f"in Amplitude's deletion job of {job.day.isoformat()} ({job.status})"
            changes.append(
                Change(
                    entry_id, state, job.day, listed[amplitude_id].requested_on_day, None, reason
                )
            )
        else:
            missing.append(entry_id)
    return changes, missing


def listing_window(entries: Iterable[EntryRow], today: date) -> tuple[date, date] | None:
    """The ``start_day``/``end_day`` to list for the entries in flight: from the earliest
    request to ten days past the latest job (for its scrub and ``done``), never wider than
    Amplitude answers and never the whole history. ``None``: nothing in flight."""
    rows = [r for r in entries if r.state in IN_FLIGHT]
    if not rows:
        return None
    starts = [
        r.requested_on_day or (r.submitted_at.date() if r.submitted_at else today) for r in rows
    ]
    ends = [(r.day or today + timedelta(days=13)) + LISTING_TAIL for r in rows]
    start = min(starts)
    return start, min(max(ends), start + MAX_LISTING_WINDOW)


def reconcile(entries: Iterable[EntryRow], jobs: Sequence[Job], requester: str) -> list[Change]:
    """The changes a listing shows for our entries in flight: matched on Amplitude ID and our
    ``requester`` (and the request day when we know it). An entry the listing does not show
    is left alone: a job past the window, or a POST that never arrived (see ``lost``)."""
    seen: dict[int, tuple[Job, ListedEntry]] = {}
    for job in jobs:
        for item in job.entries:
            if item.requester == requester:
                seen[item.amplitude_id] = (job, item)
    changes = []
    for row in entries:
        if row.state not in IN_FLIGHT or row.amplitude_id not in seen:
            continue
        job, item = seen[row.amplitude_id]
        state = status_of(job)
        if state is row.state and job.day == row.day:
            continue
        reason = f"Amplitude's deletion job of {job.day.isoformat()}: {job.status.lower()}"
        if job.active_scrub_done_date is not None:
            reason += f", no longer accessible since {job.active_scrub_done_date.isoformat()}"
        changes.append(
            Change(
                row.id, state, job.day, item.requested_on_day, job.active_scrub_done_date, reason
            )
        )
    return changes


def lost(entries: Iterable[EntryRow], jobs: Sequence[Job], requester: str) -> list[int]:
    """Entries left ``submitting`` (a crash between the POST and its record) that the listing
    does not show: Amplitude never took them, so they may be sent again. One it shows is
    recovered by ``reconcile`` instead: nothing is submitted twice."""
    listed = {i.amplitude_id for j in jobs for i in j.entries if i.requester == requester}
    return [r.id for r in entries if r.state is Entry.SUBMITTING and r.amplitude_id not in listed]


def listing_due(last_listed: datetime | None, now: datetime, every: timedelta) -> bool:
    """A project's listing is read at most every ``every`` (a few hours: jobs move daily)."""
    return last_listed is None or now - last_listed >= every


def overdue(row: EntryRow, now: datetime) -> bool:
    """Not done 30 days after it was sent: past what Amplitude promises."""
    if row.submitted_at is None or row.state in SETTLED or row.state is Entry.DONE:
        return False
    return now - row.submitted_at > PROMISED


def cancel_refusal(row: EntryRow, today: date) -> str | None:
    """Why an entry cannot be taken out of its job (``None``: it can)."""
    if row.state is Entry.PENDING:
        return None
    if row.state is not Entry.STAGING or row.day is None:
        return f"the deletion is {row.state.value}: only a job still staging can be cancelled"
    if today > row.day - CANCEL_CUTOFF:
        return (
            f"Amplitude's job of {row.day.isoformat()} stops taking cancellations three days "
            "before it runs"
        )
    return None


#: Entries with nothing at Amplitude to take back: a cancel passes over them.
NOTHING_TO_CANCEL = frozenset({Entry.INVALID, Entry.CANCELLED})


@dataclass(frozen=True)
class CancelPlan:
    """A deletion's cancel: the entries to take out of their jobs (one DELETE each), those
    never sent (cancelled in the ledger alone), or why nothing may be touched."""

    staging: tuple[EntryRow, ...] = ()
    pending: tuple[EntryRow, ...] = ()
    refusal: str | None = None


def cancel_plan(rows: Iterable[EntryRow], today: date) -> CancelPlan:
    """All or nothing: one entry past the cutoff (or already beyond staging) refuses the
    whole cancel, since taking out only some IDs would leave the subject half deleted."""
    live = [r for r in rows if r.state not in NOTHING_TO_CANCEL]
    refused = [(r, why) for r in live if (why := cancel_refusal(r, today)) is not None]
    if refused:
        first, why = refused[0]
        more = f" (and {len(refused) - 1} more entries)" if len(refused) > 1 else ""
        return CancelPlan(refusal=f"entry {first.id} (project {first.project_id}): {why}{more}")
    return CancelPlan(
        staging=tuple(r for r in live if r.state is Entry.STAGING),
        pending=tuple(r for r in live if r.state is Entry.PENDING),
    )


def recheck_due(verified_at: datetime, checks_done: int, now: datetime) -> bool:
    """The next re-ingestion check (7 and 30 days after the verified deletion) is due."""
    return checks_done < len(RECHECKS) and now >= verified_at + RECHECKS[checks_done]


def checks_passed(verified_at: datetime, now: datetime) -> int:
    """The re-ingestion checks whose time has come: one search answers all of them, so a
    service that was stopped past both days records both at once."""
    return sum(now >= verified_at + after for after in RECHECKS)


def came_back(
    user_id: str | None, deleted: Iterable[int], matches: Iterable[tuple[str | None, int]]
) -> frozenset[int]:
    """Amplitude IDs under the subject's exact user ID that were not deleted: the app (or a
    warehouse import) kept sending the user's events and Amplitude made a new user."""
    if user_id is None:
        return frozenset()
    gone = set(deleted)
    return frozenset(a for u, a in matches if u == user_id and a not in gone)


def still_there(
    deleted: Iterable[int], matches: Iterable[tuple[str | None, int]]
) -> frozenset[int]:
    """Deleted Amplitude IDs that User Search still finds: the verification failed."""
    gone = set(deleted)
    return frozenset(a for _u, a in matches if a in gone)


def progress(states: Mapping[int, Entry]) -> Entry | None:
    """A request's deletion as one word: the least advanced of its live entries, or of the
    settled ones when none is live (``None``: it has none, the subject is in no project)."""
    order = list(Entry)
    live = [s for s in states.values() if s not in (Entry.INVALID, Entry.CANCELLED)]
    return min(live or states.values(), key=order.index, default=None)


def lands_after(job_day: date, deadline: datetime) -> bool:
    """Amplitude's job, ``done`` about five days after its ``day``, would end after the
    request's deadline (the end of its due day): the team should extend it while it can, or
    rely on the scrub (the data no longer accessible) and say so."""
    return job_day + BACKUP_WAIT > deadline.date()
