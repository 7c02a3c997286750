"""``dsar status``: the ledger as an operator reads it. Shows request ids and Amplitude's
request ids, never credentials; the subject's Amplitude ID only in one request's detail."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from dsar_scheduler.adapters.clock import SystemClock
from dsar_scheduler.adapters.db import File
from dsar_scheduler.config import Settings
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger import Ledger
from dsar_scheduler.ledger.rows import RequestRow, Snapshot
from dsar_scheduler.runtime.deadline_status import (
    NEAREST,
    overview,
    overview_lines,
    request_deadline,
    request_lines,
)
from dsar_scheduler.runtime.deletion_status import deletion_detail, deletion_lines


def _summary_data(
    ledger: Ledger, snap: Snapshot, settings: Settings, now: datetime
) -> dict[str, Any]:
    """The overview as data (``--json``), the latest requests needing attention included."""
    data: dict[str, Any] = {
        "queue_unadmitted": snap.queue_pending,
        "requests": {s.value: snap.by_state.get(s.value, 0) for s in State},
        "files": {
            "pending": snap.pending_files,
            "stored": snap.stored_files,
            "stored_bytes": snap.stored_bytes,
        },
        "budget": {"spent_last_hour": snap.cost_in_window, "limit": settings.budget_limit},
        "rate_limited_until": snap.rate_limited_until,
        "earliest_unfetched_expiry": snap.earliest_unfetched_expiry,
        "past_sla": snap.past_sla,
        "last_successful_tick": snap.last_ok_tick,
        "deadlines": overview(
            ledger.deadlines.open_counts(now), ledger.deadlines.nearest(NEAREST), now
        ),
    }
    problems = ledger.requests.in_state(State.DEAD, State.REJECTED)
    data["needs_attention"] = [
        {
            "request_id": r.id,
            "queue_id": r.queue_id,
            "external_ref": r.external_ref,
            "state": r.state,
            "reason": r.reason,
        }
        for r in problems[-20:]
    ]
    return data


def summary(engine: Engine, settings: Settings, as_json: bool) -> str:
    ledger = Ledger(sessionmaker(engine, expire_on_commit=False), settings.budget_limit)
    now = SystemClock().now()
    snap = ledger.views.snapshot(now, timedelta(seconds=settings.completion_sla_seconds))
    data = _summary_data(ledger, snap, settings, now)
    problems = data["needs_attention"]
    if as_json:
        return json.dumps(data, default=str, indent=2)
    lines = [f"queue rows not yet admitted: {snap.queue_pending}", "requests:"]
    lines += [f"  {state:<11} {count}" for state, count in data["requests"].items() if count]
    lines.append(
        f"files: {snap.stored_files} stored ({snap.stored_bytes} bytes), "
        f"{snap.pending_files} pending"
    )
    lines.append(f"budget: {snap.cost_in_window} of {settings.budget_limit} spent in the last hour")
    lines += overview_lines(data["deadlines"])
    if snap.rate_limited_until:
        lines.append(f"rate limited until {snap.rate_limited_until.isoformat()}")
    if snap.earliest_unfetched_expiry:
        lines.append(f"earliest unfetched result expires {snap.earliest_unfetched_expiry}")
    lines.append(f"last successful tick: {snap.last_ok_tick or 'never'}")
    if problems:
        lines.append("needs attention (latest 20):")
        lines += [
            f"  #{p['request_id']} queue row {p['queue_id']} {p['state']}: {p['reason']}"
            for p in data["needs_attention"]
        ]
    return "\n".join(lines)


def describe_request(engine: Engine, request_id: int, as_json: bool) -> str | None:
    """One request's detail and history from the audit trail; ``None`` if there is none."""
    sessions = sessionmaker(engine, expire_on_commit=False)
    ledger = Ledger(sessions, 0)
    request = ledger.requests.get(request_id)
    if request is None:
        return None
    with sessions() as session:
        files = (
            session.query(File)
            .filter(File.request_id == request_id)
            .order_by(File.remote_request_id, File.output_index)
            .all()
        )
    history: list[dict[str, Any]] = [
        {
            "at": e.at,
            "from": e.from_state,
            "to": e.to_state,
            "reason": e.reason,
            "amplitude_request_id": e.remote_request_id,
        }
        for e in ledger.requests.events(request_id)
    ]
    calls, cost = ledger.budget.request_cost(request_id)
    data = _request_data(request, files, history, calls, cost)
    data["deadline"] = request_deadline(request, SystemClock().now())
    data["deletion"] = deletion_detail(sessions, request)
    data["parent_request_id"] = request.parent_id
    data["supplements"] = [m._asdict() for m in ledger.supplements.members(request_id)]
    if data["deletion"] is not None:
        data["next"] = data["deletion"]["next"]
    if as_json:
        return json.dumps(data, default=str, indent=2)
    return _request_text(request, files, data)


