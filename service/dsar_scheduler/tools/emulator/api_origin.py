"""The DSAR API origin: create a job, read its status, redirect to its outputs; every call
charged to the org's rolling cost budget, and faults injected where a test asked for them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dsar_scheduler.tools.emulator.api_requests import (
    api_route,
    has_credentials,
    output_url,
    parse_create,
)
from dsar_scheduler.tools.emulator.content import FileSpec, subject_amplitude_id
from dsar_scheduler.tools.emulator.faults import KINDS_BY_ORIGIN, NO_FAULT, FaultDecision
from dsar_scheduler.tools.emulator.jobs import Subject
from dsar_scheduler.tools.emulator.privacy_origin import PrivacyOrigin, is_privacy_path
from dsar_scheduler.tools.emulator.responses import json_response, server_error
from dsar_scheduler.tools.emulator.server import HttpRequest, HttpResponse
from dsar_scheduler.tools.emulator.state import OrgState
from dsar_scheduler.tools.emulator.subjects import export_files, subject_files


class ApiOrigin:
    def __init__(self, org: OrgState) -> None:
        self._org = org
        self._privacy = PrivacyOrigin(org)

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Serve one request (called by the server threads); the privacy endpoints, on the
        same origin, have keys and limits of their own."""
        if is_privacy_path(request.path):
            return self._privacy.handle(request)
        org = self._org
        now = org.clock.now()
        route = api_route(request)
        if not has_credentials(request, org.config.api_key, org.config.secret_key):
            body = {"error": "Invalid credentials: use the org API key and secret key"}
            response = json_response(401, body, [("WWW-Authenticate", 'Basic realm="amplitude"')])
            return org.calls.record("api", request, now, response, 0)
        if route is None:
            error = json_response(404, {"error": "not found"})
            return org.calls.record("api", request, now, error, 0)
        if request.method != ("POST" if route[0] == "create" else "GET"):
            error = json_response(405, {"error": "method not allowed"})
            return org.calls.record("api", request, now, error, 0)
        cost = org.config.post_cost if request.method == "POST" else org.config.get_cost
        applicable = KINDS_BY_ORIGIN["api"]
        if route[0] == "output":
            applicable = applicable - {"malformed"}
        with org.lock:
            fits = org.budget.fits(now, cost)
            decision = org.faults.decide("api", applicable) if fits else NO_FAULT
            if not fits or decision.kind == "429":
                return self._rate_limited(request, now, cost, decision)
            org.budget.charge(now, cost)
        return self._serve(request, now, route, cost, decision)

    def _serve(
        self,
        request: HttpRequest,
        now: datetime,
        route: tuple[str, str, str],
        cost: int,
        decision: FaultDecision,
    ) -> HttpResponse:
        kind, request_id, output = route
        if decision.kind == "5xx":
            response = server_error(decision.status)
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
        return self._org.calls.record("api", request, now, response, cost, decision.kind)

    def _rate_limited(
        self, request: HttpRequest, now: datetime, cost: int, decision: FaultDecision
    ) -> HttpResponse:
        org, cfg = self._org, self._org.config
        charged = cost if cfg.charge_rate_limited else 0
        retry_after = org.budget.retry_after(now, cost, cfg.clock_speed)
        org.budget.charge(now, charged)
        headers = [("Retry-After", str(retry_after))] if cfg.send_retry_after else []
        body = {
            "error": "Too Many Requests",
            "message": f"DSAR cost budget of {cfg.budget_per_hour} per hour exceeded",
        }
        response = json_response(429, body, headers)
        response.slow_seconds = decision.slow_seconds
        return org.calls.record("api", request, now, response, charged, decision.kind)

    def _create(self, request: HttpRequest, now: datetime) -> HttpResponse:
        try:
            subject = parse_create(request.body)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        org = self._org
        files = self._files(subject, now)
        with org.lock:
            org.files.forget(spec for job in org.jobs.forget_old(now) for spec in job.files)
            job = org.jobs.open(now, subject, files)
        return json_response(202, {"requestId": job.request_id})

    def _files(self, subject: Subject, now: datetime) -> list[FileSpec]:
        """A known user's files in the projects where it is still found (by ``userId``: its
        canonical ID's, and its merged IDs' unless configured out); any other ID's files as
        ever, from the ID (or a hash of the user ID) alone."""
        org, cfg = self._org, self._org.config
        with org.lock:
            sources = org.privacy.identities.export_sources(
                subject.amplitude_id, subject.user_id, now.date()
            )
        if sources is not None:
            return export_files(cfg, sources, subject.start, subject.end)
        amplitude_id = subject.amplitude_id
        if amplitude_id is None:
            amplitude_id = subject_amplitude_id(subject.user_id or "")
        user_id = subject.user_id if subject.user_id is not None else f"user-{amplitude_id}"
        return subject_files(cfg, amplitude_id, user_id, subject.start, subject.end)

    def _status(self, request: HttpRequest, raw_id: str, now: datetime) -> HttpResponse:
        with self._org.lock:
            job = self._org.jobs.find(raw_id)
            if job is None:
                return json_response(404, {"error": f"request {raw_id} not found"})
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
            origin = self._org.listeners.public_origin(request, "api")
            body["urls"] = [output_url(origin, job.request_id, n) for n in range(count)]
        return json_response(200, body)

    def _output(self, request: HttpRequest, raw_id: str, raw_n: str, now: datetime) -> HttpResponse:
        org = self._org
        with org.lock:
            job = org.jobs.find(raw_id)
            if job is None:
                return json_response(404, {"error": f"request {raw_id} not found"})
            n = int(raw_n) if raw_n.isdigit() else -1
            if job.status(now) != "done" or job.expires_at is None or not 0 <= n < len(job.files):
                return json_response(404, {"error": "output not found"})
            if now > job.expires_at:
                return json_response(404, {"error": "results expired"})
            lifetime = min(org.config.presign_ttl_s, (job.expires_at - now).total_seconds())
        path = f"/{org.config.bucket}/{job.request_id}/{n}.json.gz"
        query = org.presigner.sign(path, now, lifetime)
        origin = org.listeners.public_origin(request, "s3")
        return HttpResponse(302, [("Location", f"{origin}{path}?{query}")])
