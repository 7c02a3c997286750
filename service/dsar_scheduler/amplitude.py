"""The Amplitude DSAR client (httpx): submit, status, resolve an output URL, download.

Trust rules live here and nowhere else:
- credentials go only to the configured API host (and the other documented Amplitude hosts of
  the same region), never to a host a response names unless it is one of those;
- output URLs are resolved without following redirects; the pre-signed ``Location`` is fetched
  by a second client that has no credentials at all;
- every call has a timeout; errors are classified for the caller, which decides when to retry
  (across ticks, never by sleeping here).
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx

BODY_EXCERPT = 300
#: Documented Amplitude hosts (reference/amplitude-api.md §1): the docs disagree on the download
#: host, so output URLs on either host of the configured region are trusted with credentials.
REGION_HOSTS = (
    frozenset({"amplitude.com", "analytics.amplitude.com"}),
    frozenset({"analytics.eu.amplitude.com"}),
)
STATUSES = frozenset({"staging", "submitted", "done", "failed"})


class ErrorKind(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429: back off, every replica
    TRANSIENT = "transient"  # 5xx, timeouts, resets, malformed bodies: retry later
    NOT_FOUND = "not_found"  # 404 (unknown request, or results expired on outputs)
    REJECTED = "rejected"  # other 4xx: our request is wrong; retrying will not help
    AUTH = "auth"  # 401/403 from Amplitude: credentials wrong; stop the tick
    UNTRUSTED_URL = "untrusted_url"  # a URL we refuse to follow or send credentials to
    LINK_EXPIRED = "link_expired"  # the pre-signed URL is no longer valid (403 from S3)


class ApiError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        body: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code
        self.retry_after = retry_after
        self.body = body[:BODY_EXCERPT]

    def __str__(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.kind}: {self.args[0]}{code}"


@dataclass(frozen=True)
class RemoteStatus:
    request_id: int
    status: str
    urls: list[str]
    expires: datetime | None
    fail_reason: str | None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as delay-seconds or an HTTP-date (RFC 9110); ``None`` if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def parse_expires(value: Any) -> datetime | None:
    """``expires`` is an ISO datetime with no zone, meaning UTC."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError(f"expires is not a string: {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_status(payload: Any, request_id: int) -> RemoteStatus:
    """Validate a status body; anything unexpected is a ``ValueError`` with the reason."""
    if not isinstance(payload, dict):
        raise ValueError("status body is not a JSON object")
    status = payload.get("status")
    if status not in STATUSES:
        raise ValueError(f"unknown status {str(status)[:40]!r}")
    urls = payload.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
        raise ValueError("urls is not a list of strings")
    if status == "done" and not urls:
        # The docs say done means "download URLs populated"; treat empty as not ready yet.
        raise ValueError("status done with no urls")
    expires = parse_expires(payload.get("expires"))
    if status == "done" and expires is None:
        raise ValueError("status done with no expires")
    fail_reason = payload.get("failReason")
    return RemoteStatus(
        request_id=request_id,
        status=status,
        urls=list(urls),
        expires=expires,
        fail_reason=str(fail_reason)[:500] if fail_reason else None,
    )


class AmplitudeClient:
    """One instance per process; thread-safe as httpx clients are."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        secret_key: str,
        *,
        allow_http: bool = False,
        timeout: float = 30.0,
        download_timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
        download_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.allow_http = allow_http
        base = urlsplit(self.base_url)
        self._check_scheme(self.base_url)
        host = (base.hostname or "").lower()
        self._credential_origins = {(base.scheme, host, base.port)}
        for region in REGION_HOSTS:
            if host in region:
                self._credential_origins |= {("https", h, None) for h in region}
        self._api = httpx.Client(
            auth=httpx.BasicAuth(api_key, secret_key),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "dsar-scheduler"},
        )
        # No auth, no cookies carried over: this client talks to the pre-signed host only.
        self._download = httpx.Client(
            timeout=httpx.Timeout(download_timeout, connect=timeout),
            follow_redirects=False,
            transport=download_transport,
            headers={"User-Agent": "dsar-scheduler"},
        )

    def close(self) -> None:
        self._api.close()
        self._download.close()

    # -- calls ---------------------------------------------------------------------------

    def submit(self, amplitude_id: int, start: date, end: date) -> int:
        body = {
            "amplitudeId": amplitude_id,
            "startDate": start.isoformat(),
            "endDate": end.isoformat(),
        }
        response = self._send("POST", self.base_url, json=body)
        payload = self._json(response)
        request_id = payload.get("requestId") if isinstance(payload, dict) else None
        if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id <= 0:
            raise ApiError(
                ErrorKind.TRANSIENT,
                "submit response has no requestId",
                status_code=response.status_code,
                body=response.text,
            )
        return request_id

    def status(self, request_id: int) -> RemoteStatus:
        response = self._send("GET", f"{self.base_url}/{request_id}")
        payload = self._json(response)
        try:
            return parse_status(payload, request_id)
        except ValueError as exc:
            raise ApiError(
                ErrorKind.TRANSIENT,
                f"malformed status body: {exc}",
                status_code=response.status_code,
                body=response.text,
            ) from None

    def resolve_output(self, url: str) -> str:
        """GET an output URL with credentials; return the pre-signed URL it redirects to."""
        self._check_scheme(url)
        if not self.trusts(url):
            raise ApiError(
                ErrorKind.UNTRUSTED_URL,
                f"output URL host {urlsplit(url).hostname!r} is not an Amplitude host",
            )
        response = self._send("GET", url)
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            raise ApiError(
                ErrorKind.TRANSIENT,
                "output URL did not redirect",
                status_code=response.status_code,
                body=response.text,
            )
        location = str(response.url.join(location))
        self._check_scheme(location)
        return location

    @contextmanager
    def download(self, presigned_url: str) -> Iterator[Download]:
        """Stream the pre-signed file as served (``iter_raw``: never un-gzip it)."""
        self._check_scheme(presigned_url)
        request = self._download.build_request("GET", presigned_url)
        assert "authorization" not in request.headers
        try:
            response = self._download.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ApiError(ErrorKind.TRANSIENT, f"download failed: {type(exc).__name__}") from None
        try:
            if response.status_code == 403:
                response.read()
                raise ApiError(
                    ErrorKind.LINK_EXPIRED,
                    "pre-signed URL refused",
                    status_code=403,
                    body=response.text,
                )
            if response.status_code != 200:
                response.read()
                kind = ErrorKind.TRANSIENT if response.status_code >= 500 else ErrorKind.REJECTED
                raise ApiError(
                    kind, "download refused", status_code=response.status_code, body=response.text
                )
            yield Download(response)
        finally:
            response.close()

    # -- helpers -------------------------------------------------------------------------

    def trusts(self, url: str) -> bool:
        """Whether ``url`` is on an origin that may receive the org credentials."""
        parts = urlsplit(url)
        origin = (parts.scheme, (parts.hostname or "").lower(), parts.port)
        if origin in self._credential_origins:
            return True
        return (
            parts.scheme == "https"
            and parts.port in (None, 443)
            and (("https", origin[1], None) in self._credential_origins)
        )

    def _check_scheme(self, url: str) -> None:
        scheme = urlsplit(url).scheme
        if scheme == "https" or (scheme == "http" and self.allow_http):
            return
        raise ApiError(
            ErrorKind.UNTRUSTED_URL,
            f"refusing a {scheme or 'scheme-less'} URL; "
            "only https is allowed (DSAR_ALLOW_HTTP=true for loopback emulators)",
        )

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._api.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise ApiError(ErrorKind.TRANSIENT, f"{method} timed out") from None
        except httpx.HTTPError as exc:
            raise ApiError(ErrorKind.TRANSIENT, f"{method} failed: {type(exc).__name__}") from None
        code = response.status_code
        if code < 400:
            return response
        if code == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
            raise ApiError(
                ErrorKind.RATE_LIMITED,
                "rate limited",
                status_code=code,
                retry_after=retry_after,
                body=response.text,
            )
        if code >= 500 or code == 408:
            raise ApiError(
                ErrorKind.TRANSIENT, "server error", status_code=code, body=response.text
            )
        if code in (401, 403):
            raise ApiError(
                ErrorKind.AUTH, "credentials refused", status_code=code, body=response.text
            )
        if code == 404:
            raise ApiError(ErrorKind.NOT_FOUND, "not found", status_code=code, body=response.text)
        raise ApiError(ErrorKind.REJECTED, "request refused", status_code=code, body=response.text)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(
                ErrorKind.TRANSIENT,
                "malformed JSON body",
                status_code=response.status_code,
                body=response.text,
            ) from None


class Download:
    """An open pre-signed download: its declared length and its raw byte chunks."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        length = response.headers.get("content-length")
        self.content_length = int(length) if length and length.isdigit() else None

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        try:
            yield from self._response.iter_raw(size)
        except httpx.HTTPError as exc:
            raise ApiError(
                ErrorKind.TRANSIENT, f"download interrupted: {type(exc).__name__}"
            ) from None
