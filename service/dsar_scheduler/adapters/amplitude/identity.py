"""User Search and User Activity: who a user id (or an Amplitude ID) is in one project.

User Search matches an Amplitude ID, a device id, a user id or a user-id *prefix*; which one
matched is in ``type``, and only an exact match may be acted on (the caller's rule: a prefix
or a shared device can be someone else). User Activity gives the canonical Amplitude ID and
the ones merged into it. Both share 360 calls an hour and 10 at once per project, so the
client asks for as little as it can (one event of activity, not a thousand).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsar_scheduler.adapters.amplitude.answers import Answer
from dsar_scheduler.adapters.amplitude.errors import ApiError, printable
from dsar_scheduler.adapters.amplitude.ids import check_amplitude_id, positive_id
from dsar_scheduler.adapters.amplitude.project_http import ProjectHttp

MATCH_USER_OR_DEVICE = "match_user_or_device_id"
MATCH_AMPLITUDE_ID = "match_amplitude_id"
MATCH_USER_PREFIX = "match_user_prefix"
NO_MATCH = "nomatch"
MATCH_TYPES = frozenset({MATCH_USER_OR_DEVICE, MATCH_AMPLITUDE_ID, MATCH_USER_PREFIX, NO_MATCH})
#: Events asked of User Activity: the identity is in ``userData``, the events are not needed.
ACTIVITY_EVENTS = 1


@dataclass(frozen=True)
class UserMatch:
    user_id: str | None  # None: an anonymous user (no user id set)
    amplitude_id: int


@dataclass(frozen=True)
class UserSearch:
    """``type`` lowercased as sent (one of ``MATCH_TYPES``, or an unknown one passed on)."""

    project: int
    type: str
    matches: tuple[UserMatch, ...]


@dataclass(frozen=True)
class UserActivity:
    """``canonical_amplitude_id`` is ``None`` (and the rest empty) when the project does not
    know ``amplitude_id`` (an empty ``userData``)."""

    project: int
    amplitude_id: int
    canonical_amplitude_id: int | None
    merged_amplitude_ids: tuple[int, ...]
    user_id: str | None

    @property
    def known(self) -> bool:
        return self.canonical_amplitude_id is not None


class IdentityClient:
    """User Search (``DSAR_USER_SEARCH_API_URL``) and User Activity
    (``DSAR_USER_ACTIVITY_API_URL``), each call with its project's key."""

    def __init__(self, search: ProjectHttp, activity: ProjectHttp) -> None:
        self._search = search
        self._activity = activity

    def search_user(self, project: int, user: str) -> UserSearch:
        """Search ``project`` for ``user`` (a user id, or an Amplitude ID as its digits)."""
        if not isinstance(user, str) or not user.strip():
            raise ValueError("the user to search for must be a non-empty string")
        answer = self._search.call(project, "GET", params={"user": user}, sent=[user])
        payload = self._search.json(project, answer)
        try:
            return _search(project, payload)
        except ValueError as exc:
            raise _malformed(self._search, project, answer, exc) from None

    def user_activity(self, project: int, amplitude_id: int) -> UserActivity:
        """The identity of ``amplitude_id`` in ``project``: canonical and merged IDs, user id."""
        check_amplitude_id(amplitude_id)
        params = {"user": str(amplitude_id), "limit": ACTIVITY_EVENTS}
        answer = self._activity.call(project, "GET", params=params, sent=[str(amplitude_id)])
        payload = self._activity.json(project, answer)
        try:
            return _activity(project, amplitude_id, payload)
        except ValueError as exc:
            raise _malformed(self._activity, project, answer, exc) from None

    def close(self) -> None:
        self._search.close()
        self._activity.close()


def _malformed(http: ProjectHttp, project: int, answer: Answer, exc: ValueError) -> ApiError:
    return http.malformed(project, answer, str(exc))


# -- parsing: every ValueError names the field, never the value (it may be personal data) --


def _search(project: int, payload: Any) -> UserSearch:
    if not isinstance(payload, dict):
        raise ValueError("the answer is not a JSON object")
    kind = payload.get("type")
    if not isinstance(kind, str) or not kind.strip():
        raise ValueError("type is missing")
    matches = payload.get("matches")
    if matches is None:
        matches = []
    if not isinstance(matches, list):
        raise ValueError("matches is not a list")
    return UserSearch(
        project=project,
        type=printable(kind.strip().lower())[:40],
        matches=tuple(_match(i, m) for i, m in enumerate(matches)),
    )


def _match(index: int, match: Any) -> UserMatch:
    if not isinstance(match, dict):
        raise ValueError(f"match {index} is not a JSON object")
    amplitude_id = positive_id(match.get("amplitude_id"))
    if amplitude_id is None:
        raise ValueError(f"match {index}: amplitude_id is not a positive integer")
    return UserMatch(_user_id(f"match {index}", match.get("user_id")), amplitude_id)


def _activity(project: int, amplitude_id: int, payload: Any) -> UserActivity:
    if not isinstance(payload, dict):
        raise ValueError("the answer is not a JSON object")
    data = payload.get("userData")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("userData is not a JSON object")
    canonical_id = _canonical(amplitude_id, data)
    merged = data.get("merged_amplitude_ids")
    if merged is None:
        merged = []
    if not isinstance(merged, list):
        raise ValueError("userData: merged_amplitude_ids is not a list")
    merged_ids = tuple(positive_id(m) for m in merged)
    if any(m is None for m in merged_ids):
        raise ValueError("userData: merged_amplitude_ids holds a value that is not an id")
    return UserActivity(
        project=project,
        amplitude_id=amplitude_id,
        canonical_amplitude_id=canonical_id,
        merged_amplitude_ids=tuple(m for m in merged_ids if m is not None),
        user_id=_user_id("userData", data.get("user_id")),
    )


def _canonical(amplitude_id: int, data: dict[str, Any]) -> int | None:
    """Empty ``userData``: the project does not know the id. Known, with no canonical id
    given: the id asked is its own canonical id."""
    if not data:
        return None
    canonical = data.get("canonical_amplitude_id")
    if canonical in (None, ""):
        return amplitude_id
    canonical_id = positive_id(canonical)
    if canonical_id is None:
        raise ValueError("userData: canonical_amplitude_id is not a positive integer")
    return canonical_id


def _user_id(where: str, value: Any) -> str | None:
    """A user id as sent (an empty one is no user id; a number is its digits); anything
    else is malformed."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"{where}: user_id is not a string")
    return value
