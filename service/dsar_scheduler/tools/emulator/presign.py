"""Pre-signed download URLs, shaped like S3's SigV4 query auth.

The signature is an HMAC, under a key only the emulator knows, of the path, the issue time and
the lifetime: changing any of them (or the object) makes the S3 origin answer 403, as S3 would.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode

AMZ_DATE = "%Y%m%dT%H%M%SZ"
ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class Verdict:
    """Result of checking a pre-signed query: ``ok``, or an S3 error code and message."""

    ok: bool
    code: str = ""
    message: str = ""


class Presigner:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def sign(self, path: str, issued: datetime, lifetime_s: float) -> str:
        """The query string for ``path``: valid ``lifetime_s`` (whole seconds) from ``issued``."""
        amz_date = issued.astimezone(UTC).strftime(AMZ_DATE)
        expires = str(max(0, math.floor(lifetime_s)))
        return urlencode(
            {
                "X-Amz-Algorithm": ALGORITHM,
                "X-Amz-Credential": f"ASIAEMULATOR/{amz_date[:8]}/us-west-2/s3/aws4_request",
                "X-Amz-Date": amz_date,
                "X-Amz-Expires": expires,
                "X-Amz-SignedHeaders": "host",
                "X-Amz-Signature": self._signature(path, amz_date, expires),
            }
        )

    def verify(self, path: str, query: str, now: datetime) -> Verdict:
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        amz_date = params.get("X-Amz-Date", "")
        expires = params.get("X-Amz-Expires", "")
        signature = params.get("X-Amz-Signature", "")
        if params.get("X-Amz-Algorithm") != ALGORITHM or not (amz_date and expires and signature):
            return Verdict(
                False,
                "AccessDenied",
                "Query-string authentication requires the "
                "X-Amz-Algorithm, X-Amz-Date, X-Amz-Expires and X-Amz-Signature "
                "parameters",
            )
        expected = self._signature(path, amz_date, expires)
        if not hmac.compare_digest(expected, signature):
            return Verdict(
                False,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        issued = datetime.strptime(amz_date, AMZ_DATE).replace(tzinfo=UTC)
        if now > issued + timedelta(seconds=int(expires)):
            return Verdict(False, "AccessDenied", "Request has expired")
        return Verdict(True)

    def _signature(self, path: str, amz_date: str, expires: str) -> str:
        message = f"{path}\n{amz_date}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
