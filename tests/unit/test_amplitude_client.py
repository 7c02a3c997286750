"""The client's trust rules and error classes, over httpx.MockTransport (no network)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, date, datetime

import httpx
import pytest

from dsar_scheduler.adapters.amplitude import (
    AmplitudeClient,
    ApiError,
    ErrorKind,
    parse_retry_after,
    parse_status,
)

BASE = "https://amplitude.com/api/2/dsar/requests"


def client(
    handler: httpx.MockTransport,
    s3: httpx.MockTransport | None = None,
    base: str = BASE,
    allow_http: bool = False,
) -> AmplitudeClient:
    return AmplitudeClient(
        base,
        "key",
        "secret",
        allow_http=allow_http,
        transport=handler,
        download_transport=s3 or handler,
    )


def test_submit_sends_json_with_basic_auth() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"requestId": 53367})

    assert (
        client(httpx.MockTransport(handle)).submit(5, date(2025, 1, 1), date(2025, 2, 1)) == 53367
    )
    assert seen[0].headers["authorization"].startswith("Basic ")
    assert seen[0].read() == (b'{"amplitudeId":5,"startDate":"2025-01-01","endDate":"2025-02-01"}')


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (httpx.Response(429, headers={"Retry-After": "42"}), ErrorKind.RATE_LIMITED),
        (httpx.Response(503, text="<html>down</html>"), ErrorKind.TRANSIENT),
        (httpx.Response(401), ErrorKind.AUTH),
        (httpx.Response(404), ErrorKind.NOT_FOUND),
        (httpx.Response(400, json={"error": "bad date"}), ErrorKind.REJECTED),
        (httpx.Response(202, text="{not json"), ErrorKind.TRANSIENT),
        (httpx.Response(202, json={"requestId": "x"}), ErrorKind.TRANSIENT),
    ],
)
def test_errors_are_classified(response: httpx.Response, kind: ErrorKind) -> None:
    with pytest.raises(ApiError) as info:
        client(httpx.MockTransport(lambda _: response)).submit(
            1, date(2025, 1, 1), date(2025, 1, 2)
        )
    assert info.value.kind is kind
    if kind is ErrorKind.RATE_LIMITED:
        assert info.value.retry_after == 42


def test_network_errors_are_transient() -> None:
    def boom(_: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    with pytest.raises(ApiError) as info:
        client(httpx.MockTransport(boom)).status(1)
    assert info.value.kind is ErrorKind.TRANSIENT


def test_error_body_is_truncated() -> None:
    body = "x" * 5000
    with pytest.raises(ApiError) as info:
        client(httpx.MockTransport(lambda _: httpx.Response(500, text=body))).status(1)
    assert len(info.value.body) == 300


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now) == 60
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_an_http_date_retry_after_is_read_against_the_injected_clock() -> None:
    answer = httpx.Response(429, headers={"Retry-After": "Thu, 01 Jan 2026 00:01:00 GMT"})
    c = AmplitudeClient(
        BASE,
        "key",
        "secret",
        transport=httpx.MockTransport(lambda _: answer),
        now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ApiError) as info:
        c.status(1)
    assert info.value.kind is ErrorKind.RATE_LIMITED
    assert info.value.retry_after == 60


def test_status_parsing() -> None:
    done = parse_status(
        {
            "requestId": 1,
            "status": "done",
            "urls": [f"{BASE}/1/outputs/0"],
            "expires": "2026-01-07T09:00:00",
            "failReason": None,
        },
        1,
    )
    assert done.expires == datetime(2026, 1, 7, 9, tzinfo=UTC)
    for bad in (
        {"status": "weird"},
        {"status": "done", "urls": [], "expires": "x"},
        {"status": "done", "urls": [1], "expires": "2026-01-01T00:00:00"},
        {"status": "done", "urls": ["u"]},
        [],
        {"status": "done", "urls": ["u"], "expires": "not a date"},
    ):
        with pytest.raises(ValueError):
            parse_status(bad, 1)


def test_output_redirect_is_followed_without_credentials() -> None:
    api_seen: list[httpx.Request] = []
    s3_seen: list[httpx.Request] = []
    payload = gzip.compress(b'{"a":1}\n')

    def api(request: httpx.Request) -> httpx.Response:
        api_seen.append(request)
        return httpx.Response(302, headers={"Location": "https://bucket.s3.amazonaws.com/f?sig=1"})

    def s3(request: httpx.Request) -> httpx.Response:
        s3_seen.append(request)
        return httpx.Response(
            200, stream=httpx.ByteStream(payload), headers={"Content-Encoding": "gzip"}
        )

    c = client(httpx.MockTransport(api), httpx.MockTransport(s3))
    location = c.resolve_output(f"{BASE}/1/outputs/0")
    assert location.startswith("https://bucket.s3.amazonaws.com/")
    with c.download(location) as download:
        body = b"".join(download.chunks())
    assert body == payload  # raw bytes as served, not un-gzipped
    assert "authorization" in api_seen[0].headers
    assert "authorization" not in s3_seen[0].headers


def test_download_chunks_join_small_reads_and_keep_every_byte() -> None:
    body = bytes(range(256)) * 40  # 10,240 bytes, served in reads of 100

    class Trickle(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for i in range(0, len(body), 100):
                yield body[i : i + 100]

    c = client(
        httpx.MockTransport(lambda _: httpx.Response(200)),
        httpx.MockTransport(lambda _: httpx.Response(200, stream=Trickle())),
    )
    with c.download("https://bucket.s3.amazonaws.com/f?sig=1") as download:
        chunks = list(download.chunks(1000))
    assert b"".join(chunks) == body
    assert all(len(chunk) >= 1000 for chunk in chunks[:-1])
    assert len(chunks) == 11  # ten of 1,000 (ten reads each) and the 240 left


def test_download_interrupted_mid_body_is_transient() -> None:
    class Torn(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"x" * 5000
            raise httpx.RemoteProtocolError("peer closed connection")

    c = client(
        httpx.MockTransport(lambda _: httpx.Response(200)),
        httpx.MockTransport(lambda _: httpx.Response(200, stream=Torn())),
    )
    with c.download("https://bucket.s3.amazonaws.com/f?sig=1") as download:
        chunks = download.chunks(1000)
        assert next(chunks) == b"x" * 5000  # what came before the break is passed on
        with pytest.raises(ApiError) as raised:
            next(chunks)
    assert raised.value.kind is ErrorKind.TRANSIENT and raised.value.cause == "connection"


def test_the_other_documented_download_host_is_trusted() -> None:
    c = client(httpx.MockTransport(lambda _: httpx.Response(200)))
    assert c.trusts("https://analytics.amplitude.com/api/2/dsar/requests/1/outputs/0")
    assert not c.trusts("https://analytics.eu.amplitude.com/api/2/dsar/requests/1/outputs/0")
    assert not c.trusts("https://evil.example/api/2/dsar/requests/1/outputs/0")
    assert not c.trusts("http://amplitude.com/api/2/dsar/requests/1/outputs/0")


def test_credentials_never_go_to_an_untrusted_output_host() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "https://x"})

    c = client(httpx.MockTransport(handle))
    with pytest.raises(ApiError) as info:
        c.resolve_output("https://evil.example/api/2/dsar/requests/1/outputs/0")
    assert info.value.kind is ErrorKind.UNTRUSTED_URL
    assert seen == []


def test_plain_http_redirect_is_refused_unless_allowed() -> None:
    c = client(
        httpx.MockTransport(lambda _: httpx.Response(302, headers={"Location": "http://bucket/f"}))
    )
    with pytest.raises(ApiError) as info:
        c.resolve_output(f"{BASE}/1/outputs/0")
    assert info.value.kind is ErrorKind.UNTRUSTED_URL
    with pytest.raises(ApiError):
        c.resolve_output("ftp://amplitude.com/x")


def test_expired_presigned_link_is_its_own_error() -> None:
    c = client(httpx.MockTransport(lambda _: httpx.Response(403, text="<Error>expired")))
    with pytest.raises(ApiError) as info, c.download("https://bucket/f"):
        pass
    assert info.value.kind is ErrorKind.LINK_EXPIRED
