"""The privacy endpoints on the API origin: User Privacy (deletion), User Search and User
Activity. Each call needs a project's key (the org's DSAR key is refused), then a slot in
that project's limits, then may meet a fault (``Faults``' ``privacy`` origin); every call is
recorded with origin ``privacy`` and costs nothing from the DSAR budget."""

from __future__ import annotations

import time
from datetime import datetime

from dsar_scheduler.tools.emulator.api_requests import has_credentials
from dsar_scheduler.tools.emulator.deletion_routes import DeletionRoutes
from dsar_scheduler.tools.emulator.faults import KINDS_BY_ORIGIN, FaultDecision
from dsar_scheduler.tools.emulator.privacy_limits import Lane
from dsar_scheduler.tools.emulator.privacy_requests import privacy_route
from dsar_scheduler.tools.emulator.responses import json_response, server_error
from dsar_scheduler.tools.emulator.search_routes import EventSource, SearchRoutes
from dsar_scheduler.tools.emulator.server import HttpRequest, HttpResponse
from dsar_scheduler.tools.emulator.state import OrgState

#: The method each route answers to; any other is a 405.
_METHODS = {
    "deletions": ("POST", "GET"),
    "deletion": ("DELETE",),
    "search": ("GET",),
    "activity": ("GET",),
}


def is_privacy_path(path: str) -> bool:
    return privacy_route(path) is not None


class PrivacyOrigin:
    def __init__(self, org: OrgState) -> None:
        self._org = org
        privacy = org.privacy
        self._deletions = DeletionRoutes(privacy, org.lock)
        source = EventSource(org.config.seed, org.config.events_per_file)
        self._searches = SearchRoutes(privacy, org.lock, source)

    def handle(self, request: HttpRequest) -> HttpResponse:
        org = self._org
        now = org.clock.now()
        route = privacy_route(request.path)
        project_id = self._project_of(request)
        if project_id is None:
            body = {"error": "Invalid credentials: use the project's API key and secret key"}
            response = json_response(401, body, [("WWW-Authenticate", 'Basic realm="amplitude"')])
            return self._record(request, now, response)
        kind = route[0] if route is not None else "unknown"
        if kind not in _METHODS:
            return self._record(request, now, json_response(404, {"error": "not found"}))
        if request.method not in _METHODS[kind]:
            error = json_response(405, {"error": "method not allowed"})
            return self._record(request, now, error)
        privacy = org.privacy
        if kind in ("deletions", "deletion"):
            lane, hold = privacy.deletion_lanes[project_id], privacy.config.deletion_latency_s
        else:
            lane, hold = privacy.search_lanes[project_id], privacy.config.search_latency_s
        return self._within_limits(lane, hold, request, now, project_id)

    def _within_limits(
        self, lane: Lane, hold: float, request: HttpRequest, now: datetime, project_id: int
    ) -> HttpResponse:
        """Serve inside a slot of the lane, holding it ``hold`` real seconds (so a test can
        have calls overlap), or answer 429 with the wait in ``Retry-After``."""
        refusal = lane.enter(now, self._org.config.clock_speed)
        if refusal is not None:
            body = {"error": "Too Many Requests", "message": refusal.message}
            headers = [("Retry-After", str(refusal.retry_after))]
            return self._record(request, now, json_response(429, body, headers))
        try:
            if hold > 0:
                time.sleep(hold)
            decision = self._org.faults.decide("privacy", KINDS_BY_ORIGIN["privacy"])
            response = self._serve(request, now, project_id, decision)
        finally:
            lane.leave()
        return self._record(request, now, response, decision.kind)

    def _serve(
        self, request: HttpRequest, now: datetime, project_id: int, decision: FaultDecision
    ) -> HttpResponse:
        if decision.kind == "5xx":
            return server_error(decision.status)
        route = privacy_route(request.path)
        assert route is not None
        kind, parts = route
        today = now.date()
        if kind == "deletions" and request.method == "POST":
            response = self._deletions.create(project_id, request, today)
        elif kind == "deletions":
            response = self._deletions.listing(project_id, request, today)
        elif kind == "deletion":
            response = self._deletions.remove(project_id, parts[0], parts[1], today)
        elif kind == "search":
            response = self._searches.search(project_id, request, today)
        else:
            response = self._searches.activity(project_id, request, today)
        if decision.kind == "drop":  # after the work: marked, but the answer is lost
            response = HttpResponse(0, drop=True)
        elif decision.kind == "malformed":
            response.body = response.body[: max(1, len(response.body) // 2)]
        response.slow_seconds = decision.slow_seconds
        return response

    def _project_of(self, request: HttpRequest) -> int | None:
        """The project whose key and secret the request carries."""
        for keys in self._org.privacy.projects:
            if has_credentials(request, keys.api_key, keys.secret_key):
                return keys.project_id
        return None

    def _record(
        self, request: HttpRequest, now: datetime, response: HttpResponse, fault: str | None = None
    ) -> HttpResponse:
        return self._org.calls.record("privacy", request, now, response, 0, fault)
