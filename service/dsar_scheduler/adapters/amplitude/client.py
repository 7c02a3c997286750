"""The Amplitude DSAR client (httpx): submit, status, resolve an output URL, download.

Every call has a timeout; output URLs are resolved without following redirects, and the
pre-signed ``Location`` is fetched by a second client that has no credentials at all. What
may be called, and what may receive credentials, is ``TrustRules``' to decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import httpx

from dsar_scheduler.adapters.amplitude.answers import (
    MAX_BODY_BYTES,
    Answer,
    fetch_answer,
    raise_for_status,
)
from dsar_scheduler.adapters.amplitude.downloads import Download, open_download
from dsar_scheduler.adapters.amplitude.errors import ApiError, ErrorKind
from dsar_scheduler.adapters.amplitude.status import RemoteStatus, parse_status
from dsar_scheduler.adapters.amplitude.trust import REDIRECT_CODES, TrustRules

#: Amplitude request ids are stored as 64-bit integers.
MAX_REMOTE_ID = 2**63 - 1
#: Connections kept open per client: one per lane at the largest DSAR_CONCURRENCY, so that
#: concurrent polls and downloads reuse theirs instead of a new TLS handshake each.
POOL = httpx.Limits(max_connections=100, max_keepalive_connections=64)


def _system_now() -> datetime:
    return datetime.now(UTC)


class AmplitudeClient:
    """One instance per process; thread-safe as httpx clients are. ``now`` (the app's clock)
    dates a ``Retry-After`` given as an HTTP-date."""

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
        max_body_bytes: int = MAX_BODY_BYTES,
        now: Callable[[], datetime] = _system_now,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.allow_http = allow_http
        self.max_body_bytes = max_body_bytes
        self._now = now
        self._rules = TrustRules(self.base_url, allow_http)
        self._api = httpx.Client(
            auth=httpx.BasicAuth(api_key, secret_key),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            transport=transport,
            limits=POOL,
            headers={"Accept": "application/json", "User-Agent": "dsar-scheduler"},
            event_hooks={"response": [self._rules.vet_redirect]},
        )
        # No auth, no cookies carried over: this client talks to the pre-signed host only.
        self._download = httpx.Client(
            timeout=httpx.Timeout(download_timeout, connect=timeout),
            follow_redirects=False,
            transport=download_transport,
            limits=POOL,
            headers={"User-Agent": "dsar-scheduler"},
        )

    def __repr__(self) -> str:
        return f"AmplitudeClient({self.base_url!r})"

    def close(self) -> None:
        self._api.close()
        self._download.close()

    # -- calls ---------------------------------------------------------------------------

    def submit(
        self, amplitude_id: int | None, start: date, end: date, user_id: str | None = None
    ) -> int:
        """POST one request for a subject named by user ID (preferred when given: it reaches
        every Amplitude ID the user has, in every project) or by Amplitude ID."""
        subject: dict[str, object] = (
            {"userId": user_id} if user_id is not None else {"amplitudeId": amplitude_id}
        )
        if user_id is None and amplitude_id is None:
            raise ValueError("a DSAR request needs an Amplitude ID or a user ID")
        body = {**subject, "startDate": start.isoformat(), "endDate": end.isoformat()}
        answer = self._send("POST", self.base_url, json=body)
        payload = answer.json()
        request_id = payload.get("requestId") if isinstance(payload, dict) else None
        if (
            isinstance(request_id, bool)
            or not isinstance(request_id, int)
            or not 0 < request_id <= MAX_REMOTE_ID
        ):
            raise ApiError(
                ErrorKind.TRANSIENT,
                "submit response has no usable requestId",
                status_code=answer.status_code,
                body=answer.text,
                cause="malformed",
            )
        return request_id

    def status(self, request_id: int) -> RemoteStatus:
        answer = self._send("GET", f"{self.base_url}/{request_id}")
        payload = answer.json()
        try:
            return parse_status(payload, request_id)
        except ValueError as exc:
            raise ApiError(
                ErrorKind.BAD_STATUS,
                f"unusable status body: {exc}",
                status_code=answer.status_code,
                body=answer.text,
            ) from None

    def check_output_url(self, url: str) -> None:
        """Refuse (``UNTRUSTED_URL``) an output URL that must not receive credentials, before
        anything is reserved or sent."""
        self._rules.check_output_url(url)

    def trusts(self, url: str) -> bool:
        """Whether ``url`` is on an origin that may receive the org credentials."""
        return self._rules.trusts(url)

    def resolve_output(self, url: str) -> str:
        """GET an output URL with credentials; return the pre-signed URL it redirects to."""
        self.check_output_url(url)
        answer = self._send("GET", url, redirect_ok=True)
        location = answer.headers.get("location")
        if answer.status_code not in REDIRECT_CODES or not location:
            raise ApiError(
                ErrorKind.TRANSIENT,
                "output URL did not redirect",
                status_code=answer.status_code,
                body=answer.text,
                cause="no_redirect",
            )
        try:
            location = str(answer.url.join(location))
        except (httpx.InvalidURL, ValueError):
            raise ApiError(
                ErrorKind.UNTRUSTED_URL, "output URL redirected to an unparseable location"
            ) from None
        self._rules.check_scheme(location)
        return location

    @contextmanager
    def download(self, presigned_url: str) -> Iterator[Download]:
        """Stream the pre-signed file as served (``iter_raw``: never un-gzip it)."""
        self._rules.check_scheme(presigned_url)
        with open_download(self._download, presigned_url) as download:
            yield download

    # -- the credentialed call -----------------------------------------------------------

    def _send(self, method: str, url: str, *, redirect_ok: bool = False, **kwargs: Any) -> Answer:
        """One call with credentials; the body is read up to ``max_body_bytes`` and no more."""
        answer = fetch_answer(
            self._api, method, url, self.max_body_bytes, redirect_ok=redirect_ok, **kwargs
        )
        raise_for_status(answer, method, redirect_ok=redirect_ok, now=self._now())
        return answer
