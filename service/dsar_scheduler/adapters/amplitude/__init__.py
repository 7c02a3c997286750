"""The Amplitude DSAR client and the rules it keeps.

Trust rules live in this package and nowhere else (``trust``): credentials go only to the
configured API host (and the other documented Amplitude hosts of the same region); output
URLs are resolved without following redirects and the pre-signed ``Location`` is fetched by a
client with no credentials (``client``, ``downloads``); every error is classified for the
caller (``errors``, ``answers``), which decides when to retry, across ticks.
"""

from __future__ import annotations

from dsar_scheduler.adapters.amplitude.answers import MAX_BODY_BYTES, parse_retry_after
from dsar_scheduler.adapters.amplitude.client import AmplitudeClient
from dsar_scheduler.adapters.amplitude.downloads import Download
from dsar_scheduler.adapters.amplitude.errors import ApiError, ErrorKind
from dsar_scheduler.adapters.amplitude.status import RemoteStatus, parse_expires, parse_status

__all__ = [
    "MAX_BODY_BYTES",
    "AmplitudeClient",
    "ApiError",
    "Download",
    "ErrorKind",
    "RemoteStatus",
    "parse_expires",
    "parse_retry_after",
    "parse_status",
]