def _request_data(
    request: RequestRow,
    files: list[File],
    history: list[dict[str, Any]],
    calls: int,
    cost: int,
) -> dict[str, Any]:
    return {
        "request_id": request.id,
        "queue_id": request.queue_id,
        "external_ref": request.external_ref,
        "amplitude_id": request.amplitude_id,
        "range": [request.start_date, request.end_date],
        "state": request.state,
        "reason": request.reason,
        "amplitude_request_id": request.remote_request_id,
        "submissions": request.submissions,
        "failures": request.failures,
        "expiries": request.expiries,
        "storage_prefix": request.storage_prefix,
        "expires_at": request.expires_at,
        "stored_at": request.stored_at,
        "errors_in_a_row": request.errors,
        "next_action_at": request.next_action_at,
        "api_calls": calls,
        "api_cost": cost,
        "next": _next_step(request, files),
        "history": history,
        "files": [_file(f) for f in files],
    }


def _request_text(request: RequestRow, files: list[File], data: dict[str, Any]) -> str:
    lines = [
        f"request {request.id} (queue row {request.queue_id}, "
        f"external_ref {request.external_ref or '-'}): {request.state}"
    ]
    if request.amplitude_id is not None:
        lines.append(
            f"  subject: amplitude_id {request.amplitude_id}, "
            f"{request.start_date} .. {request.end_date}"
        )
    if request.reason:
        lines.append(f"  reason: {request.reason}")
    lines.append(f"  next: {data['next']}")
    lines += _family_lines(data)
    lines += request_lines(data["deadline"])
    lines += deletion_lines(data["deletion"])
    lines.append(
        f"  {request.submissions} submission(s), {request.failures} failure(s), "
        f"{request.expiries} expiry(ies), {request.errors} error(s) in a row; "
        f"{data['api_calls']} API call(s) costing {data['api_cost']}"
    )
    lines.append("history:")
    lines += [
        f"  {h['at']:%Y-%m-%d %H:%M:%S}  {h['from'] or '-':>10} -> {h['to']:<10} {h['reason']}"
        for h in data["history"]
    ]
    if files:
        lines.append("files:")
        lines += [
            f"  {f.name}: {f.state} {f.bytes or ''} {f.sha256 or ''} {f.last_error or ''}".rstrip()
            + (f" (purged {f.purged_at:%Y-%m-%d %H:%M:%S})" if f.purged_at else "")
            for f in files
        ]
    return "\n".join(lines)


def _family_lines(data: dict[str, Any]) -> list[str]:
    """The request's place among a user-ID export and its supplementary requests."""
    if data["parent_request_id"] is not None:
        return [
            f"  supplementary to request {data['parent_request_id']} (an Amplitude ID its "
            "export by user ID missed)"
        ]
    if not data["supplements"]:
        return []
    listed = ", ".join(
        f"{m['id']} {m['state']}" + (" (delivered)" if m["delivered_at"] else "")
        for m in data["supplements"]
    )
    return [f"  supplementary requests: {listed}"]


def _next_step(request: RequestRow, files: list[File]) -> str:
    """What happens to the request next, in a sentence, from its state and bookkeeping."""
    state = State(request.state)
    due = request.next_action_at
    later = f" (not before {due:%Y-%m-%d %H:%M:%S} UTC)" if due is not None else ""
    current = [f for f in files if f.remote_request_id == request.remote_request_id]
    pending = [f for f in current if f.state != "stored"]
    if state in (State.QUEUED, State.FAILED, State.EXPIRED):
        return f"waits to be submitted{later}, when the budget allows"
    if state is State.SUBMITTING:
        return "a submission was under way; if the process stopped, the next tick resubmits"
    if state is State.SUBMITTED:
        return f"polled for completion at Amplitude{later}"
    if state in (State.DONE, State.FETCHING):
        return (
            f"{len(pending)} of {len(current)} file(s) still to download before the results "
            f"expire at {request.expires_at}"
        )
    if state is State.STORED:
        return f"nothing: every file is stored under {request.storage_prefix}/"
    if state in (State.PURGING, State.PURGED):
        return _purge_step(state, files)
    if state is State.REJECTED:
        return "nothing: correct the queue row upstream and insert a new one"
    if state is State.DEAD:
        return "nothing until an operator runs `dsar retry ID`"
    return "nothing: cancelled (`dsar retry ID` queues it again)"


def _purge_step(state: State, files: list[File]) -> str:
    """Retention: how far a purge got, or that the files are gone and the rows remain."""
    stored = [f for f in files if f.state == "stored"]
    removed = sum(1 for f in stored if f.purged_at is not None)
    if state is State.PURGING:
        return (
            f"purge under way: {removed} of {len(stored)} file(s) removed from storage; "
            "the next tick carries on"
        )
    return (
        "nothing: its files were removed from storage at the end of their retention; "
        "the file rows below are the record of what was removed"
    )


def _file(f: File) -> dict[str, Any]:
    return {
        "name": f.name,
        "amplitude_request_id": f.remote_request_id,
        "state": f.state,
        "bytes": f.bytes,
        "sha256": f.sha256,
        "events": f.event_count,
        "attempts": f.attempts,
        "last_error": f.last_error,
        "purged_at": f.purged_at,
    }
