"""The emulated org: DSAR jobs on the injected clock, the cost budget, output files behind
pre-signed URLs, faults, and a record of every call for tests to assert on.

The clock is the only source of time (never ``datetime.now()``), so a test that shares a
``FakeClock`` with the service moves both by days at once. The two origins' logic lives in
``api_origin`` and ``s3_origin``; this class starts them and is what tests drive and read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from dsar_scheduler.adapters.clock import Clock, SystemClock
from dsar_scheduler.tools.emulator.api_origin import ApiOrigin
from dsar_scheduler.tools.emulator.api_requests import API_PATH, output_url
from dsar_scheduler.tools.emulator.calls import CallRecord
from dsar_scheduler.tools.emulator.config import EmulatorConfig
from dsar_scheduler.tools.emulator.faults import Faults
from dsar_scheduler.tools.emulator.jobs import JobInfo, Outcome
from dsar_scheduler.tools.emulator.privacy_controls import PrivacyControls
from dsar_scheduler.tools.emulator.s3_origin import S3Origin
from dsar_scheduler.tools.emulator.server import HttpRequest, HttpResponse
from dsar_scheduler.tools.emulator.state import OrgState

__all__ = ["API_PATH", "CallRecord", "Emulator", "ExpectedFile", "JobInfo"]


@dataclass(frozen=True)
class ExpectedFile:
    """What the emulator serves (or would serve) for one output, intact."""

    request_id: int
    index: int
    url: str
    project_id: int
    month: str
    sha256: str
    size: int
    events: int


class Emulator:
    """Amplitude's DSAR API (one org) and its pre-signed S3 host, on two loopback ports."""

    def __init__(self, config: EmulatorConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.clock: Clock = clock or SystemClock()
        self._org = OrgState.new(self.config, self.clock)
        self.faults: Faults = self._org.faults
        #: The deletion, user search and user activity side: keys, users, jobs.
        self.privacy = PrivacyControls(self._org)
        self._api = ApiOrigin(self._org)
        self._s3 = S3Origin(self._org)
        self._errors: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind both ports and serve in daemon threads."""
        listeners = self._org.listeners
        listeners.start(self.handle_api, self.handle_s3, self._errors.append, self.clock.now)
        return self

    def stop(self) -> None:
        """Stop both servers and close their connections; safe to call twice."""
        self._org.listeners.stop()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def api_origin(self) -> str:
        return self._org.listeners.origin("api")

    @property
    def api_base_url(self) -> str:
        """What the service's ``DSAR_API_BASE_URL`` is set to."""
        return self.api_origin + API_PATH

    @property
    def s3_origin(self) -> str:
        return self._org.listeners.origin("s3")

    def handle_api(self, request: HttpRequest) -> HttpResponse:
        """Serve one request to the API origin (the server threads, or an in-process
        transport, call this)."""
        return self._api.handle(request)

    def handle_s3(self, request: HttpRequest) -> HttpResponse:
        """Serve one request to the pre-signed host: never charged to the API budget."""
        return self._s3.handle(request)

    # -- test controls --------------------------------------------------------------------

    def complete(self, request_id: int, at: datetime | None = None) -> None:
        """Force a job to finish as ``done`` at ``at`` (default: now)."""
        self._force(request_id, "done", None, at)

    def fail(
        self, request_id: int, reason: str = "Forced failure", at: datetime | None = None
    ) -> None:
        """Force a job to finish as ``failed`` with ``reason`` at ``at`` (default: now)."""
        self._force(request_id, "failed", reason, at)

    def expire(self, request_id: int) -> None:
        """Make a done job's results expired now (outputs answer 404 from here on)."""
        with self._org.lock:
            self._org.jobs.expire(request_id, self.clock.now())

    def spend_external(self, cost: int) -> None:
        """Another client of the same org spends ``cost`` of the shared budget now."""
        now = self.clock.now()
        with self._org.lock:
            self._org.budget.charge(now, cost)

    def replace_file(self, request_id: int, index: int, data: bytes) -> None:
        """Serve ``data`` as one output from now on (benchmarks: a file far too big to
        generate event by event). Needs ``cache_files``: the bytes are kept in memory."""
        if not self.config.cache_files:
            raise ValueError("replace_file needs cache_files=True")
        with self._org.lock:
            spec = self._org.jobs.get(request_id).files[index]
        self._org.files.replace(spec, data)

    def _force(
        self, request_id: int, outcome: Outcome, reason: str | None, at: datetime | None
    ) -> None:
        with self._org.lock:
            self._org.jobs.force(request_id, outcome, reason, at or self.clock.now())

    # -- inspection -----------------------------------------------------------------------

    def calls(self, origin: str | None = None) -> list[CallRecord]:
        return self._org.calls.calls(origin)

    def posts(self) -> list[CallRecord]:
        return [r for r in self.calls("api") if r.method == "POST"]

    def cost_spent_total(self) -> int:
        """Cost charged for calls made to the emulator (``spend_external`` not included)."""
        return self._org.calls.cost_total()

    def cost_in_window(self, now: datetime | None = None) -> int:
        """Cost in the rolling hour as of ``now``, external spending included."""
        with self._org.lock:
            return self._org.budget.spent(now or self.clock.now())

    def rate_limited_count(self) -> int:
        return self._org.calls.rate_limited_count()

    def late_overruns(self) -> int:
        """Calls served that a later-charged, earlier-timed call put over the budget (only a
        caller that runs overlapping work one piece after another, the simulator, makes
        them): 429s the real order would have answered."""
        with self._org.lock:
            return self._org.budget.late_overruns

    def s3_calls_with_authorization(self) -> list[CallRecord]:
        return [r for r in self.calls("s3") if r.authorization_present]

    @property
    def internal_errors(self) -> list[str]:
        """Exceptions raised inside the emulator while serving (should stay empty)."""
        return list(self._errors)

    def job(self, request_id: int, now: datetime | None = None) -> JobInfo:
        with self._org.lock:
            return self._org.jobs.get(request_id).info(now or self.clock.now())

    def jobs(self) -> dict[int, JobInfo]:
        now = self.clock.now()
        with self._org.lock:
            return self._org.jobs.snapshot(now)

    def expected_files(self, request_id: int) -> list[ExpectedFile]:
        """Every output of a request with the sha256, size and event count it is served with."""
        with self._org.lock:
            specs = list(self._org.jobs.get(request_id).files)
        origin = (self.config.api_public_origin or self.api_origin).rstrip("/")
        out = []
        for n, spec in enumerate(specs):
            stats = self._org.files.stats(spec)
            out.append(
                ExpectedFile(
                    request_id=request_id,
                    index=n,
                    url=output_url(origin, request_id, n),
                    project_id=spec.project_id,
                    month=spec.month.strftime("%Y-%m"),
                    sha256=stats.sha256,
                    size=stats.size,
                    events=stats.events,
                )
            )
        return out

    def file_bytes(self, request_id: int, index: int) -> bytes:
        """The intact gzipped bytes of one output."""
        with self._org.lock:
            spec = self._org.jobs.get(request_id).files[index]
        return self._org.files.data(spec)
