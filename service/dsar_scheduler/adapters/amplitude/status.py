"""What a status answer says about a request, validated before anything trusts it: an
unknown status, a done job with no (or unusable) urls or expiry, is a ``ValueError``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from dsar_scheduler.adapters.amplitude.errors import printable

#: Output URLs per request: about one per month per project (reference/amplitude-api.md).
MAX_URLS = 10_000
MAX_URL_LENGTH = 4096
#: ``expires`` outside these years is not a real expiry (and would overflow date arithmetic).
EXPIRES_YEARS = (2000, 9000)
STATUSES = frozenset({"staging", "submitted", "done", "failed"})


@dataclass(frozen=True)
class RemoteStatus:
    request_id: int
    status: str
    urls: list[str]
    expires: datetime | None
    fail_reason: str | None


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
        fail_reason=printable(str(fail_reason))[:500] if fail_reason else None,
    )


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
