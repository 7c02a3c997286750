"""Reading a request to the privacy endpoints: which route, and what a call asks for.

Each parser raises ``ValueError`` with the message for the 400 and never half-reads: a
request is either understood whole or refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qs

from dsar_scheduler.tools.emulator.server import HttpRequest

DELETIONS_PATH = "/api/2/deletions/users"
USER_SEARCH_PATH = "/api/2/usersearch"
USER_ACTIVITY_PATH = "/api/2/useractivity"
MAX_ACTIVITY_LIMIT = 1000


@dataclass(frozen=True)
class DeletionRequest:
    amplitude_ids: tuple[int, ...]
    user_ids: tuple[str, ...]
    requester: str | None
    ignore_invalid: bool
    include_mapped_user_ids: bool
    delete_from_org: bool


@dataclass(frozen=True)
class ActivityRequest:
    amplitude_id: int
    offset: int
    limit: int
    latest_first: bool


def privacy_route(path: str) -> tuple[str, list[str]] | None:
    """(kind, path arguments) of a privacy endpoint, whatever the method; ``None`` if the
    path is not one (the DSAR API's, or unknown)."""
    path = path.rstrip("/")
    if path == DELETIONS_PATH:
        return ("deletions", [])
    if path.startswith(DELETIONS_PATH + "/"):
        parts = path[len(DELETIONS_PATH) + 1 :].split("/")
        return ("deletion", parts) if len(parts) == 2 and all(parts) else ("unknown", [])
    if path == USER_SEARCH_PATH:
        return ("search", [])
    if path == USER_ACTIVITY_PATH:
        return ("activity", [])
    return None


def parse_deletion(request: HttpRequest, max_ids: int) -> DeletionRequest:
    """A POST body, JSON or form-encoded with repeated keys."""
    fields = _form_fields(request.body) if _is_form(request) else _json_fields(request.body)
    amplitude_ids = tuple(_amplitude_id(v) for v in _as_list(fields, "amplitude_ids"))
    user_ids = tuple(_user_id(v) for v in _as_list(fields, "user_ids"))
    total = len(amplitude_ids) + len(user_ids)
    if total == 0:
        raise ValueError("amplitude_ids or user_ids is required")
    if total > max_ids:
        raise ValueError(f"at most {max_ids} ids per request (got {total})")
    requester = fields.get("requester")
    if requester is not None and not isinstance(requester, str):
        raise ValueError("requester must be a string")
    return DeletionRequest(
        amplitude_ids=tuple(dict.fromkeys(amplitude_ids)),
        user_ids=tuple(dict.fromkeys(user_ids)),
        requester=requester,
        ignore_invalid=_flag(fields, "ignore_invalid_id") or _flag(fields, "ignore_invalid_ids"),
        include_mapped_user_ids=_flag(fields, "include_mapped_user_ids"),
        delete_from_org=_flag(fields, "delete_from_org"),
    )


def parse_window(request: HttpRequest, max_days: int) -> tuple[date, date]:
    """``start_day`` and ``end_day`` of the listing: both required, at most ``max_days``."""
    start = _day(query_value(request, "start_day"), "start_day")
    end = _day(query_value(request, "end_day"), "end_day")
    if start > end:
        raise ValueError("start_day must not be after end_day")
    if (end - start).days > max_days:
        raise ValueError(f"the window from start_day to end_day is over {max_days} days")
    return start, end


def parse_path_day(raw: str) -> date:
    return _day(raw, "the job's day")


def parse_activity(request: HttpRequest) -> ActivityRequest:
    user = query_value(request, "user")
    if not user or not user.isdigit():
        raise ValueError("user must be an Amplitude ID")
    offset = _integer(query_value(request, "offset"), "offset", 0)
    limit = _integer(query_value(request, "limit"), "limit", MAX_ACTIVITY_LIMIT)
    if offset < 0 or not 1 <= limit <= MAX_ACTIVITY_LIMIT:
        raise ValueError(f"need offset >= 0 and 1 <= limit <= {MAX_ACTIVITY_LIMIT}")
    direction = query_value(request, "direction") or "latest"
    if direction not in ("latest", "earliest"):
        raise ValueError("direction must be latest or earliest")
    return ActivityRequest(int(user), offset, limit, direction == "latest")


def query_value(request: HttpRequest, name: str) -> str | None:
    values = parse_qs(request.query, keep_blank_values=True).get(name)
    return values[-1] if values else None


def _is_form(request: HttpRequest) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def _json_fields(body: bytes) -> dict[str, Any]:
    try:
        payload: Any = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise ValueError("body must be a JSON object")
    return payload


def _form_fields(body: bytes) -> dict[str, Any]:
    """Repeated keys are lists (``amplitude_ids=1&amplitude_ids=2``); other keys their last
    value. ``amplitude_ids[]`` is read as ``amplitude_ids``."""
    try:
        pairs = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("body is not valid form encoding") from None
    fields: dict[str, Any] = {}
    for key, values in pairs.items():
        name = key.removesuffix("[]")
        if name in ("amplitude_ids", "user_ids"):
            fields[name] = [*fields.get(name, []), *values]
        else:
            fields[name] = values[-1]
    return fields


def _as_list(fields: dict[str, Any], name: str) -> list[Any]:
    value = fields.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list")
    return value


def _amplitude_id(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("amplitude_ids must be positive integers")
    return value


def _user_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("user_ids must be non-empty strings")
    return value


def _flag(fields: dict[str, Any], name: str) -> bool:
    """A boolean as clients send it: ``true``, ``"true"`` or ``"True"`` (and the falses)."""
    value = fields.get(name)
    if value is None or value is False or value in ("false", "False"):
        return False
    if value is True or value in ("true", "True"):
        return True
    raise ValueError(f"{name} must be true or false")


def _day(value: str | None, name: str) -> date:
    if not value or len(value) != 10:
        raise ValueError(f"{name} is required as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not a valid date: {value}") from None


def _integer(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
