"""What the deletion and identity steps need of Amplitude (``PrivacyApi``), and the client that
provides it over HTTP with each project's key (``PrivacyClient``); the simulator and the tests
may substitute anything with the same methods."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Protocol

import httpx

from dsar_scheduler.adapters.amplitude.identity import IdentityClient, UserActivity, UserSearch
from dsar_scheduler.adapters.amplitude.privacy import (
    Cancellation,
    DeletionClient,
    DeletionListing,
    DeletionReceipt,
)
from dsar_scheduler.adapters.amplitude.project_http import MAX_PROJECT_BODY_BYTES, ProjectHttp
from dsar_scheduler.projects import ProjectKey


class PrivacyApi(Protocol):
    """Every method raises ``ApiError`` (classified) on a failed or unusable call, and
    ``ValueError`` before sending anything for a call that must not be made."""

    def delete_users(
        self, project: int, amplitude_ids: Sequence[int], user_ids: Sequence[str], requester: str
    ) -> DeletionReceipt: ...

    def list_deletions(self, project: int, start_day: date, end_day: date) -> DeletionListing: ...

    def cancel_deletion(self, project: int, amplitude_id: int, day: date) -> Cancellation: ...

    def search_user(self, project: int, user: str) -> UserSearch: ...

    def user_activity(self, project: int, amplitude_id: int) -> UserActivity: ...


def _system_now() -> datetime:
    return datetime.now(UTC)


class PrivacyClient(DeletionClient, IdentityClient):
    """The three project-key endpoints, one process-wide instance (thread-safe)."""

    def __init__(
        self,
        projects: Mapping[int, ProjectKey],
        *,
        deletion_url: str,
        user_search_url: str,
        user_activity_url: str,
        allow_http: bool = False,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        max_body_bytes: int = MAX_PROJECT_BODY_BYTES,
        now: Callable[[], datetime] = _system_now,
    ) -> None:
        def endpoint(name: str, url: str) -> ProjectHttp:
            return ProjectHttp(
                name,
                url,
                projects,
                allow_http=allow_http,
                timeout=timeout,
                transport=transport,
                max_body_bytes=max_body_bytes,
                now=now,
            )

        DeletionClient.__init__(self, endpoint("deletions", deletion_url))
        IdentityClient.__init__(
            self,
            endpoint("usersearch", user_search_url),
            endpoint("useractivity", user_activity_url),
        )

    def __repr__(self) -> str:
        return f"PrivacyClient({self._deletions.base_url!r})"

    def close(self) -> None:
        DeletionClient.close(self)
        IdentityClient.close(self)
