"""The bodies the two origins answer with: JSON from the API, XML errors from S3, and the
HTML a load balancer sends when it fails."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from dsar_scheduler.tools.emulator.server import HttpResponse

_JSON = ("Content-Type", "application/json")
_XML = ("Content-Type", "application/xml")


def json_response(
    status: int, body: dict[str, Any], headers: list[tuple[str, str]] | None = None
) -> HttpResponse:
    return HttpResponse(status, [_JSON, *(headers or [])], json.dumps(body).encode())


def server_error(status: int, *, s3: bool = False) -> HttpResponse:
    """The kind of body a load balancer or S3 sends when it fails: not JSON."""
    if s3 and status != 502:
        code, message = (
            ("SlowDown", "Please reduce your request rate.")
            if status == 503
            else ("InternalError", "We encountered an internal error. Please try again.")
        )
        return s3_error(status, code, message)
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    text = reason.get(status, "Error")
    html = f"<html><head><title>{status} {text}</title></head><body><h1>{text}</h1></body></html>"
    return HttpResponse(status, [("Content-Type", "text/html")], html.encode())


def s3_error(status: int, code: str, message: str) -> HttpResponse:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>EMULATOR</RequestId></Error>"
    )
    return HttpResponse(status, [_XML], body.encode())


def head(chunks: Iterable[bytes], size: int) -> bytes:
    """The first ``size`` bytes of a chunk stream, without reading the rest."""
    out = bytearray()
    for chunk in chunks:
        out += chunk[: size - len(out)]
        if len(out) >= size:
            break
    return bytes(out)
