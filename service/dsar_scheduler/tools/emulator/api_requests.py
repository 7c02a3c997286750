"""Reading a request to the DSAR API: which endpoint, whose credentials, what a POST asks."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from datetime import date
from typing import Any

from dsar_scheduler.tools.emulator.jobs import Subject
from dsar_scheduler.tools.emulator.server import HttpRequest

API_PATH = "/api/2/dsar/requests"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MAX_USER_ID = 1024


def api_route(request: HttpRequest) -> tuple[str, str, str] | None:
    """(kind, request id, output index) of a DSAR endpoint, whatever the method."""
    path = request.path.rstrip("/")
    if path == API_PATH:
        return ("create", "", "")
    if not path.startswith(API_PATH + "/"):
        return None
    parts = path[len(API_PATH) + 1 :].split("/")
    if len(parts) == 1:
        return ("status", parts[0], "")
    if len(parts) == 3 and parts[1] == "outputs":
        return ("output", parts[0], parts[2])
    return None


def output_url(origin: str, request_id: int, n: int) -> str:
    return f"{origin}{API_PATH}/{request_id}/outputs/{n}"


def has_credentials(request: HttpRequest, api_key: str, secret_key: str) -> bool:
    """Basic auth with the org's key and secret, compared in constant time."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    key, _, secret = decoded.partition(":")
    return hmac.compare_digest(key.encode(), api_key.encode()) and (
        hmac.compare_digest(secret.encode(), secret_key.encode())
    )


def parse_create(body: bytes) -> Subject:
    """Validate a POST body; ``ValueError`` carries the message for the 400."""
    try:
        payload: Any = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise ValueError("body must be a JSON object")
    amplitude_id = payload.get("amplitudeId")
    user_id = payload.get("userId")
    if amplitude_id is None and user_id is None:
        raise ValueError("amplitudeId or userId is required")
    if amplitude_id is not None and (
        isinstance(amplitude_id, bool) or not isinstance(amplitude_id, int) or amplitude_id <= 0
    ):
        raise ValueError("amplitudeId must be a positive integer")
    if user_id is not None and (
        not isinstance(user_id, str) or not user_id or len(user_id) > _MAX_USER_ID
    ):
        raise ValueError("userId must be a non-empty string")
    start = _parse_date(payload.get("startDate"), "startDate")
    end = _parse_date(payload.get("endDate"), "endDate")
    if start > end:
        raise ValueError("startDate must not be after endDate")
    return Subject(amplitude_id, user_id, start, end)


def _parse_date(value: Any, name: str) -> date:
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError(f"{name} is required as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not a valid date: {value}") from None
