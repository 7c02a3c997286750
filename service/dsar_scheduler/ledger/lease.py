"""The tick lease, the record of ticks, and periodic chores: what keeps replicas (and
``dsar tick`` runs from cron) from doing the same work at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import ServiceState, Tick, write_transaction

TICK_LEASE = "tick-lease"


class Lease:
    """One tick at a time across replicas; a lost lease stops the tick's work."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def acquire(
        self,
        owner: str,
        now: datetime,
        ttl: timedelta,
        holder_gone: Callable[[str], bool] | None = None,
    ) -> bool:
        """Take or renew the tick lease; ``False`` if another live owner holds it.

        ``holder_gone(owner)`` may say that the holder certainly no longer runs (killed on
        this host, see ``liveness``): its lease is taken over without waiting for the TTL."""
        with write_transaction(self.sessions, lock=TICK_LEASE) as session:
            row = session.get(ServiceState, TICK_LEASE)
            if row is None:
                session.add(
                    ServiceState(key=TICK_LEASE, value=owner, until=now + ttl, updated_at=now)
                )
                return True
            if (
                row.value == owner
                or row.until is None
                or row.until <= now
                or (holder_gone is not None and row.value is not None and holder_gone(row.value))
            ):
                row.value, row.until, row.updated_at = owner, now + ttl, now
                return True
            return False

    def release(self, owner: str, now: datetime) -> None:
        with write_transaction(self.sessions, lock=TICK_LEASE) as session:
            row = session.get(ServiceState, TICK_LEASE)
            if row is not None and row.value == owner:
                row.until, row.updated_at = now, now

    def start_tick(self, owner: str, now: datetime) -> int:
        with write_transaction(self.sessions) as session:
            tick = Tick(owner=owner, started_at=now, outcome="running")
            session.add(tick)
            session.flush()
            return tick.id

    def finish_tick(self, tick_id: int, outcome: str, summary: str, now: datetime) -> None:
        with write_transaction(self.sessions) as session:
            session.execute(
                update(Tick)
                .where(Tick.id == tick_id)
                .values(outcome=outcome, summary=summary, finished_at=now)
            )

    def claim_chore(self, key: str, now: datetime, every: timedelta) -> bool:
        """Take a periodic chore (housekeeping) if it is due, and make it not due again for
        ``every``. Shared through the database, so replicas and ``dsar tick`` runs from cron
        do it about once per ``every`` between them."""
        with write_transaction(self.sessions, lock=key) as session:
            row = session.get(ServiceState, key)
            if row is not None and row.until is not None and row.until > now:
                return False
            if row is None:
                session.add(ServiceState(key=key, value=None, until=now + every, updated_at=now))
            else:
                row.until, row.updated_at = now + every, now
            return True

    def chore_due(self, key: str, when: datetime) -> None:
        """Make a chore due again at ``when`` (it stopped with work left)."""
        with write_transaction(self.sessions, lock=key) as session:
            row = session.get(ServiceState, key)
            if row is not None:
                row.until = when
