"""The Amplitude DSAR client and the rules it keeps.

Trust rules live in this package and nowhere else (``trust``): credentials go only to the
configured API host (and the other documented Amplitude hosts of the same region); output
URLs are resolved without following redirects and the pre-signed ``Location`` is fetched by a
client with no credentials (``client``, ``downloads``); every error is classified for the
caller (``errors``, ``answers``), which decides when to retry, across ticks.

The project-key APIs (deletion, User Search, User Activity: ``privacy_api``) keep the same
rules with each project's own key (``project_http``), and never quote a body in an error.
"""

from __future__ import annotations

from dsar_scheduler.adapters.amplitude.answers import MAX_BODY_BYTES, parse_retry_after
from dsar_scheduler.adapters.amplitude.client import AmplitudeClient
from dsar_scheduler.adapters.amplitude.downloads import Download
from dsar_scheduler.adapters.amplitude.errors import ApiError, ErrorKind
from dsar_scheduler.adapters.amplitude.identity import UserActivity, UserMatch, UserSearch
from dsar_scheduler.adapters.amplitude.privacy import (
    Cancellation,
    DeletionEntry,
    DeletionJob,
    DeletionListing,
    DeletionReceipt,
)
from dsar_scheduler.adapters.amplitude.privacy_api import PrivacyApi, PrivacyClient
from dsar_scheduler.adapters.amplitude.project_http import Body
from dsar_scheduler.adapters.amplitude.status import RemoteStatus, parse_expires, parse_status

__all__ = [
    "MAX_BODY_BYTES",
    "AmplitudeClient",
    "ApiError",
    "Body",
    "Cancellation",
    "DeletionEntry",
    "DeletionJob",
    "DeletionListing",
    "DeletionReceipt",
    "Download",
    "ErrorKind",
    "PrivacyApi",
    "PrivacyClient",
    "RemoteStatus",
    "UserActivity",
    "UserMatch",
    "UserSearch",
    "parse_expires",
    "parse_retry_after",
    "parse_status",
]
