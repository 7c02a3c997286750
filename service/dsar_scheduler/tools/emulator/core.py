"""The emulated org: DSAR jobs on the injected clock, the cost budget, output files behind
pre-signed URLs, faults, and a record of every call for tests to assert on.

All state sits behind one lock; file bytes are generated outside it. The clock is the only
source of time (never ``datetime.now()``), so a test that shares a ``FakeClock`` with the
service moves both by days in milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from dsar_scheduler.adapters.clock import Clock, SystemClock
from dsar_scheduler.tools.emulator.budget import CostWindow
from dsar_scheduler.tools.emulator.config import EmulatorConfig
from dsar_scheduler.tools.emulator.content import (
    FileSpec,
    FileStats,
    event_count,
    file_bytes,
    file_specs,
    file_stats,
    iter_file_chunks,
    subject_amplitude_id,
)
from dsar_scheduler.tools.emulator.faults import KINDS_BY_ORIGIN, NO_FAULT, FaultDecision, Faults
from dsar_scheduler.tools.emulator.presign import Presigner
from dsar_scheduler.tools.emulator.server import HttpRequest, HttpResponse, ServerThread

API_PATH = "/api/2/dsar/requests"
JobStatus = Literal["staging", "submitted", "done", "failed"]
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_S3_KEY = re.compile(r"^/(?P<bucket>[^/]+)/(?P<id>\d+)/(?P<n>\d+)\.json\.gz$")
_JSON = ("Content-Type", "application/json")
_XML = ("Content-Type", "application/xml")
_MAX_USER_ID = 1024


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


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of one job; ``status`` is as of the time the snapshot was taken."""

    request_id: int
    amplitude_id: int | None
    user_id: str | None
    start_date: date
    end_date: date
    created_at: datetime
    staging_until: datetime
    finishes_at: datetime
    outcome: Literal["done", "failed"]
    fail_reason: str | None
    expires_at: datetime | None
    file_count: int
    status: JobStatus


@dataclass
class _Job:
    request_id: int
    amplitude_id: int | None
    user_id: str | None
    start: date
    end: date
    created_at: datetime
    staging_until: datetime
    finishes_at: datetime
    outcome: Literal["done", "failed"]
    fail_reason: str | None
    expires_at: datetime | None
    files: list[FileSpec]

    def status(self, now: datetime) -> JobStatus:
        if now >= self.finishes_at:
            return self.outcome
        return "submitted" if now >= self.staging_until else "staging"


