"""The legal deadlines in ``dsar status``: one request's (regime, received, due, extended
until, met / missed / open), and the overview's counts of open requests past 50% and 80% of
their time and past their deadline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from dsar_scheduler.core.deadlines import ALERT_SHARES, elapsed_share, outcome
from dsar_scheduler.core.states import State
from dsar_scheduler.ledger.deadlines import OpenCounts, deadline_of
from dsar_scheduler.ledger.rows import RequestRow

#: Open requests ``dsar status`` lists, nearest deadline first.
NEAREST = 10


def request_deadline(request: RequestRow, now: datetime) -> dict[str, Any] | None:
    """One request's deadline (``None``: it has none: rejected at admission, or admitted
    before deadlines)."""
    deadline = deadline_of(request)
    if deadline is None:
        return None
    if request.state == State.CANCELLED:
        met = "cancelled"
    else:
        met = outcome(deadline, request.stored_at, now)
    return {
        "regime": deadline.regime,
        "received_at": deadline.received_at,
        "due_at": deadline.due_at,
        "extended_until": deadline.extended_until,
        "extension_reason": request.extension_reason,
        "deadline": met,
        "time_gone": round(elapsed_share(deadline, request.stored_at or now), 3),
    }


def request_lines(data: dict[str, Any] | None) -> list[str]:
    """The deadline's lines of ``dsar status ID``."""
    if data is None:
        return ["  deadline: none"]
    lines = [
        f"  deadline: {data['deadline']} ({data['regime']}; received "
        f"{data['received_at']:%Y-%m-%d %H:%M:%S} UTC, due by the end of "
        f"{data['due_at']:%Y-%m-%d} UTC; {data['time_gone']:.0%} of the time used)"
    ]
    if data["extended_until"] is not None:
        lines.append(
            f"  extended until the end of {data['extended_until']:%Y-%m-%d} UTC: "
            f"{data['extension_reason']}"
        )
    return lines


def overview(
    counts: Sequence[OpenCounts], nearest: Sequence[RequestRow], now: datetime
) -> dict[str, Any]:
    """The open requests with a deadline, past each alert share of their time and past it,
    and those nearest to their deadline."""
    return {
        "open": sum(c.open for c in counts),
        **{
            f"past_{share:.0%}": sum(c.past.get(share, 0) for c in counts) for share in ALERT_SHARES
        },
        "missed": sum(c.missed for c in counts),
        "by_regime": {
            c.regime: {"open": c.open, "missed": c.missed} for c in sorted(counts, key=_regime)
        },
        "nearest": [
            {"request_id": r.id, "external_ref": r.external_ref, "state": r.state}
            | (request_deadline(r, now) or {})
            for r in nearest
        ],
    }


def overview_lines(data: dict[str, Any]) -> list[str]:
    shares = ", ".join(f"{data[f'past_{share:.0%}']} past {share:.0%}" for share in ALERT_SHARES)
    lines = [
        f"deadlines: {data['open']} open request(s) with a deadline; {shares} of their time; "
        f"{data['missed']} past the deadline"
    ]
    if data["nearest"]:
        lines.append(f"nearest deadlines (first {len(data['nearest'])}):")
        lines += [
            f"  #{n['request_id']} {n['state']:<10} {n['regime']} due by the end of "
            f"{(n['extended_until'] or n['due_at']):%Y-%m-%d} UTC, {n['time_gone']:.0%} of the "
            f"time used ({n['deadline']})"
            for n in data["nearest"]
        ]
    return lines


def _regime(counts: OpenCounts) -> str:
    return counts.regime
