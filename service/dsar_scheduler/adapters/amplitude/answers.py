"""A credentialed call's answer: its body read within a limit (a status with thousands of
output URLs is large, anything far larger is refused, never buffered), and what its HTTP
status means for the caller."""

from __future__ import annotations

import email.utils
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from dsar_scheduler.adapters.amplitude.errors import BODY_EXCERPT, ApiError, ErrorKind

#: The most of a JSON answer (a submit, a status, a redirect) the client reads.
MAX_BODY_BYTES = 1 << 20


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

    def json(self) -> Any:
        """The body as JSON; a body that is not is a transient error (a proxy's page)."""
        try:
            return json.loads(self.content)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise ApiError(
                ErrorKind.TRANSIENT,
                "malformed JSON body",
                status_code=self.status_code,
                body=self.text,
                cause="malformed",
            ) from None


def read_capped(response: httpx.Response, method: str, limit: int) -> bytes:
    """The decoded body, refused once it is over ``limit`` bytes (declared or read)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(
            ErrorKind.TRANSIENT,
            f"{method} answer of {declared} bytes is over the {limit} byte limit; not read",
            status_code=response.status_code,
            cause="oversized",
        )
    body = bytearray()
    for chunk in response.iter_bytes():  # decoded: the limit also stops a gzip bomb
        body += chunk
        if len(body) > limit:
            raise ApiError(
                ErrorKind.TRANSIENT,
                f"{method} answer is over the {limit} byte limit; stopped reading",
                status_code=response.status_code,
                cause="oversized",
            )
    return bytes(body)


def fetch_answer(
    client: httpx.Client,
    method: str,
    url: str,
    limit: int,
    *,
    redirect_ok: bool = False,
    auth: httpx.Auth | None = None,
    **kwargs: Any,
) -> Answer:
    """Send one call on ``client`` (with ``auth``, or the client's own) and read its body up
    to ``limit`` bytes; a failure to get an answer at all is a classified ``ApiError`` that
    names the exception's type only (its text may quote the URL, and so a subject)."""
    try:
        request = client.build_request(method, url, **kwargs)
        response = client.send(
            request, stream=True, auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth
        )
        try:
            content = read_capped(response, method, limit)
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
    return Answer(response.status_code, response.headers, content, response.url)


def raise_for_status(answer: Answer, method: str, *, redirect_ok: bool, now: datetime) -> None:
    """Classify a non-success answer as an ``ApiError``; a success returns quietly."""
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
        return
    if code == 429:
        retry_after = parse_retry_after(answer.headers.get("retry-after"), now)
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
        raise ApiError(ErrorKind.AUTH, "credentials refused", status_code=code, body=answer.text)
    if code == 404:
        raise ApiError(ErrorKind.NOT_FOUND, "not found", status_code=code, body=answer.text)
    raise ApiError(ErrorKind.REJECTED, "request refused", status_code=code, body=answer.text)


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
