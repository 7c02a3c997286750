"""``dsar extend ID --reason TEXT``: the one extension of a request's legal deadline that its
regime allows (CCPA +45 days, GDPR +2 months), taken before the first deadline passes and
recorded in the audit trail with its reason; refused, with why, otherwise.

The law asks the team to tell the subject of the extension, with the reasons, inside the first
period: the service records it, the team sends the notice."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsar_scheduler.config import Settings

HELP = (
    "extend a request's legal deadline once, as its regime allows (CCPA +45 days, GDPR "
    "+2 months), before the first deadline passes; recorded with the reason"
)


def register(sub: Any) -> None:
    """Add ``dsar extend`` to the CLI's subcommands."""
    extend = sub.add_parser("extend", help=HELP, description=HELP + ".")
    extend.add_argument("request_id", type=int, help="a request id (dsar_requests.id)")
    extend.add_argument(
        "--reason",
        required=True,
        help="why the request needs longer (the audit trail keeps it; the subject must be "
        "told it too)",
    )
    extend.set_defaults(func=cmd_extend)


def cmd_extend(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.orm import sessionmaker

    from dsar_scheduler.adapters.clock import clock_for
    from dsar_scheduler.adapters.db import make_engine
    from dsar_scheduler.ledger import Ledger

    note = " ".join(str(args.reason).split())
    if not note:
        sys.stderr.write("dsar extend: --reason must say why the request needs longer\n")
        return 2
    now = clock_for(settings.clock_speed, settings.clock_epoch).now()
    engine = make_engine(settings.database_url)
    try:
        ledger = Ledger(sessionmaker(engine, expire_on_commit=False), settings.budget_limit)
        done = ledger.deadlines.extend(args.request_id, note, now)
    finally:
        engine.dispose()
    if isinstance(done, str):
        sys.stderr.write(f"not extended: {done}\n")
        return 1
    also = ", ".join(str(i) for i in done.supplements)
    with_them = f" (and its supplementary request(s) {also})" if also else ""
    sys.stdout.write(
        f"request {args.request_id}{with_them}: {done.reason}\n"
        "Tell the subject of the extension and its reasons before the first deadline ends.\n"
    )
    return 0