class Emulator:
    """Amplitude's DSAR API (one org) and its pre-signed S3 host, on two loopback ports."""

    def __init__(self, config: EmulatorConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.clock: Clock = clock or SystemClock()
        self.faults = Faults(self.config.seed)
        self._lock = threading.RLock()
        self._rng = random.Random(f"jobs:{self.config.seed}")
        self._budget = CostWindow(self.config.budget_per_hour)
        self._presigner = Presigner()
        self._jobs: dict[int, _Job] = {}
        self._next_id = self.config.first_request_id
        self._records: list[CallRecord] = []
        self._cost_total = 0
        self._count_429 = 0
        self._calls_total = 0
        self._forgotten = 0
        self._last_forget: datetime | None = None
        self._external: list[tuple[datetime, int]] = []
        self._errors: list[str] = []
        self._files_lock = threading.Lock()
        self._stats: dict[str, FileStats] = {}
        self._bytes: dict[str, bytes] = {}
        self._api_server: ServerThread | None = None
        self._s3_server: ServerThread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind both ports and serve in daemon threads."""
        if self._api_server is not None:
            raise RuntimeError("emulator already started")
        cfg, now, errors = self.config, self.clock.now, self._errors.append
        self._api_server = ServerThread(cfg.host, cfg.api_port, self.handle_api, errors, now)
        try:
            self._s3_server = ServerThread(cfg.host, cfg.s3_port, self.handle_s3, errors, now)
        except OSError:
            self._api_server.stop()
            self._api_server = None
            raise
        self._api_server.start()
        self._s3_server.start()
        return self

    def stop(self) -> None:
        """Stop both servers and close their connections; safe to call twice."""
        servers = [s for s in (self._api_server, self._s3_server) if s is not None]
        for server in servers:
            server.request_stop()
        for server in servers:
            server.stop()
        self._api_server = self._s3_server = None

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
        return self._origin(self._api_server)

    @property
    def api_base_url(self) -> str:
        """What the service's ``DSAR_API_BASE_URL`` is set to."""
        return self.api_origin + API_PATH

    @property
    def s3_origin(self) -> str:
        return self._origin(self._s3_server)

    def _origin(self, server: ServerThread | None) -> str:
        if server is None:
            raise RuntimeError("emulator not started")
        host = self.config.host
        return f"http://[{host}]:{server.port}" if ":" in host else f"http://{host}:{server.port}"

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
        with self._lock:
            job = self._job(request_id)
            if job.outcome != "done":
                raise ValueError(f"request {request_id} is not done")
            job.expires_at = _floor_seconds(self.clock.now()) - timedelta(seconds=1)

    def spend_external(self, cost: int) -> None:
        """Another client of the same org spends ``cost`` of the shared budget now."""
        now = self.clock.now()
        with self._lock:
            self._budget.charge(now, cost)
            self._external.append((now, cost))

    # -- inspection -----------------------------------------------------------------------

    def calls(self, origin: str | None = None) -> list[CallRecord]:
        with self._lock:
            return [r for r in self._records if origin in (None, r.origin)]

    def posts(self) -> list[CallRecord]:
        return [r for r in self.calls("api") if r.method == "POST"]

    def cost_spent_total(self) -> int:
        """Cost charged for calls made to the emulator (``spend_external`` not included)."""
        with self._lock:
            return self._cost_total

    def calls_total(self) -> int:
        """Requests seen by either origin (kept even when ``record_calls`` is off)."""
        with self._lock:
            return self._calls_total

    def cost_in_window(self, now: datetime | None = None) -> int:
        """Cost in the rolling hour as of ``now``, external spending included."""
        with self._lock:
            return self._budget.spent(now or self.clock.now())

    def rate_limited_count(self) -> int:
        with self._lock:
            return self._count_429

    def s3_calls_with_authorization(self) -> list[CallRecord]:
        return [r for r in self.calls("s3") if r.authorization_present]

    @property
    def internal_errors(self) -> list[str]:
        """Exceptions raised inside the emulator while serving (should stay empty)."""
        return list(self._errors)

    def job(self, request_id: int, now: datetime | None = None) -> JobInfo:
        with self._lock:
            return self._info(self._job(request_id), now or self.clock.now())

    def jobs(self) -> dict[int, JobInfo]:
        now = self.clock.now()
        with self._lock:
            return {rid: self._info(job, now) for rid, job in self._jobs.items()}

    def expected_files(self, request_id: int) -> list[ExpectedFile]:
        """Every output of a request with the sha256, size and event count it is served with."""
        with self._lock:
            specs = list(self._job(request_id).files)
        origin = self.config.api_public_origin or self.api_origin
        out = []
        for n, spec in enumerate(specs):
            stats = self._file_stats(spec)
            out.append(
                ExpectedFile(
                    request_id=request_id,
                    index=n,
                    url=self._output_url(origin.rstrip("/"), request_id, n),
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
        with self._lock:
            spec = self._job(request_id).files[index]
        return self._file_bytes(spec)

    def replace_file(self, request_id: int, index: int, data: bytes) -> None:
        """Serve ``data`` as one output from now on (benchmarks: a file far too big to
        generate event by event). Needs ``cache_files``: the bytes are kept in memory."""
        if not self.config.cache_files:
            raise ValueError("replace_file needs cache_files=True")
        with self._lock:
            spec = self._job(request_id).files[index]
        stats = FileStats(hashlib.sha256(data).hexdigest(), len(data), 0)
        with self._files_lock:
            self._bytes[spec.key] = data
            self._stats[spec.key] = stats

    # -- API origin -----------------------------------------------------------------------

    def handle_api(self, request: HttpRequest) -> HttpResponse:
        """Serve one request to the API origin (called by the server threads)."""
        now = self.clock.now()
        route = _api_route(request)
        if not self._authorized(request):
            body = {"error": "Invalid credentials: use the org API key and secret key"}
            response = _json_response(401, body, [("WWW-Authenticate", 'Basic realm="amplitude"')])
            return self._done("api", request, now, response, 0)
        if route is None:
            return self._done("api", request, now, _json_response(404, {"error": "not found"}), 0)
        if request.method != ("POST" if route[0] == "create" else "GET"):
            error = _json_response(405, {"error": "method not allowed"})
            return self._done("api", request, now, error, 0)
        cost = self.config.post_cost if request.method == "POST" else self.config.get_cost
        applicable = KINDS_BY_ORIGIN["api"]
        if route[0] == "output":
            applicable = applicable - {"malformed"}
        with self._lock:
            fits = self._budget.fits(now, cost)
            decision = self.faults.decide("api", applicable) if fits else NO_FAULT
            if not fits or decision.kind == "429":
                return self._rate_limited(request, now, cost, decision)
            self._budget.charge(now, cost)
        return self._serve_api(request, now, route, cost, decision)

    def _serve_api(
        self,
        request: HttpRequest,
        now: datetime,
        route: tuple[str, str, str],
        cost: int,
        decision: FaultDecision,
    ) -> HttpResponse:
        kind, request_id, output = route
        if decision.kind == "5xx":
            response = _server_error(decision.status)
        elif kind == "create":
            response = self._create(request, now)
        elif kind == "status":
            response = self._status(request, request_id, now)
        else:
            response = self._output(request, request_id, output, now)
        if decision.kind == "drop":  # after the work: a POST's job exists, its id is lost
            response = HttpResponse(0, drop=True)
        elif decision.kind == "malformed":
            response.body = response.body[: max(1, len(response.body) // 2)]
        response.slow_seconds = decision.slow_seconds
        return self._done("api", request, now, response, cost, decision.kind)

    def _rate_limited(
        self, request: HttpRequest, now: datetime, cost: int, decision: FaultDecision
    ) -> HttpResponse:
        cfg = self.config
        charged = cost if cfg.charge_rate_limited else 0
        retry_after = self._budget.retry_after(now, cost, cfg.clock_speed)
        self._budget.charge(now, charged)
        headers = [("Retry-After", str(retry_after))] if cfg.send_retry_after else []
        body = {
            "error": "Too Many Requests",
            "message": f"DSAR cost budget of {cfg.budget_per_hour} per hour exceeded",
        }
        response = _json_response(429, body, headers)
        response.slow_seconds = decision.slow_seconds
        return self._done("api", request, now, response, charged, decision.kind)

    def _create(self, request: HttpRequest, now: datetime) -> HttpResponse:
        try:
            amplitude_id, user_id, start, end = _parse_create(request.body)
        except ValueError as exc:
            return _json_response(400, {"error": str(exc)})
        cfg = self.config
        subject = amplitude_id if amplitude_id is not None else subject_amplitude_id(user_id or "")
        projects = [cfg.first_project_id + k for k in range(cfg.projects_per_subject)]
        files = file_specs(
            seed=cfg.seed,
            amplitude_id=subject,
            user_id=user_id if user_id is not None else f"user-{subject}",
            start=start,
            end=end,
            projects=projects,
            events_per_file=cfg.events_per_file,
        )
        with self._lock:
            self._forget_old(now)
            if cfg.completion_mode_s is None:
                delay = self._rng.uniform(cfg.completion_min_s, cfg.completion_max_s)
            else:
                delay = self._rng.triangular(
                    cfg.completion_min_s, cfg.completion_max_s, cfg.completion_mode_s
                )
            failed = self._rng.random() < cfg.fail_rate
            reason = self._rng.choice(cfg.fail_reasons) if failed else None
            finishes_at = now + timedelta(seconds=delay)
            staging = min(cfg.staging_max_s, cfg.staging_fraction * delay)
            job = _Job(
                request_id=self._next_id,
                amplitude_id=amplitude_id,
                user_id=user_id,
                start=start,
                end=end,
                created_at=now,
                staging_until=now + timedelta(seconds=staging),
                finishes_at=finishes_at,
                outcome="failed" if failed else "done",
                fail_reason=reason,
                expires_at=None if failed else self._expiry(finishes_at),
                files=files,
            )
            self._jobs[job.request_id] = job
            self._next_id += 1
        return _json_response(202, {"requestId": job.request_id})

    def _status(self, request: HttpRequest, raw_id: str, now: datetime) -> HttpResponse:
        with self._lock:
            job = self._jobs.get(int(raw_id)) if raw_id.isdigit() else None
            if job is None:
                return _json_response(404, {"error": f"request {raw_id} not found"})
            status = job.status(now)
            done = status == "done"
            count = len(job.files)
            body: dict[str, Any] = {
                "requestId": job.request_id,
                "userId": job.user_id,
                "amplitudeId": job.amplitude_id,
                "startDate": job.start.isoformat(),
                "endDate": job.end.isoformat(),
                "status": status,
                "failReason": job.fail_reason if status == "failed" else None,
                "urls": [],
                "expires": job.expires_at.strftime("%Y-%m-%dT%H:%M:%S")
                if done and job.expires_at
                else None,
            }
        if done:
            origin = self._public_origin(request, self._api_server, self.config.api_public_origin)
            body["urls"] = [self._output_url(origin, job.request_id, n) for n in range(count)]
        return _json_response(200, body)

    def _output(self, request: HttpRequest, raw_id: str, raw_n: str, now: datetime) -> HttpResponse:
        with self._lock:
            job = self._jobs.get(int(raw_id)) if raw_id.isdigit() else None
            if job is None:
                return _json_response(404, {"error": f"request {raw_id} not found"})
            n = int(raw_n) if raw_n.isdigit() else -1
            if job.status(now) != "done" or job.expires_at is None or not 0 <= n < len(job.files):
                return _json_response(404, {"error": "output not found"})
            if now > job.expires_at:
                return _json_response(404, {"error": "results expired"})
            lifetime = min(self.config.presign_ttl_s, (job.expires_at - now).total_seconds())
        path = f"/{self.config.bucket}/{job.request_id}/{n}.json.gz"
        query = self._presigner.sign(path, now, lifetime)
        origin = self._public_origin(request, self._s3_server, self.config.s3_public_origin)
        return HttpResponse(302, [("Location", f"{origin}{path}?{query}")])

    def _authorized(self, request: HttpRequest) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        key, _, secret = decoded.partition(":")
        return hmac.compare_digest(key.encode(), self.config.api_key.encode()) and (
            hmac.compare_digest(secret.encode(), self.config.secret_key.encode())
        )

    # -- S3 origin ------------------------------------------------------------------------

    def handle_s3(self, request: HttpRequest) -> HttpResponse:
        """Serve one request to the pre-signed host: never charged to the API budget."""
        now = self.clock.now()
        if request.method != "GET":
            error = _s3_error(405, "MethodNotAllowed", "The specified method is not allowed.")
            return self._done("s3", request, now, error, 0)
        if "authorization" in request.headers:
            message = (
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                "Signature query string parameter or the Authorization header should be specified"
            )
            error = _s3_error(400, "InvalidArgument", message)
            return self._done("s3", request, now, error, 0)
        verdict = self._presigner.verify(request.path, request.query, now)
        if not verdict.ok:
            error = _s3_error(403, verdict.code, verdict.message)
            return self._done("s3", request, now, error, 0)
        spec = self._s3_object(request.path)
        if spec is None:
            error = _s3_error(404, "NoSuchKey", "The specified key does not exist.")
            return self._done("s3", request, now, error, 0)
        decision = self.faults.decide("s3", KINDS_BY_ORIGIN["s3"])
        response = self._s3_file(spec, decision)
        response.slow_seconds = decision.slow_seconds
        return self._done("s3", request, now, response, 0, decision.kind)

    def _s3_object(self, path: str) -> FileSpec | None:
        match = _S3_KEY.match(path)
        if match is None or match["bucket"] != self.config.bucket:
            return None
        with self._lock:
            job = self._jobs.get(int(match["id"]))
            n = int(match["n"])
            return job.files[n] if job is not None and n < len(job.files) else None

    def _s3_file(self, spec: FileSpec, decision: FaultDecision) -> HttpResponse:
        if decision.kind == "5xx":
            return _server_error(decision.status, s3=True)
        if decision.kind == "drop":
            return HttpResponse(0, drop=True)
        headers = [("Content-Type", "application/octet-stream")]
        if self.config.s3_content_encoding_gzip:
            headers.append(("Content-Encoding", "gzip"))
        size = self._file_stats(spec).size
        if decision.kind == "truncated":
            cut = _head(self._file_chunks(spec), size // 2)
            return HttpResponse(200, headers, body=cut)
        response = HttpResponse(200, headers, chunks=lambda: self._file_chunks(spec), length=size)
        if decision.kind == "torn":
            response.cut_after = size // 2
        return response

    # -- files ----------------------------------------------------------------------------

    def _file_stats(self, spec: FileSpec) -> FileStats:
        with self._files_lock:
            cached = self._stats.get(spec.key)
        if cached is not None:
            return cached
        if self.config.cache_files:
            data = self._file_bytes(spec)
            stats = FileStats(hashlib.sha256(data).hexdigest(), len(data), event_count(spec))
        else:
            stats = file_stats(spec)
        with self._files_lock:
            self._stats[spec.key] = stats
        return stats

    def _file_bytes(self, spec: FileSpec) -> bytes:
        with self._files_lock:
            cached = self._bytes.get(spec.key)
        if cached is not None:
            return cached
        data = file_bytes(spec)
        if self.config.cache_files:
            with self._files_lock:
                self._bytes[spec.key] = data
        return data

    def _file_chunks(self, spec: FileSpec) -> Iterable[bytes]:
        if self.config.cache_files:
            return [self._file_bytes(spec)]
        return iter_file_chunks(spec)

    # -- helpers --------------------------------------------------------------------------

    def _done(
        self,
        origin: str,
        request: HttpRequest,
        now: datetime,
        response: HttpResponse,
        cost: int,
        fault: str | None = None,
    ) -> HttpResponse:
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
            self._calls_total += 1
            self._cost_total += cost
            if origin == "api" and response.status == 429:
                self._count_429 += 1
            if self.config.record_calls:
                self._records.append(record)
        return response

    def _forget_old(self, now: datetime) -> None:
        """Drop jobs whose results expired (or that failed) ``forget_after_s`` ago, with their
        cached file facts; at most once per ten clock minutes. Called under the lock."""
        keep = self.config.forget_after_s
        if keep is None:
            return
        if self._last_forget is not None and now - self._last_forget < timedelta(minutes=10):
            return
        self._last_forget = now
        cutoff = now - timedelta(seconds=keep)
        stale = [rid for rid, job in self._jobs.items() if _ended(job) < cutoff]
        with self._files_lock:
            for rid in stale:
                for spec in self._jobs[rid].files:
                    self._stats.pop(spec.key, None)
                    self._bytes.pop(spec.key, None)
        for rid in stale:
            del self._jobs[rid]
        self._forgotten += len(stale)

    def _force(
        self,
        request_id: int,
        outcome: Literal["done", "failed"],
        reason: str | None,
        at: datetime | None,
    ) -> None:
        with self._lock:
            job = self._job(request_id)
            when = at or self.clock.now()
            job.finishes_at = when
            job.staging_until = min(job.staging_until, when)
            job.outcome = outcome
            job.fail_reason = reason
            job.expires_at = self._expiry(when) if outcome == "done" else None

    def _expiry(self, done_at: datetime) -> datetime:
        """Whole seconds, so the ``expires`` string and the enforced expiry agree."""
        return _floor_seconds(done_at + timedelta(seconds=self.config.result_ttl_s))

    def _job(self, request_id: int) -> _Job:
        try:
            return self._jobs[request_id]
        except KeyError:
            raise KeyError(f"no emulated request {request_id}") from None

    def _info(self, job: _Job, now: datetime) -> JobInfo:
        return JobInfo(
            request_id=job.request_id,
            amplitude_id=job.amplitude_id,
            user_id=job.user_id,
            start_date=job.start,
            end_date=job.end,
            created_at=job.created_at,
            staging_until=job.staging_until,
            finishes_at=job.finishes_at,
            outcome=job.outcome,
            fail_reason=job.fail_reason,
            expires_at=job.expires_at,
            file_count=len(job.files),
            status=job.status(now),
        )

    def _public_origin(
        self, request: HttpRequest, server: ServerThread | None, configured: str | None
    ) -> str:
        """Configured origin; else the bound one; for a wildcard bind, the client's Host."""
        if configured:
            return configured.rstrip("/")
        bound = self._origin(server)
        if self.config.host not in ("0.0.0.0", "::", ""):
            return bound
        host = request.headers.get("host", "").rsplit(":", 1)[0]
        port = bound.rsplit(":", 1)[1]
        return f"http://{host}:{port}" if host else bound

    @staticmethod
    def _output_url(origin: str, request_id: int, n: int) -> str:
        return f"{origin}{API_PATH}/{request_id}/outputs/{n}"


def _ended(job: _Job) -> datetime:
    """When a job stops mattering: its results expire, or (failed) it finished."""
    if job.outcome == "done" and job.expires_at is not None:
        return job.expires_at
    return job.finishes_at


def _api_route(request: HttpRequest) -> tuple[str, str, str] | None:
    """(kind, request id, output index) of a DSAR endpoint, whatever the method."""
    path = request.path.rstrip("/")
    if path == API_PATH:
        return ("create", "", "")
    if not path.startswith(API_PATH + "/"):
        return None
    parts = path[len(API_PATH) + 1 :].split("/")
    if len(parts) == 1:
        return ("status", parts[0], "")
    if len(parts) == 3 and parts[1] == "outputs":
        return ("output", parts[0], parts[2])
    return None


def _parse_create(body: bytes) -> tuple[int | None, str | None, date, date]:
    """Validate a POST body; ``ValueError`` carries the message for the 400."""
    try:
        payload: Any = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise ValueError("body must be a JSON object")
    amplitude_id = payload.get("amplitudeId")
    user_id = payload.get("userId")
    if amplitude_id is None and user_id is None:
        raise ValueError("amplitudeId or userId is required")
    if amplitude_id is not None and (
        isinstance(amplitude_id, bool) or not isinstance(amplitude_id, int) or amplitude_id <= 0
    ):
        raise ValueError("amplitudeId must be a positive integer")
    if user_id is not None and (
        not isinstance(user_id, str) or not user_id or len(user_id) > _MAX_USER_ID
    ):
        raise ValueError("userId must be a non-empty string")
    start = _parse_date(payload.get("startDate"), "startDate")
    end = _parse_date(payload.get("endDate"), "endDate")
    if start > end:
        raise ValueError("startDate must not be after endDate")
    return amplitude_id, user_id, start, end


def _parse_date(value: Any, name: str) -> date:
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError(f"{name} is required as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not a valid date: {value}") from None


def _json_response(
    status: int, body: dict[str, Any], headers: list[tuple[str, str]] | None = None
) -> HttpResponse:
    return HttpResponse(status, [_JSON, *(headers or [])], json.dumps(body).encode())


def _server_error(status: int, *, s3: bool = False) -> HttpResponse:
    """The kind of body a load balancer or S3 sends when it fails: not JSON."""
    if s3 and status != 502:
        code, message = (
            ("SlowDown", "Please reduce your request rate.")
            if status == 503
            else ("InternalError", "We encountered an internal error. Please try again.")
        )
        return _s3_error(status, code, message)
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    text = reason.get(status, "Error")
    html = f"<html><head><title>{status} {text}</title></head><body><h1>{text}</h1></body></html>"
    return HttpResponse(status, [("Content-Type", "text/html")], html.encode())


def _s3_error(status: int, code: str, message: str) -> HttpResponse:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>EMULATOR</RequestId></Error>"
    )
    return HttpResponse(status, [_XML], body.encode())


def _head(chunks: Iterable[bytes], size: int) -> bytes:
    """The first ``size`` bytes of a chunk stream, without reading the rest."""
    out = bytearray()
    for chunk in chunks:
        out += chunk[: size - len(out)]
        if len(out) >= size:
            break
    return bytes(out)


def _floor_seconds(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(microsecond=0)
