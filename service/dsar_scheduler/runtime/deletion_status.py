"""A deletion in ``dsar status ID``: each entry (a subject's Amplitude ID in one project) with
its state, Amplitude's job day, when the data stopped being accessible, when it was done and
verified, the re-ingestion checks made and any ID that came back; every receipt (kind,
project, time, HTTP status, sha256 of the answer as kept); and what happens next. The
subject's IDs appear here, in one request's detail, never in the overview or the logs."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import DeletionEntry
from dsar_scheduler.core.deletion import CANCEL_CUTOFF, RECHECKS, Entry, progress
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.deletions import Deletions
from dsar_scheduler.ledger.rows import RequestRow

#: The request states of a deletion (a cancelled one shows its entries too).
DELETION_STATES = frozenset({State.RESOLVING, State.REVIEW, State.DELETING, State.DELETED})


def deletion_detail(sessions: sessionmaker[Session], request: RequestRow) -> dict[str, Any] | None:
    """``None`` for a request that is not (or not yet) a deletion."""
    state = State(request.state)
    if request.request_type == "access" or (
        state not in DELETION_STATES and state is not State.CANCELLED
    ):
        return None
    with sessions() as session:
        rows = (
            session.query(DeletionEntry)
            .filter(DeletionEntry.request_id == request.id)
            .order_by(DeletionEntry.project_id, DeletionEntry.id)
            .all()
        )
    receipts = Deletions(sessions, lambda _: None).receipts(request.id)
    entries = [_entry(e) for e in rows]
    return {
        "user_id": request.user_id,
        "entries": entries,
        "receipts": [
            {"kind": k, "project": p, "at": at, "sha256": sha, "status": code}
            for k, p, at, sha, code in receipts
        ],
        "next": _next(state, rows),
    }


def _entry(e: DeletionEntry) -> dict[str, Any]:
    return {
        "entry": e.id,
        "project": e.project_id,
        "amplitude_id": e.amplitude_id,
        "found_by": e.source,
        "state": e.state,
        "job_day": e.day,
        "requested_on_day": e.requested_on_day,
        "no_longer_accessible_since": e.scrub_done_on,
        "submitted_at": e.submitted_at,
        "done_at": e.done_at,
        "verified_at": e.verified_at,
        "rechecks": f"{e.rechecks} of {len(RECHECKS)}",
        "reingested_as": e.reingested.split(",") if e.reingested else [],
    }


def deletion_lines(data: dict[str, Any] | None) -> list[str]:
    """The deletion's lines of ``dsar status ID``."""
    if data is None:
        return []
    counts = Counter(e["state"] for e in data["entries"])
    lines = [
        f"  deletion of user_id {data['user_id'] or '-'}: "
        + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no entries yet")
    ]
    lines += [f"    {_entry_line(e)}" for e in data["entries"]]
    if data["receipts"]:
        lines.append("  receipts:")
        lines += [
            f"    {r['at']:%Y-%m-%d %H:%M:%S}  {r['kind']:<8} project {r['project']} "
            f"HTTP {r['status'] or '-'} sha256 {r['sha256']}"
            for r in data["receipts"]
        ]
    return lines


def _entry_line(e: dict[str, Any]) -> str:
    parts = [f"entry {e['entry']}: project {e['project']} amplitude_id {e['amplitude_id']}"]
    parts.append(f"({e['found_by']}) {e['state']}")
    if e["job_day"]:
        parts.append(f"in Amplitude's job of {e['job_day']}")
    if e["no_longer_accessible_since"]:
        parts.append(f"no longer accessible since {e['no_longer_accessible_since']}")
    if e["verified_at"]:
        parts.append(f"verified {e['verified_at']:%Y-%m-%d %H:%M}, rechecks {e['rechecks']}")
    if e["reingested_as"]:
        parts.append(f"RE-INGESTED as {', '.join(e['reingested_as'])}")
    return " ".join(parts)


def _next(state: State, rows: list[DeletionEntry]) -> str:
    """What happens to the deletion next, in a sentence."""
    if state is State.RESOLVING:
        return "its subject is searched for in every project at the next tick"
    if state is State.REVIEW:
        return (
            "nothing until a person decides (the candidates are in the search receipts): "
            "`dsar cancel ID`, then a new deletion naming the exact user ID or Amplitude ID"
        )
    if state is State.CANCELLED:
        return "nothing: cancelled"
    if state is State.DELETED:
        return "nothing to delete; re-ingestion checks 7 and 30 days after each verification"
    least = progress({e.id: Entry(e.state) for e in rows})
    days = [e.day for e in rows if e.day is not None and Entry(e.state) is Entry.STAGING]
    steps = {
        Entry.PENDING: "sent to Amplitude at the next tick",
        Entry.SUBMITTING: "a deletion call's answer was not recorded: the job listing settles it",
        Entry.STAGING: (
            f"waits in Amplitude's job; `dsar cancel ID` can take it out until "
            f"{min(days) - CANCEL_CUTOFF if days else '-'}"
        ),
        Entry.SUBMITTED: "Amplitude's job runs (it can no longer be cancelled)",
        Entry.SCRUBBED: "no longer accessible; done once Amplitude's backups are cleared (~5 days)",
        Entry.DONE: "User Search is asked whether the IDs are gone, at the next listing",
    }
    return steps.get(least, "every entry settled") if least else "no entries"
