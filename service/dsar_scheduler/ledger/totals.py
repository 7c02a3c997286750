"""Running totals of what the service has stored, for the metrics scraped every few seconds.

Stored requests and files only ever accumulate (a request counts as stored once stored, purged
or not; a file row keeps its state when its bytes are purged), and
after a year at full rate they number millions of requests and tens of millions of files:
counting them on every scrape would keep the database busy for seconds each time. So they
are counted once up to a watermark, and after that only what was stored past it is read
(an index range on ``stored_at``); the watermark moves up, an hour behind the clock, about
once an hour. Rows are counted by ``stored_at``, the clock of the transaction that stored
them: one committing more than ``LAG`` after its own clock said so would be missed (a
transaction open that long), which no tick does.

The totals up to the watermark are also recorded in the ledger (``dsar_service_state``, by
each tick), and a process that has none starts from that record: a new replica's first
scrape, and the metrics a CronJob's ``dsar tick`` pushes, read past the watermark only
instead of counting the whole history (which grows with it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from dsar_scheduler.adapters.db import File, Request, ServiceState
from dsar_scheduler.core.states import EVER_STORED, State

#: How far behind the clock the watermark stays: past it, rows are counted on each read.
LAG = timedelta(hours=1)
#: How often the watermark moves up (what is read on each scrape: at most LAG + FOLD_EVERY).
FOLD_EVERY = timedelta(hours=1)
#: The ``dsar_service_state`` key of the recorded totals: "requests files bytes purged", until
#: the watermark (a record of three numbers was written before purges existed: none purged).
RECORD_KEY = "stored-totals"


@dataclass(frozen=True)
class Stored:
    #: Requests ever stored (purged ones too), files and bytes ever stored.
    requests: int
    files: int
    bytes: int
    #: Requests whose files were purged (retention), counted by ``purged_at``.
    purged: int = 0

    def __add__(self, other: Stored) -> Stored:
        return Stored(
            self.requests + other.requests,
            self.files + other.files,
            self.bytes + other.bytes,
            self.purged + other.purged,
        )


class StoredTotals:
    """Totals of stored requests and files, kept per process (thread-safe: the metrics
    endpoint scrapes from its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._upto: datetime | None = None  # None: nothing counted yet
        self._counted = Stored(0, 0, 0, 0)

    def read(self, session: Session, now: datetime) -> Stored:
        # The database's lock before this one, always: on SQLite every transaction takes
        # the write lock when it begins, and a scrape holding it while it waited here for a
        # tick holding this lock and waiting for it would stall both (a deadlock).
        session.connection()
        with self._lock:
            self._advance(session, now)
            return self._counted + _stored(session, self._upto, None)

    def save(self, session: Session, now: datetime) -> None:
        """Bring the totals up to date and record them for other processes, in the caller's
        write transaction; a record with a later watermark is left as it is."""
        session.connection()  # the database's lock first, as in ``read``
        with self._lock:
            self._advance(session, now)
            assert self._upto is not None
            row = session.get(ServiceState, RECORD_KEY, with_for_update=True)
            recorded = _parse(row)
            if recorded is not None and recorded[0] >= self._upto:
                return
            counted = self._counted
            value = f"{counted.requests} {counted.files} {counted.bytes} {counted.purged}"
            if row is None:
                row = ServiceState(key=RECORD_KEY)
                session.add(row)
            row.value, row.until, row.updated_at = value, self._upto, now

    def _advance(self, session: Session, now: datetime) -> None:
        if self._upto is None:  # nothing counted in this process: start from the record
            recorded = _parse(session.get(ServiceState, RECORD_KEY))
            if recorded is not None:
                self._upto, self._counted = recorded
        fold_to = now - LAG
        if self._upto is None or fold_to - self._upto >= FOLD_EVERY:
            self._counted += _stored(session, self._upto, fold_to)
            self._upto = fold_to


def _parse(row: ServiceState | None) -> tuple[datetime, Stored] | None:
    """The recorded (watermark, totals); ``None`` if there is none, or it is not what
    ``save`` writes (edited by hand?): the history is then counted again, and recorded."""
    if row is None or row.until is None or not row.value:
        return None
    try:
        numbers = [int(part) for part in row.value.split()]
    except ValueError:
        return None
    if len(numbers) == 3:  # written before purges existed: none up to its watermark
        numbers.append(0)
    if len(numbers) != 4:
        return None
    requests, files, size, purged = numbers
    if min(requests, files, size, purged) < 0:
        return None
    return row.until, Stored(requests, files, size, purged)


def _stored(session: Session, after: datetime | None, upto: datetime | None) -> Stored:
    """Requests and files stored after ``after`` up to ``upto`` (either end open if None;
    rows without ``stored_at`` count with the first range, which has no lower end)."""

    def within(column: InstrumentedAttribute[datetime | None]) -> list[ColumnElement[bool]]:
        if after is None:  # the first range: from the beginning, rows without a time too
            return [] if upto is None else [or_(column <= upto, column.is_(None))]
        return [column > after] if upto is None else [column > after, column <= upto]

    requests = session.scalar(
        select(func.count())
        .select_from(Request)
        .where(Request.state.in_(list(EVER_STORED)), *within(Request.stored_at))
    )
    purged = session.scalar(
        select(func.count())
        .select_from(Request)
        .where(Request.state == State.PURGED, *within(Request.purged_at))
    )
    files, size = session.execute(
        select(func.count(), func.coalesce(func.sum(File.bytes), 0)).where(
            File.state == "stored", *within(File.stored_at)
        )
    ).one()
    return Stored(int(requests or 0), int(files or 0), int(size or 0), int(purged or 0))
