"""``dsar delivered ID [--reason TEXT]``: the privacy team handed a stored export to the
consumer. Recorded in the audit trail (a compare-and-set on a stored, undelivered request, safe
while daemons run); it lifts the hold that keeps an undelivered export until its legal
deadline, and with DSAR_PURGE_ON_DELIVERY makes its files due for purging at once."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from dsar_scheduler.config import Settings
    from dsar_scheduler.ledger import Ledger

HELP = (
    "record that a stored request's export was handed to the consumer; with "
    "DSAR_PURGE_ON_DELIVERY its files are purged at the next tick, else after "
    "DSAR_RESULT_RETENTION_DAYS"
)


def register(sub: Any) -> None:
    parser = sub.add_parser("delivered", help=HELP, description=HELP)
    parser.add_argument("request_id", type=int, help="a request id (dsar_requests.id)")
    parser.add_argument("--reason", help="how or to whom it was delivered, for the audit trail")
    parser.set_defaults(func=cmd_delivered)


def cmd_delivered(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.orm import sessionmaker

    from dsar_scheduler.adapters.clock import clock_for
    from dsar_scheduler.adapters.db import make_engine
    from dsar_scheduler.ledger import Ledger

    engine = make_engine(settings.database_url)
    try:
        ledger = Ledger(sessionmaker(engine, expire_on_commit=False), settings.budget_limit)
        now = clock_for(settings.clock_speed, settings.clock_epoch).now()
        ok, message = mark_delivered(ledger, settings, args.request_id, args.reason, now)
    finally:
        engine.dispose()
    (sys.stdout if ok else sys.stderr).write(message + "\n")
    return 0 if ok else 1


def mark_delivered(
    ledger: Ledger, settings: Settings, request_id: int, note: str | None, now: datetime
) -> tuple[bool, str]:
    """Mark the request delivered; ``(ok, what to tell the operator)``."""
    from dsar_scheduler.core.retention import purge_due_at
    from dsar_scheduler.tick import limits
    from dsar_scheduler.tick.purge import retention_policy

    marked = ledger.retention.mark_delivered(request_id, note, now)
    if isinstance(marked, str):
        return False, marked
    target = marked.target
    policy = retention_policy(settings)
    due = purge_due_at(policy, target.stored_at, target.delivered_at, target.deadline)
    said = f"request {request_id}{_with(marked.supplements)}: marked delivered; "
    if due is None:
        said += "its files are kept (no retention)"
    elif due <= now:
        ledger.lease.chore_due(limits.PURGE_CHORE, now)  # the next tick looks for it
        said += "its files are purged at the next tick"
    else:
        said += (
            f"its files are purged after {due:%Y-%m-%d %H:%M} UTC "
            "(DSAR_RESULT_RETENTION_DAYS after they were stored)"
        )
    if marked.pending:
        ids = ", ".join(str(i) for i in marked.pending)
        said += (
            f". Supplementary request(s) {ids} (Amplitude IDs its export missed) are not "
            "stored yet: mark each delivered when it is handed over"
        )
    return True, said


def _with(supplements: list[int]) -> str:
    if not supplements:
        return ""
    return " with its supplementary request(s) " + ", ".join(str(i) for i in supplements)
