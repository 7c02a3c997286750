"""``dsar cancel ID`` for a deletion under way (``deleting``).

Amplitude can take an entry out of a job only while the job is ``staging``, until three days
before its ``day``. So the cancel is planned first (``core.deletion.cancel_plan``): one entry
past that refuses it all, with the reason, and nothing changes. Otherwise each staged entry
is taken out of its job (``DELETE …/{amplitude_id}/{day}``), one call at a time within the
project key's limits, which the daemons share through the ledger; each answer is recorded as
it comes (a receipt, the entry ``cancelled``), so a crash part way leaves the ledger as
Amplitude is. A call Amplitude refuses (the job left staging meanwhile) stops the cancel:
what was taken out stays cancelled, the rest goes on, and the audit trail says so. Last, the
entries never sent and the request are cancelled together (``ledger.cancels.finish``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from typing import TypeVar

from dsar_scheduler.adapters.amplitude import ApiError, ErrorKind, PrivacyApi
from dsar_scheduler.adapters.clock import Clock
from dsar_scheduler.core.deletion import LISTING_TAIL, EntryRow, cancel_plan
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.deletions import Receipt
from dsar_scheduler.tick.privacy import REQUESTER, rate_limit_pause

T = TypeVar("T")

#: Wall seconds a cancel waits, in all, for the deletion keys' limits (one call a second).
WAIT_FOR_SLOTS = 5.0
#: The shortest pause between two looks at a key's limits (wall seconds).
_LOOK_AGAIN = 0.05
#: A job's ``day`` is at most 13 days after the request joined it (listing from there).
LOOK_BACK = timedelta(days=14)
BUSY = (
    "the project's deletion key stayed busy (its limits or a 429 backoff, shared with the "
    "daemons); try again shortly"
)


def cancel_deletion(
    ledger: Ledger,
    privacy: PrivacyApi | None,
    request_id: int,
    clock: Clock,
    by: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
    wait: float = WAIT_FOR_SLOTS,
) -> tuple[bool, str]:
    """(cancelled, what to tell the operator). ``by``: who asked, for the audit trail."""
    plan = cancel_plan(ledger.cancels.entries(request_id), clock.now().date())
    if plan.refusal is not None:
        return False, f"request {request_id} cannot be cancelled: {plan.refusal}; nothing changed"
    if plan.staging and privacy is None:
        return False, (
            f"request {request_id} has entries in Amplitude's deletion jobs: cancelling them "
            "needs the projects' keys (DSAR_PROJECTS_FILE); nothing changed"
        )
    if plan.staging:
        assert privacy is not None
        caller = _Caller(ledger, privacy, request_id, clock, sleep, _Waited(wait))
        for done, entry in enumerate(plan.staging):
            stopped = _take_out(caller, entry, by)
            if stopped is not None:
                return False, (
                    f"request {request_id}: cancel stopped at entry {entry.id} (project "
                    f"{entry.project_id}): {stopped}; {_entries(done)} already taken out of "
                    "Amplitude's jobs stay cancelled, the rest of the deletion goes on"
                )
    reason = (
        f"cancelled {by} while deleting: {_entries(len(plan.staging))} taken out of "
        f"Amplitude's deletion jobs (their answers kept as receipts), "
        f"{_entries(len(plan.pending))} never sent"
    )
    if not ledger.cancels.finish(request_id, reason, clock.now()):
        return False, (
            f"request {request_id} changed meanwhile (an entry was sent to Amplitude, or the "
            f"request moved on); {_entries(len(plan.staging))} taken out stay cancelled: "
            "run the cancel again"
        )
    return True, f"request {request_id}: {reason}"


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


class _Busy(Exception):
    """The key's limits (or a 429 backoff) outlasted the cancel's wait."""


class _Waited:
    """The wall seconds a cancel may still wait for slots."""

    def __init__(self, budget: float) -> None:
        self.left = budget


@dataclass(frozen=True)
class _Caller:
    """Deletion-key calls for one cancel, each within the key's limits in the ledger."""

    ledger: Ledger
    privacy: PrivacyApi
    request_id: int
    clock: Clock
    sleep: Callable[[float], None]
    waited: _Waited

    def call(self, project: int, work: Callable[[], T]) -> T:
        """``work`` once a slot is reserved; the call finished in the ledger either way,
        a 429 backing the key off for every process. Raises ``_Busy``, ``ApiError``."""
        calls, clock = self.ledger.privacy_calls, self.clock
        call_id = self._reserve(project)
        status: int | None = None
        try:
            result = work()
            status = 200
            return result
        except ApiError as err:
            status = err.status_code
            if err.kind is ErrorKind.RATE_LIMITED:
                now = clock.now()
                calls.back_off("deletion", project, now + rate_limit_pause(err), now)
            raise
        finally:
            calls.finish(call_id, status, clock.now())

    def _reserve(self, project: int) -> int:
        calls, clock = self.ledger.privacy_calls, self.clock
        while True:
            call_id = calls.reserve("deletion", project, clock.now(), self.request_id)
            if call_id is not None:
                return call_id
            now = clock.now()
            pause = max((calls.wait_until("deletion", project, now) - now).total_seconds(), 0.0)
            pause = max(pause / clock.speed, _LOOK_AGAIN)
            if pause > self.waited.left:
                raise _Busy
            self.waited.left -= pause
            self.sleep(pause)


