"""Tools for the fault, hostile-input and operations tests: a transport that can rewrite or
replace the API's answers, a storage that fails on demand, metric reads."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from dsar_scheduler.adapters.storage import Storage, StorageError
from dsar_scheduler.adapters.storage.local import _error
from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier, VerifiedFile

Rewrite = Callable[[httpx.Request, dict[str, Any]], dict[str, Any] | None]


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def is_status(request: httpx.Request) -> bool:
    parts = request.url.path.rstrip("/").split("/")
    return request.method == "GET" and parts[-1].isdigit() and parts[-2] == "requests"


class Tap(httpx.BaseTransport):
    """Forwards to the real network, recording every request; ``replace(request)`` may answer
    instead (the call then never reaches the emulator) and ``rewrite(request, body)`` may
    change a status body the emulator sent (the call did reach it, and was charged)."""

    def __init__(
        self,
        replace: Callable[[httpx.Request], httpx.Response | None] | None = None,
        rewrite: Rewrite | None = None,
    ) -> None:
        self.inner = httpx.HTTPTransport()
        self.replace = replace
        self.rewrite = rewrite
        self.seen: list[httpx.Request] = []
        self.after: Callable[[httpx.Request, httpx.Response], None] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.replace is not None:
            answer = self.replace(request)
            if answer is not None:
                return answer
        response = self.inner.handle_request(request)
        if self.rewrite is not None and is_status(request) and response.status_code == 200:
            response.read()
            body = self.rewrite(request, json.loads(response.content))
            if body is not None:
                # json.dumps as Python does it: NaN and Infinity included, as a broken
                # server might send them
                content = json.dumps(body).encode()
                response = httpx.Response(
                    200, headers={"Content-Type": "application/json"}, content=content
                )
        if self.after is not None:
            self.after(request, response)
        return response

    def close(self) -> None:
        self.inner.close()


def infinite_json(counter: list[int], chunk: bytes = b" " * 65536) -> Iterator[bytes]:
    """A status body that never ends (a misbehaving proxy); counts what was read."""
    yield b'{"status": "submitted", "pad": "'
    while True:
        counter[0] += len(chunk)
        yield chunk


class BrokenStorage:
    """Wraps a real storage; while ``failing`` is set, the chosen operations raise the
    ``StorageError`` a backend raises for that trouble."""

    MESSAGES: dict[str, Callable[[Path], StorageError]] = {
        "disk_full": lambda p: _error(OSError(errno.ENOSPC, "No space left"), "writing", p),
        "permission": lambda p: _error(OSError(errno.EACCES, "Permission denied"), "writing", p),
        "s3_down": lambda p: StorageError(
            f"S3 unreachable writing s3://bucket/{p}: EndpointConnectionError"
        ),
    }

    def __init__(self, inner: Storage, trouble: str, where: Iterable[str]) -> None:
        self.inner = inner
        self.description = inner.description
        self.trouble = trouble
        self.where = set(where)
        self.failing = True
        self.failures = 0

    def _maybe_fail(self, operation: str, key: str) -> None:
        if self.failing and operation in self.where:
            self.failures += 1
            raise self.MESSAGES[self.trouble](Path(key))

    def put_verified(
        self, key: str, chunks: Iterable[bytes], verifier: GzipJsonLinesVerifier
    ) -> VerifiedFile:
        self._maybe_fail("put_verified", key)
        return self.inner.put_verified(key, chunks, verifier)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._maybe_fail("put_bytes", key)
        self.inner.put_bytes(key, data)

    def read_bytes(self, key: str) -> bytes:
        return self.inner.read_bytes(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def delete(self, key: str) -> None:
        self._maybe_fail("delete", key)
        self.inner.delete(key)

    def list(self, prefix: str) -> list[str]:
        self._maybe_fail("list", prefix)
        return self.inner.list(prefix)

    def check(self) -> None:
        self._maybe_fail("check", "")
        self.inner.check()

    def cleanup_partials(self) -> int:
        self._maybe_fail("cleanup_partials", "")
        return self.inner.cleanup_partials()


def swap_client(app: Any, transport: httpx.BaseTransport | None = None, **options: Any) -> Any:
    """Give ``app`` a new Amplitude client (same settings) whose API calls go through
    ``transport``; returns the old one, closed."""
    from dsar_scheduler.adapters.amplitude import AmplitudeClient

    s = app.settings
    key, secret = s.require_credentials()
    old = app.client
    app.client = AmplitudeClient(
        s.api_base_url,
        key,
        secret,
        allow_http=s.allow_http,
        timeout=s.http_timeout_seconds,
        download_timeout=s.download_timeout_seconds,
        transport=transport,
        **options,
    )
    old.close()
    return old
