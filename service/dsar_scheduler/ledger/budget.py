"""The budget and the call ledger (``dsar_api_calls``).

A call's cost is reserved (a row) before the call is sent, under a lock shared by every
process, and only if the cost over the last hour stays within the limit; a 429 sets a shared
backoff that every replica respects. A finished call's cost counts for an hour from its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ARRAY, Integer, String, delete, func, insert, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import (
    ApiCall,
    ServiceState,
    UTCDateTime,
    bulk_update,
    on_postgres,
    write_transaction,
)
from dsar_scheduler.ledger.rows import CallTicket

WINDOW = timedelta(hours=1)
#: How far back the 429s that lengthen a backoff are counted.
RATE_LIMIT_HISTORY = timedelta(hours=6)
#: Reservations a stopped process left are looked for this far back.
UNKNOWN_CALL_HISTORY = 2 * WINDOW
#: The call history the ledger itself reads; pruning never comes closer to now than this.
CALL_HISTORY_NEEDED = max(WINDOW, UNKNOWN_CALL_HISTORY, RATE_LIMIT_HISTORY)
BUDGET_LOCK = "dsar-budget"
BACKOFF_KEY = "rate_limited_until"


class Budget:
    """What may still be spent, and the record of every call that spent it."""

    def __init__(self, sessions: sessionmaker[Session], limit: int) -> None:
        self.sessions = sessions
        #: The cost allowed in any rolling hour.
        self.limit = limit

    def spent(self, now: datetime) -> int:
        with self.sessions() as session:
            return spent_in(session, now)

    def headroom(self, now: datetime) -> int:
        """Cost still available in the current window (0 while a 429 backoff holds)."""
        with self.sessions() as session:
            if backoff_in(session, now) is not None:
                return 0
            return max(0, self.limit - spent_in(session, now))

    def backoff_until(self, now: datetime) -> datetime | None:
        with self.sessions() as session:
            return backoff_in(session, now)

    def set_backoff(self, until: datetime, now: datetime, reason: str) -> None:
        """Stop every replica's calls until ``until`` (never shortens a longer backoff)."""
        with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
            row = session.get(ServiceState, BACKOFF_KEY)
            if row is None:
                session.add(
                    ServiceState(key=BACKOFF_KEY, value=reason, until=until, updated_at=now)
                )
            elif row.until is None or row.until < until:
                row.until, row.value, row.updated_at = until, reason, now

    def reserve(
        self, kind: str, cost: int, now: datetime, request_id: int | None = None
    ) -> CallTicket | None:
        """Reserve ``cost`` for a call about to be sent, or ``None`` if it does not fit."""
        with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
            if backoff_in(session, now) is not None:
                return None
            if spent_in(session, now) + cost > self.limit:
                return None
            call = ApiCall(
                kind=kind,
                cost=cost,
                reserved_at=now,
                counted_at=now,
                request_id=request_id,
                outcome="reserved",
            )
            session.add(call)
            session.flush()
            return CallTicket(id=call.id, kind=kind, cost=cost, reserved_at=now)

    def reserve_many(
        self, kind: str, cost: int, now: datetime, request_ids: Sequence[int | None]
    ) -> list[CallTicket]:
        """Reserve one call of ``cost`` per entry of ``request_ids``, in order, as many as fit
        (none during a 429 backoff): one transaction, one budget query."""
        if not request_ids:
            return []
        with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
            if backoff_in(session, now) is not None:
                return []
            room = self.limit - spent_in(session, now)
            fit = len(request_ids) if cost <= 0 else max(0, min(len(request_ids), room // cost))
            if fit == 0:
                return []
            ids = _insert_calls(session, kind, cost, now, request_ids[:fit])
        return [CallTicket(id=i, kind=kind, cost=cost, reserved_at=now) for i in ids]

    def finish_call(
        self, ticket: CallTicket, outcome: str, status_code: int | None, now: datetime
    ) -> None:
        with write_transaction(self.sessions) as session:
            session.execute(
                update(ApiCall)
                .where(ApiCall.id == ticket.id)
                .values(outcome=outcome, status_code=status_code, finished_at=now, counted_at=now)
            )

    def release_call(self, ticket: CallTicket, now: datetime) -> None:
        """The reserved call was not sent after all: it costs nothing."""
        with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
            session.execute(
                update(ApiCall)
                .where(ApiCall.id == ticket.id)
                .values(cost=0, outcome="not_sent", finished_at=now)
            )

    def release_calls(self, tickets: Sequence[CallTicket], now: datetime) -> None:
        """Reservations that were not sent after all: they cost nothing."""
        if tickets:
            with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
                bulk_update(
                    session,
                    ApiCall,
                    [
                        {"id": t.id, "cost": 0, "outcome": "not_sent", "finished_at": now}
                        for t in tickets
                    ],
                )

    def mark_unknown_calls(self, now: datetime) -> list[tuple[str, int]]:
        """Reservations a stopped process left without an outcome become ``unknown``.

        Call only while holding the tick lease and before reserving anything: every
        ``reserved`` row is then from an earlier tick that died between reserving a call and
        recording its answer. Whether the call reached Amplitude cannot be known, so its cost
        stays counted (the safe side for the budget). Returns (kind, cost) of each."""
        recent = now - UNKNOWN_CALL_HISTORY  # older ones no longer count towards any window
        with write_transaction(self.sessions, lock=BUDGET_LOCK) as session:
            rows = session.execute(
                select(ApiCall.id, ApiCall.kind, ApiCall.cost).where(
                    ApiCall.outcome == "reserved", ApiCall.reserved_at > recent
                )
            ).all()
            if rows:
                session.execute(
                    update(ApiCall)
                    .where(ApiCall.id.in_([r.id for r in rows]))
                    # counted from now: Amplitude charged it at some moment before this one
                    .values(outcome="unknown", finished_at=now, counted_at=now)
                )
            return [(str(r.kind), int(r.cost)) for r in rows]

    def count_calls(self, outcome: str, since: datetime) -> int:
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(ApiCall)
                    .where(ApiCall.outcome == outcome, ApiCall.reserved_at > since)
                )
                or 0
            )

    def prune_calls(self, before: datetime, limit: int) -> int:
        """Delete at most ``limit`` call rows that stopped counting before ``before``, oldest
        first, in one short transaction (callers loop; no lock is held for long). Returns
        how many went. ``before`` must lie well outside every window the ledger reads
        (``CALL_HISTORY_NEEDED``)."""
        oldest = (
            select(ApiCall.id)
            .where(ApiCall.counted_at < before, ApiCall.reserved_at < before)
            .order_by(ApiCall.counted_at)
            .limit(limit)
        )
        with write_transaction(self.sessions) as session:
            result = session.execute(
                delete(ApiCall)
                .where(ApiCall.id.in_(oldest.scalar_subquery()))
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def freed_by(self, now: datetime, when: datetime) -> int:
        """Cost counted now that no longer counts at ``when`` (it leaves the rolling hour)."""
        with self.sessions() as session:
            total = session.scalar(
                select(func.coalesce(func.sum(ApiCall.cost), 0)).where(
                    ApiCall.counted_at > now - WINDOW, ApiCall.counted_at <= when - WINDOW
                )
            )
        return int(total or 0)

    def frees_at(self, now: datetime, amount: int) -> datetime | None:
        """When at least ``amount`` more cost fits than fits now (``None``: it fits now, or
        it never will by calls leaving the window)."""
        if self.limit - self.spent(now) >= amount:
            return None
        with self.sessions() as session:
            rows = session.execute(
                select(ApiCall.counted_at, ApiCall.cost)
                .where(ApiCall.counted_at > now - WINDOW, ApiCall.cost > 0)
                .order_by(ApiCall.counted_at)
                .limit(max(1, amount))
            ).all()
        freed = 0
        for row in rows:
            freed += int(row.cost)
            if freed >= amount:
                counted_at: datetime = row.counted_at
                return counted_at + WINDOW
        return None

    def request_cost(self, request_id: int) -> tuple[int, int]:
        """(calls, cost) spent on one request, as far as the call ledger still holds them."""
        with self.sessions() as session:
            calls, cost = session.execute(
                select(func.count(), func.coalesce(func.sum(ApiCall.cost), 0)).where(
                    ApiCall.request_id == request_id
                )
            ).one()
            return int(calls or 0), int(cost or 0)


def spent_in(session: Session, now: datetime) -> int:
    """The cost counted in the rolling hour before ``now``."""
    total = session.scalar(
        select(func.coalesce(func.sum(ApiCall.cost), 0)).where(ApiCall.counted_at > now - WINDOW)
    )
    return int(total or 0)


def backoff_in(session: Session, now: datetime) -> datetime | None:
    """The end of the 429 backoff holding at ``now``, if one does."""
    row = session.get(ServiceState, BACKOFF_KEY)
    if row is None or row.until is None or row.until <= now:
        return None
    return row.until


def _insert_calls(
    session: Session, kind: str, cost: int, now: datetime, request_ids: Sequence[int | None]
) -> list[int]:
    """Insert one reserved call per entry of ``request_ids``; their ids, in that order."""
    values = {"kind": kind, "cost": cost, "reserved_at": now, "counted_at": now}
    if not on_postgres(session):
        return list(
            session.scalars(
                insert(ApiCall).returning(ApiCall.id, sort_by_parameter_order=True),
                [{**values, "request_id": r, "outcome": "reserved"} for r in request_ids],
            )
        )
    # One statement over an array instead of an executemany: the rows differ only in their
    # request id, and rows with the same request id are interchangeable, so each row's id is
    # matched to its place by request id (RETURNING does not promise an order).
    rows = session.execute(
        insert(ApiCall)
        .from_select(
            ["kind", "cost", "reserved_at", "counted_at", "outcome", "request_id"],
            select(
                literal(kind, String),
                literal(cost, Integer),
                literal(now, UTCDateTime),
                literal(now, UTCDateTime),
                literal("reserved", String),
                func.unnest(literal(list(request_ids), ARRAY(Integer))),
            ),
        )
        .returning(ApiCall.id, ApiCall.request_id)
    ).all()
    by_request: dict[int | None, list[int]] = {}
    for call_id, request_id in sorted(rows, reverse=True):
        by_request.setdefault(request_id, []).append(call_id)
    return [by_request[r].pop() for r in request_ids]
