"""The pre-signed download host: checks the signature, serves an output's gzipped bytes
(or tears them, where a test asked for it). Never charged to the API's cost budget."""

from __future__ import annotations

import re

from dsar_scheduler.tools.emulator.content import FileSpec
from dsar_scheduler.tools.emulator.faults import KINDS_BY_ORIGIN, FaultDecision
from dsar_scheduler.tools.emulator.responses import head, s3_error, server_error
from dsar_scheduler.tools.emulator.server import HttpRequest, HttpResponse
from dsar_scheduler.tools.emulator.state import OrgState

_S3_KEY = re.compile(r"^/(?P<bucket>[^/]+)/(?P<id>\d+)/(?P<n>\d+)\.json\.gz$")
_TWO_AUTH_MECHANISMS = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
    "Signature query string parameter or the Authorization header should be specified"
)


class S3Origin:
    def __init__(self, org: OrgState) -> None:
        self._org = org

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Serve one request (called by the server threads)."""
        org = self._org
        now = org.clock.now()
        if request.method != "GET":
            error = s3_error(405, "MethodNotAllowed", "The specified method is not allowed.")
            return org.calls.record("s3", request, now, error, 0)
        if "authorization" in request.headers:
            error = s3_error(400, "InvalidArgument", _TWO_AUTH_MECHANISMS)
            return org.calls.record("s3", request, now, error, 0)
        verdict = org.presigner.verify(request.path, request.query, now)
        if not verdict.ok:
            error = s3_error(403, verdict.code, verdict.message)
            return org.calls.record("s3", request, now, error, 0)
        spec = self._object(request.path)
        if spec is None:
            error = s3_error(404, "NoSuchKey", "The specified key does not exist.")
            return org.calls.record("s3", request, now, error, 0)
        decision = org.faults.decide("s3", KINDS_BY_ORIGIN["s3"])
        response = self._file(spec, decision)
        response.slow_seconds = decision.slow_seconds
        return org.calls.record("s3", request, now, response, 0, decision.kind)

    def _object(self, path: str) -> FileSpec | None:
        match = _S3_KEY.match(path)
        if match is None or match["bucket"] != self._org.config.bucket:
            return None
        with self._org.lock:
            job = self._org.jobs.find(match["id"])
            n = int(match["n"])
            return job.files[n] if job is not None and n < len(job.files) else None

    def _file(self, spec: FileSpec, decision: FaultDecision) -> HttpResponse:
        if decision.kind == "5xx":
            return server_error(decision.status, s3=True)
        if decision.kind == "drop":
            return HttpResponse(0, drop=True)
        headers = [("Content-Type", "application/octet-stream")]
        if self._org.config.s3_content_encoding_gzip:
            headers.append(("Content-Encoding", "gzip"))
        files = self._org.files
        size = files.stats(spec).size
        if decision.kind == "truncated":
            return HttpResponse(200, headers, body=head(files.chunks(spec), size // 2))
        response = HttpResponse(200, headers, chunks=lambda: files.chunks(spec), length=size)
        if decision.kind == "torn":
            response.cut_after = size // 2
        return response
