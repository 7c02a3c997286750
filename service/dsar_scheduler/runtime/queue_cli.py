"""``dsar enqueue`` and ``dsar status``: the queue contract from the command line, putting
rows in as an upstream system would and seeing what became of them."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from dsar_scheduler.config import Settings

#: ``dsar_queue`` column -> the ``enqueue`` option that fills it (and the CSV header).
OPTIONS = {
    "amplitude_id": "amplitude_id",
    "user_id": "user_id",
    "request_type": "request_type",
    "start_date": "start",
    "end_date": "end",
    "external_ref": "external_ref",
    "requested_by": "requested_by",
    "regime": "regime",
    "received_at": "received_at",
}


def _out(text: str = "", stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(text + "\n")


def _rows_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.csv:
        with Path(args.csv).open(newline="") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    if args.amplitude_id is None and args.user_id is None:
        from dsar_scheduler.config import ConfigError

        raise ConfigError(
            "enqueue needs --amplitude-id or --user-id (with --start and --end for access), "
            "or --csv FILE"
        )
    return [{column: getattr(args, option) for column, option in OPTIONS.items()}]


def cmd_enqueue(settings: Settings, args: argparse.Namespace) -> int:
    """Insert queue rows exactly as upstream SQL would (values as given); validation happens
    at admission, so a bad value becomes a rejection with a reason. A row the database itself
    refuses (PostgreSQL checks types at INSERT) is reported, and the other rows still go in."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from dsar_scheduler.adapters.db import make_engine

    columns = tuple(OPTIONS)
    insert = text(
        f"INSERT INTO dsar_queue ({', '.join(columns)}) "
        f"VALUES ({', '.join(':' + c for c in columns)}) RETURNING id"
    )
    engine = make_engine(settings.database_url)
    refused = 0
    try:
        for number, row in enumerate(_rows_from_args(args), start=1):
            values = {c: (row.get(c) or None) for c in columns}
            try:
                with engine.begin() as connection:
                    queue_id = connection.execute(insert, values).scalar()
                _out(f"queued row {queue_id}")
            except DBAPIError as exc:
                refused += 1
                detail = str(exc.orig).splitlines()[0][:200] if exc.orig else type(exc).__name__
                _out(f"input row {number} refused by the database: {detail}", sys.stderr)
    finally:
        engine.dispose()
    return 1 if refused else 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from dsar_scheduler.adapters.db import make_engine
    from dsar_scheduler.runtime.status import describe_request, summary

    engine = make_engine(settings.database_url)
    try:
        text = (
            describe_request(engine, args.request_id, args.json)
            if args.request_id
            else summary(engine, settings, args.json)
        )
    finally:
        engine.dispose()
    if text is None:
        _out(f"no request {args.request_id}", sys.stderr)
        return 1
    _out(text)
    return 0


def register(sub: Any) -> None:
    enqueue = sub.add_parser(
        "enqueue",
        help="insert queue rows, as an upstream system would",
        description="Insert rows into dsar_queue. They are validated when "
        "the next tick admits them; a bad row is rejected with a reason "
        "that `dsar status` and the dsar_queue_status view show.",
    )
    enqueue.add_argument("--amplitude-id", help="the subject's Amplitude ID")
    enqueue.add_argument("--user-id", help="the subject's user ID (instead of, or with, it)")
    enqueue.add_argument("--request-type", help="access (default), deletion or access_and_deletion")
    enqueue.add_argument("--start", help="first day of data, YYYY-MM-DD (access)")
    enqueue.add_argument("--end", help="last day of data, YYYY-MM-DD (access)")
    enqueue.add_argument("--external-ref", help="upstream ticket id (a repeat is rejected)")
    enqueue.add_argument("--requested-by", help="who asked, for the audit trail")
    enqueue.add_argument("--regime", help="ccpa, gdpr, ... (default DSAR_DEFAULT_REGIME)")
    enqueue.add_argument(
        "--received-at", help="when your team received the request, UTC (default: now)"
    )
    enqueue.add_argument(
        "--csv",
        help="a CSV file with a header naming any of the columns amplitude_id, user_id, "
        "request_type, start_date, end_date, external_ref, requested_by, regime, received_at",
    )
    enqueue.set_defaults(func=cmd_enqueue)

    status = sub.add_parser(
        "status",
        help="what is queued, outstanding, stored, failed; or one "
        "request's history from the audit trail",
    )
    status.add_argument("request_id", nargs="?", type=int, help="a request id (dsar_requests.id)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
