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
from urllib.parse import urljoin, urlsplit

import httpx

BODY_EXCERPT = 300
#: The most of a JSON answer (a submit, a status, a redirect) the client reads: a status with
#: thousands of output URLs is a few hundred kB; anything bigger is refused, never buffered.
MAX_BODY_BYTES = 1 << 20
#: Output URLs per request: about one per month per project (reference/amplitude-api.md).
MAX_URLS = 10_000
MAX_URL_LENGTH = 4096
#: ``expires`` outside these years is not a real expiry (and would overflow date arithmetic).
EXPIRES_YEARS = (2000, 9000)
#: Amplitude request ids are stored as 64-bit integers.
MAX_REMOTE_ID = 2**63 - 1
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
    #: A well-formed answer about the request that cannot be used: an unknown status, done
    #: with no (or unusable) urls or expiry. Retried; if it persists, treated as a failed job.
    BAD_STATUS = "bad_status"


class ApiError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        body: str = "",
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code
        self.retry_after = retry_after
        self.body = _printable(body[:BODY_EXCERPT])  # it ends up in reasons and logs
        #: A finer reason for metrics (timeout, connection, server_error, malformed, ...).
        self.cause = cause or kind.value

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
        raise ValueError(f"expires is not a string: {str(value)[:40]!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if not EXPIRES_YEARS[0] <= parsed.year <= EXPIRES_YEARS[1]:
        raise ValueError(f"expires is not a plausible date: {value[:40]!r}")
    return parsed


def _check_output_url(url: str) -> None:
    """An output URL must be an absolute http(s) URL with a host and nothing odd in it (it
    is stored, logged and fetched); whether it may receive credentials is decided later."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError("an output URL is longer than 4096 characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError("an output URL holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("an output URL cannot be parsed") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"an output URL is not an absolute http(s) URL: {url[:80]!r}")


def parse_status(payload: Any, request_id: int) -> RemoteStatus:
    """Validate a status body; anything unexpected is a ``ValueError`` with the reason."""
    if not isinstance(payload, dict):
        raise ValueError("status body is not a JSON object")
    status = payload.get("status")
    if not isinstance(status, str) or status not in STATUSES:
        raise ValueError(f"unknown status {str(status)[:40]!r}")
    urls = payload.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
        raise ValueError("urls is not a list of strings")
    if len(urls) > MAX_URLS:
        raise ValueError(f"{len(urls)} urls, more than the {MAX_URLS} expected at most")
    if status == "done" and not urls:
        # The docs say done means "download URLs populated"; treat empty as not ready yet.
        raise ValueError("status done with no urls")
    if status == "done" and len(set(urls)) != len(urls):
        raise ValueError("status done with the same url twice")
    for url in urls if status == "done" else ():
        _check_output_url(url)
    expires = parse_expires(payload.get("expires")) if status == "done" else None
    if status == "done" and expires is None:
        raise ValueError("status done with no expires")
    fail_reason = payload.get("failReason")
    return RemoteStatus(
        request_id=request_id,
        status=status,
        urls=list(urls) if status == "done" else [],
        expires=expires,
        fail_reason=_printable(str(fail_reason))[:500] if fail_reason else None,
    )


def _printable(text: str) -> str:
    """Drop control characters (NUL cannot be stored in PostgreSQL text; the rest is noise)."""
    return "".join(ch if ch.isprintable() or ch == " " else "?" for ch in text)


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
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.allow_http = allow_http
        self.max_body_bytes = max_body_bytes
        base = urlsplit(self.base_url)
        host = (base.hostname or "").lower()
        #: The only host plain http may go to, and only with allow_http (a loopback emulator).
        self._http_host = host if base.scheme == "http" else None
        self._check_scheme(self.base_url)
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
            event_hooks={"response": [self._vet_redirect]},
        )
        # No auth, no cookies carried over: this client talks to the pre-signed host only.
        self._download = httpx.Client(
            timeout=httpx.Timeout(download_timeout, connect=timeout),
            follow_redirects=False,
            transport=download_transport,
            headers={"User-Agent": "dsar-scheduler"},
        )

    def __repr__(self) -> str:
        return f"AmplitudeClient({self.base_url!r})"

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
        if (
            isinstance(request_id, bool)
            or not isinstance(request_id, int)
            or not 0 < request_id <= MAX_REMOTE_ID
        ):
            raise ApiError(
                ErrorKind.TRANSIENT,
                "submit response has no usable requestId",
                status_code=response.status_code,
                body=response.text,
                cause="malformed",
            )
        return request_id

    def status(self, request_id: int) -> RemoteStatus:
        response = self._send("GET", f"{self.base_url}/{request_id}")
        payload = self._json(response)
        try:
            return parse_status(payload, request_id)
        except ValueError as exc:
            raise ApiError(
                ErrorKind.BAD_STATUS,
                f"unusable status body: {exc}",
                status_code=response.status_code,
                body=response.text,
            ) from None

    def check_output_url(self, url: str) -> None:
        """Refuse (``UNTRUSTED_URL``) an output URL that must not receive credentials, before
        anything is reserved or sent."""
        self._check_scheme(url)
        if not self.trusts(url):
            raise ApiError(
                ErrorKind.UNTRUSTED_URL,
                f"output URL host {urlsplit(url).hostname!r} is not an Amplitude host; "
                "credentials go only to the configured API host",
            )

    def resolve_output(self, url: str) -> str:
        """GET an output URL with credentials; return the pre-signed URL it redirects to."""
        self.check_output_url(url)
        response = self._send("GET", url, redirect_ok=True)
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            raise ApiError(
                ErrorKind.TRANSIENT,
                "output URL did not redirect",
                status_code=response.status_code,
                body=response.text,
                cause="no_redirect",
            )
        try:
            location = str(response.url.join(location))
        except (httpx.InvalidURL, ValueError):
            raise ApiError(
                ErrorKind.UNTRUSTED_URL, "output URL redirected to an unparseable location"
            ) from None
        self._check_scheme(location)
        return location

    @contextmanager
    def download(self, presigned_url: str) -> Iterator[Download]:
        """Stream the pre-signed file as served (``iter_raw``: never un-gzip it)."""
        self._check_scheme(presigned_url)
        try:
            request = self._download.build_request("GET", presigned_url)
        except httpx.InvalidURL:
            raise ApiError(ErrorKind.UNTRUSTED_URL, "unparseable download URL") from None
        assert "authorization" not in request.headers
        try:
            response = self._download.send(request, stream=True)
        except httpx.InvalidURL:
            raise ApiError(ErrorKind.TRANSIENT, "download redirected", cause="bad_url") from None
        except httpx.TimeoutException:
            raise ApiError(ErrorKind.TRANSIENT, "download timed out", cause="timeout") from None
        except httpx.HTTPError as exc:
            raise ApiError(
                ErrorKind.TRANSIENT, f"download failed: {type(exc).__name__}", cause="connection"
            ) from None
        try:
            if response.status_code == 403:
                raise ApiError(
                    ErrorKind.LINK_EXPIRED,
                    "pre-signed URL refused",
                    status_code=403,
                    body=self._excerpt(response),
                )
            if response.status_code != 200:
                kind = ErrorKind.TRANSIENT if response.status_code >= 500 else ErrorKind.REJECTED
                raise ApiError(
                    kind,
                    "download refused",
                    status_code=response.status_code,
                    body=self._excerpt(response),
                    cause="server_error" if kind is ErrorKind.TRANSIENT else "refused",
                )
            yield Download(response)
        finally:
            response.close()

    # -- helpers -------------------------------------------------------------------------

    def trusts(self, url: str) -> bool:
        """Whether ``url`` is on an origin that may receive the org credentials."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if parts.username is not None or parts.password is not None:
            return False
        origin = (parts.scheme, (parts.hostname or "").lower(), port)
        if origin in self._credential_origins:
            return True
        return (
            parts.scheme == "https"
            and port in (None, 443)
            and (("https", origin[1], None) in self._credential_origins)
        )

    def _vet_redirect(self, response: httpx.Response) -> None:
        """Runs on every answer, before httpx even parses a redirect: a ``Location`` we
        would never follow is refused here, by our rules and with our message."""
        location = response.headers.get("location")
        if response.status_code in (301, 302, 303, 307, 308) and location:
            try:
                target = urljoin(str(response.request.url), location)
            except ValueError:
                raise ApiError(
                    ErrorKind.UNTRUSTED_URL, "refusing an unparseable redirect"
                ) from None
            self._check_scheme(target)

    def _check_scheme(self, url: str) -> None:
        """Only https (plain http only to the configured API host, with allow_http), with a
        host and no user name or password in it; anything else is refused, clearly."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ApiError(ErrorKind.UNTRUSTED_URL, "refusing an unparseable URL") from None
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        if scheme not in ("https", "http"):
            raise ApiError(
                ErrorKind.UNTRUSTED_URL,
                f"refusing a {scheme or 'scheme-less'} URL; only https is allowed",
            )
        if not host:
            raise ApiError(ErrorKind.UNTRUSTED_URL, "refusing a URL with no host")
        if parts.username is not None or parts.password is not None:
            raise ApiError(ErrorKind.UNTRUSTED_URL, "refusing a URL with a user name or password")
        if scheme == "https":
            return
        if self.allow_http and host == self._http_host:
            return
        raise ApiError(
            ErrorKind.UNTRUSTED_URL,
            f"refusing plain http to {host!r}; only https is allowed "
            "(DSAR_ALLOW_HTTP=true permits http only to the configured API host, for "
            "loopback emulators)",
        )

    def _send(self, method: str, url: str, *, redirect_ok: bool = False, **kwargs: Any) -> Answer:
        """One call with credentials; the body is read up to ``max_body_bytes`` and no more."""
        try:
            request = self._api.build_request(method, url, **kwargs)
            response = self._api.send(request, stream=True)
            try:
                content = self._read_capped(response, method)
            finally:
                response.close()
        except httpx.InvalidURL:  # our URL, or a Location httpx cannot parse
            raise ApiError(
                ErrorKind.UNTRUSTED_URL if redirect_ok else ErrorKind.TRANSIENT,
                f"{method} named an unparseable URL",
                cause="bad_url",
            ) from None
        except httpx.TimeoutException:
            raise ApiError(ErrorKind.TRANSIENT, f"{method} timed out", cause="timeout") from None
        except httpx.HTTPError as exc:
            raise ApiError(
                ErrorKind.TRANSIENT, f"{method} failed: {type(exc).__name__}", cause="connection"
            ) from None
        answer = Answer(response.status_code, response.headers, content, response.url)
        code = answer.status_code
        if 300 <= code < 400 and not redirect_ok:
            target = urlsplit(answer.headers.get("location", "")).hostname
            raise ApiError(
                ErrorKind.TRANSIENT,
                f"unexpected redirect (to {target!r}), not followed",
                status_code=code,
                cause="redirect",
            )
        if code < 400:
            return answer
        if code == 429:
            retry_after = parse_retry_after(answer.headers.get("retry-after"), datetime.now(UTC))
            raise ApiError(
                ErrorKind.RATE_LIMITED,
                "rate limited",
                status_code=code,
                retry_after=retry_after,
                body=answer.text,
            )
        if code >= 500 or code == 408:
            raise ApiError(
                ErrorKind.TRANSIENT,
                "server error",
                status_code=code,
                body=answer.text,
                cause="server_error",
            )
        if code in (401, 403):
            raise ApiError(
                ErrorKind.AUTH, "credentials refused", status_code=code, body=answer.text
            )
        if code == 404:
            raise ApiError(ErrorKind.NOT_FOUND, "not found", status_code=code, body=answer.text)
        raise ApiError(ErrorKind.REJECTED, "request refused", status_code=code, body=answer.text)

    def _read_capped(self, response: httpx.Response, method: str) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise ApiError(
                ErrorKind.TRANSIENT,
                f"{method} answer of {declared} bytes is over the {self.max_body_bytes} "
                "byte limit; not read",
                status_code=response.status_code,
                cause="oversized",
            )
        body = bytearray()
        for chunk in response.iter_bytes():  # decoded: the limit also stops a gzip bomb
            body += chunk
            if len(body) > self.max_body_bytes:
                raise ApiError(
                    ErrorKind.TRANSIENT,
                    f"{method} answer is over the {self.max_body_bytes} byte limit; "
                    "stopped reading",
                    status_code=response.status_code,
                    cause="oversized",
                )
        return bytes(body)

    @staticmethod
    def _excerpt(response: httpx.Response) -> str:
        """At most a small part of an error body from the download host."""
        data = b""
        try:
            for chunk in response.iter_raw():
                data += chunk
                if len(data) >= BODY_EXCERPT:
                    break
        except httpx.StreamConsumed:
            data = response.content  # already read (a preloaded response)
        except httpx.HTTPError:
            pass
        return data[:BODY_EXCERPT].decode("utf-8", "replace")

    @staticmethod
    def _json(answer: Answer) -> Any:
        try:
            return json.loads(answer.content)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise ApiError(
                ErrorKind.TRANSIENT,
                "malformed JSON body",
                status_code=answer.status_code,
                body=answer.text,
                cause="malformed",
            ) from None


@dataclass(frozen=True)
class Answer:
    """A response to a credentialed call, its body read (within the limit)."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    url: httpx.URL

    @property
    def text(self) -> str:
        return self.content[:BODY_EXCERPT].decode("utf-8", "replace")


class Download:
    """An open pre-signed download: its declared length and its raw byte chunks."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        length = response.headers.get("content-length")
        self.content_length = int(length) if length and length.isdigit() else None

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The body as served, in chunks of at least ``size`` bytes (the last one may be
        shorter). Joined here from the reads as they come, in one copy: ``iter_raw(size)``
        re-chunks through a buffer that copies every byte twice more."""
        try:
            pieces: list[bytes] = []
            held = 0
            for piece in self._response.iter_raw():
                pieces.append(piece)
                held += len(piece)
                if held >= size:
                    yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                    pieces, held = [], 0
            if pieces:
                yield b"".join(pieces)
        except httpx.TimeoutException:
            raise ApiError(
                ErrorKind.TRANSIENT, "download timed out mid-body", cause="timeout"
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(
                ErrorKind.TRANSIENT,
                f"download interrupted: {type(exc).__name__}",
                cause="connection",
            ) from None
