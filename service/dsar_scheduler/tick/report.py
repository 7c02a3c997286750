"""What a tick tells its caller: the report, and the exception that ends its API work."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class StopTick(Exception):
    """API work ends for this tick: budget full, rate limited, credentials refused, shutdown,
    or the lease lost. The message is the reason."""


@dataclass
class TickReport:
    outcome: str = "ok"  # ok | error | skipped
    admitted: int = 0
    rejected: int = 0
    submitted: int = 0
    polled: int = 0
    done: int = 0
    failed: int = 0
    files_stored: int = 0
    requests_stored: int = 0
    expired: int = 0
    dead: int = 0
    #: Retention: requests purged, purge attempts that failed, records removed.
    purged: int = 0
    purge_failures: int = 0
    records_removed: int = 0
    stopped_by: str | None = None
    errors: list[str] = field(default_factory=list)
    #: The planner's figures for this tick (planner policy).
    plan: dict[str, float | int] | None = None
    #: When there is work again before the next regular tick (the daemon may wake then).
    wake_at: datetime | None = None

    def summary(self) -> dict[str, Any]:
        """The counts that are not zero, without the outcome (logged beside it)."""
        return {
            k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in self.__dict__.items()
            if k != "outcome" and v not in (0, None, [])
        }