def _take_out(caller: _Caller, entry: EntryRow, by: str) -> str | None:
    """One DELETE, its answer recorded; why the cancel stops here, or ``None``."""
    assert entry.day is not None  # a staged entry has its job's day (cancel_plan checks)
    project, day = entry.project_id, entry.day
    try:
        answer = caller.call(
            project, partial(caller.privacy.cancel_deletion, project, entry.amplitude_id, day)
        )
    except _Busy:
        return BUSY
    except ApiError as err:
        if err.kind is ErrorKind.NOT_FOUND:
            return _not_in_job(caller, entry, by, err)
        return _refused(caller, entry, _why(err, day), err)
    except ValueError as err:  # the client refused to send it
        return f"not sent: {err}"
    receipt = Receipt(project, "cancel", 200, answer.body.raw)
    what = f"entry {entry.id}: cancelled {by}, taken out of Amplitude's job of {day.isoformat()}"
    caller.ledger.cancels.taken_out(caller.request_id, entry, [receipt], what, caller.clock.now())
    return None


def _not_in_job(caller: _Caller, entry: EntryRow, by: str, err: ApiError) -> str | None:
    """Amplitude does not have the entry in its job: taken out by an earlier cancel whose
    answer was lost (a crash, a timeout)? Only if the listing shows it in no job of ours."""
    assert entry.day is not None
    project, day = entry.project_id, entry.day
    start = entry.requested_on_day or day - LOOK_BACK
    try:
        listing = caller.call(
            project, partial(caller.privacy.list_deletions, project, start, day + LISTING_TAIL)
        )
    except (_Busy, ApiError, ValueError) as failed:
        why = f"{_why(err, day)}, and the listing could not tell ({failed})"
        return _refused(caller, entry, why, err)
    mine = [
        job.day
        for job in listing.jobs
        for item in job.entries
        if item.amplitude_id == entry.amplitude_id and item.requester == REQUESTER
    ]
    if mine:
        why = f"{_why(err, day)}, yet the listing shows it in the job of {mine[0].isoformat()}"
        return _refused(caller, entry, why, err)
    receipts = [
        Receipt(project, "cancel", err.status_code, err.body.encode()),
        Receipt(project, "listing", 200, listing.body.raw),
    ]
    what = (
        f"entry {entry.id}: cancelled {by}; no longer in Amplitude's job of {day.isoformat()} "
        "(HTTP 404, and the listing shows it in no job: an earlier cancel's answer was lost)"
    )
    caller.ledger.cancels.taken_out(caller.request_id, entry, receipts, what, caller.clock.now())
    return None


def _why(err: ApiError, day: date) -> str:
    if err.kind is ErrorKind.RATE_LIMITED:
        return f"Amplitude rate limited the call ({err}); try again later"
    if err.kind is ErrorKind.REJECTED:
        return f"Amplitude refused it: the job of {day.isoformat()} has left staging ({err})"
    if err.kind is ErrorKind.NOT_FOUND:
        return f"Amplitude does not have it in the job of {day.isoformat()} ({err})"
    return f"the call failed ({err}); try again"


def _refused(caller: _Caller, entry: EntryRow, why: str, err: ApiError) -> str:
    """Amplitude did not take the entry out: why, in the request's audit trail, with its
    answer as a receipt when there was one."""
    receipt = None
    if err.status_code is not None:
        receipt = Receipt(entry.project_id, "cancel", err.status_code, err.body.encode())
    what = f"entry {entry.id}: cancel refused, the deletion goes on: {why}"
    caller.ledger.cancels.refused(caller.request_id, what, receipt, caller.clock.now())
    return why
