"""The record of every call the emulator served, for tests to assert on."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from dsar_scheduler.tools.emulator.server import HttpRequest, HttpResponse


@dataclass(frozen=True)
class CallRecord:
    """One request seen by either origin. ``status`` 0: dropped without a response."""

    at: datetime
    origin: str
    method: str
    path: str
    status: int
    cost: int
    authorization_present: bool
    fault: str | None = None


class CallLog:
    """Totals always; each call's record only when ``keep_records`` (a long run turns it off
    so memory stays flat)."""

    def __init__(self, keep_records: bool) -> None:
        self._keep_records = keep_records
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []
        self._cost_total = 0
        self._count_429 = 0

    def record(
        self,
        origin: str,
        request: HttpRequest,
        now: datetime,
        response: HttpResponse,
        cost: int,
        fault: str | None = None,
    ) -> HttpResponse:
        """Note one answered call and hand its response back, so a handler can end with it."""
        record = CallRecord(
            at=now,
            origin=origin,
            method=request.method,
            path=request.path,
            status=response.status,
            cost=cost,
            authorization_present="authorization" in request.headers,
            fault=fault,
        )
        with self._lock:
            self._cost_total += cost
            if origin == "api" and response.status == 429:
                self._count_429 += 1
            if self._keep_records:
                self._records.append(record)
        return response

    def calls(self, origin: str | None = None) -> list[CallRecord]:
        with self._lock:
            return [r for r in self._records if origin in (None, r.origin)]

    def cost_total(self) -> int:
        with self._lock:
            return self._cost_total

    def rate_limited_count(self) -> int:
        with self._lock:
            return self._count_429
