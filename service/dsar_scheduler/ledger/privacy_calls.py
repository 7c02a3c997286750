"""The privacy APIs' call ledger (``dsar_privacy_calls``): a call to User Privacy, User Search
or User Activity is reserved against its project key's limits before it is sent, under a lock
every replica shares, as the DSAR budget is; a 429 backs that key off for every replica."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from dsar_scheduler.adapters.db import PrivacyCall, ServiceState, write_transaction
from dsar_scheduler.core.privacy_limits import HOUR, LIMITS, Reserved, next_slot


def _lock(api: str, project_id: int) -> str:
    return f"dsar-privacy-{api}-{project_id}"


def _backoff_key(api: str, project_id: int) -> str:
    return f"privacy_backoff:{api}:{project_id}"


class PrivacyCalls:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def reserve(
        self, api: str, project_id: int, now: datetime, request_id: int | None = None
    ) -> int | None:
        """A reservation id for one call now, or ``None`` if the key's limits (or its
        backoff) say wait: see ``next_slot``."""
        with write_transaction(self.sessions, lock=_lock(api, project_id)) as session:
            if self._backoff(session, api, project_id, now) is not None:
                return None
            if next_slot(self._recent(session, api, project_id, now), now, LIMITS[api]) > now:
                return None
            call = PrivacyCall(
                project_id=project_id, api=api, reserved_at=now, request_id=request_id
            )
            session.add(call)
            session.flush()
            return call.id

    def wait_until(self, api: str, project_id: int, now: datetime) -> datetime:
        """When the next call to this key may go (``now`` if it may go now)."""
        with self.sessions() as session:
            backoff = self._backoff(session, api, project_id, now)
            slot = next_slot(self._recent(session, api, project_id, now), now, LIMITS[api])
        return max(slot, backoff or slot)

    def finish(self, call_id: int, status_code: int | None, now: datetime) -> None:
        with write_transaction(self.sessions) as session:
            session.execute(
                update(PrivacyCall)
                .where(PrivacyCall.id == call_id)
                .values(finished_at=now, status_code=status_code)
            )

    def back_off(self, api: str, project_id: int, until: datetime, now: datetime) -> None:
        """A 429: no replica calls this key before ``until`` (a longer backoff is kept)."""
        key = _backoff_key(api, project_id)
        with write_transaction(self.sessions, lock=_lock(api, project_id)) as session:
            row = session.get(ServiceState, key)
            if row is None:
                session.add(ServiceState(key=key, value="429", until=until, updated_at=now))
            elif row.until is None or row.until < until:
                row.until, row.updated_at = until, now

    def prune(self, now: datetime) -> int:
        """Calls older than the hour the limits read are history: removed."""
        with write_transaction(self.sessions) as session:
            result = session.execute(
                delete(PrivacyCall).where(PrivacyCall.reserved_at < now - HOUR)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    @staticmethod
    def _recent(session: Session, api: str, project_id: int, now: datetime) -> list[Reserved]:
        rows = session.execute(
            select(PrivacyCall.reserved_at, PrivacyCall.finished_at).where(
                PrivacyCall.api == api,
                PrivacyCall.project_id == project_id,
                PrivacyCall.reserved_at > now - HOUR,
            )
        )
        return [Reserved(reserved_at, finished_at) for reserved_at, finished_at in rows]

    @staticmethod
    def _backoff(session: Session, api: str, project_id: int, now: datetime) -> datetime | None:
        row = session.get(ServiceState, _backoff_key(api, project_id))
        if row is None or row.until is None or row.until <= now:
            return None
        return row.until


__all__ = ["PrivacyCalls"]
