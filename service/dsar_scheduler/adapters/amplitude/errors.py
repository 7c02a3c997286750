"""How a call to Amplitude went wrong, classified for the caller, which decides when to retry
(across ticks, never by sleeping in the client)."""

from __future__ import annotations

from enum import StrEnum

#: The most of a body kept in an error: it ends up in reasons and logs.
BODY_EXCERPT = 300


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
        self.body = printable(body[:BODY_EXCERPT])  # it ends up in reasons and logs
        #: A finer reason for metrics (timeout, connection, server_error, malformed, ...).
        self.cause = cause or kind.value

    def __str__(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.kind}: {self.args[0]}{code}"


def printable(text: str) -> str:
    """Drop control characters (NUL cannot be stored in PostgreSQL text; the rest is noise)."""
    return "".join(ch if ch.isprintable() or ch == " " else "?" for ch in text)
