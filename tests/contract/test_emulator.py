"""The DSAR emulator over real HTTP: contract, lifecycle on a fake clock, budget, faults.

These tests pin what the service's client will meet, so they check the wire (status codes,
headers, bodies), not the emulator's internals.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.tools.emulator import CallRecord, Emulator, EmulatorConfig
from dsar_scheduler.tools.emulator.budget import CostWindow
from dsar_scheduler.tools.emulator.content import (
    FileSpec,
    file_bytes,
    file_specs,
    file_stats,
    iter_file_chunks,
    months_touched,
)

KEY, SECRET = "org-key", "org-secret"
STATUS_FIELDS = {
    "requestId",
    "userId",
    "amplitudeId",
    "startDate",
    "endDate",
    "status",
    "failReason",
    "urls",
    "expires",
}
EVENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
BODY = {"amplitudeId": 123456789, "startDate": "2025-01-15", "endDate": "2025-03-02"}

MakeEmu = Callable[..., Emulator]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))


@pytest.fixture
def make_emu(clock: FakeClock) -> Iterator[MakeEmu]:
    started: list[Emulator] = []

    def make(**options: Any) -> Emulator:
        config = EmulatorConfig(api_key=KEY, secret_key=SECRET, seed=1, **options)
        emu = Emulator(config, clock).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        errors = emu.internal_errors
        emu.stop()
        assert errors == []


@pytest.fixture
def emu(make_emu: MakeEmu) -> Emulator:
    return make_emu()


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    with httpx.Client(auth=(KEY, SECRET), follow_redirects=False, timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def s3() -> Iterator[httpx.Client]:
    """The download side: no credentials at all, like the service's second client."""
    with httpx.Client(follow_redirects=False, timeout=5) as client:
        yield client


def submit(api: httpx.Client, emu: Emulator, body: dict[str, Any] | None = None) -> int:
    response = api.post(emu.api_base_url, json=body or BODY)
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    assert isinstance(request_id, int)
    return request_id


def status(api: httpx.Client, emu: Emulator, request_id: int) -> dict[str, Any]:
    response = api.get(f"{emu.api_base_url}/{request_id}")
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def done_request(api: httpx.Client, emu: Emulator, body: dict[str, Any] | None = None) -> int:
    request_id = submit(api, emu, body)
    emu.complete(request_id)
    return request_id


def presigned(api: httpx.Client, emu: Emulator, request_id: int, n: int = 0) -> str:
    response = api.get(f"{emu.api_base_url}/{request_id}/outputs/{n}")
    assert response.status_code == 302, response.text
    return response.headers["location"]


def with_param(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(params)).geturl()


# -- auth and validation -------------------------------------------------------------------


def test_auth_is_required_and_free(emu: Emulator, s3: httpx.Client) -> None:
    anonymous = s3  # the client without credentials
    assert anonymous.post(emu.api_base_url, json=BODY).status_code == 401
    assert anonymous.get(f"{emu.api_base_url}/53367").status_code == 401
    response = anonymous.get(f"{emu.api_base_url}/53367", auth=(KEY, "wrong"))
    assert response.status_code == 401
    assert "error" in response.json()
    assert [r.status for r in emu.calls()] == [401, 401, 401]
    assert [r.authorization_present for r in emu.calls()] == [False, False, True]
    assert emu.cost_spent_total() == 0
    assert emu.jobs() == {}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"startDate": "2025-01-01", "endDate": "2025-01-31"}).encode(),
        json.dumps({**BODY, "amplitudeId": "123"}).encode(),
        json.dumps({**BODY, "amplitudeId": True}).encode(),
        json.dumps({**BODY, "amplitudeId": -5}).encode(),
        json.dumps({"userId": "", "startDate": "2025-01-01", "endDate": "2025-01-31"}).encode(),
        json.dumps({"amplitudeId": 1, "endDate": "2025-01-31"}).encode(),
        json.dumps({**BODY, "startDate": "2025/01/01"}).encode(),
        json.dumps({**BODY, "startDate": "20250101"}).encode(),
        json.dumps({**BODY, "endDate": "2025-02-30"}).encode(),
        json.dumps({**BODY, "startDate": "2025-04-01"}).encode(),
    ],
)
def test_post_validation(emu: Emulator, api: httpx.Client, body: bytes) -> None:
    response = api.post(
        emu.api_base_url, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
    assert emu.jobs() == {}


def test_post_returns_increasing_ids_and_costs_8(emu: Emulator, api: httpx.Client) -> None:
    first = submit(api, emu)
    second = submit(
        api, emu, {"userId": "ann@example.com", "startDate": "2025-01-01", "endDate": "2025-01-01"}
    )
    assert (first, second) == (53367, 53368)
    assert emu.cost_spent_total() == 16
    assert [r.cost for r in emu.posts()] == [8, 8]


def test_unknown_routes_are_free(emu: Emulator, api: httpx.Client) -> None:
    assert api.get(emu.api_origin + "/api/2/other").status_code == 404
    assert api.get(f"{emu.api_base_url}/1/files").status_code == 404
    assert api.post(f"{emu.api_base_url}/1", json=BODY).status_code == 405
    assert api.get(emu.api_base_url).status_code == 405  # there is no list endpoint
    assert api.get(f"{emu.api_base_url}/99999").status_code == 404  # a DSAR GET: costs 1
    assert emu.cost_spent_total() == 1


# -- lifecycle -----------------------------------------------------------------------------


def test_lifecycle_over_a_fake_clock(emu: Emulator, api: httpx.Client, clock: FakeClock) -> None:
    request_id = submit(api, emu)
    job = emu.job(request_id)
    first = status(api, emu, request_id)
    assert set(first) == STATUS_FIELDS
    assert first == {
        "requestId": request_id,
        "userId": None,
        "amplitudeId": 123456789,
        "startDate": "2025-01-15",
        "endDate": "2025-03-02",
        "status": "staging",
        "failReason": None,
        "urls": [],
        "expires": None,
    }
    clock.set(job.staging_until)
    assert status(api, emu, request_id)["status"] == "submitted"
    clock.set(job.finishes_at - timedelta(microseconds=1))
    assert status(api, emu, request_id)["status"] == "submitted"
    clock.set(job.finishes_at)
    done = status(api, emu, request_id)
    assert done["status"] == "done"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", done["expires"])
    expires = datetime.fromisoformat(done["expires"]).replace(tzinfo=UTC)
    assert expires == (job.finishes_at + timedelta(days=2)).replace(microsecond=0)
    # 2 projects x 3 months (Jan, Feb, Mar) touched by the range, numbered from 0.
    assert done["urls"] == [f"{emu.api_base_url}/{request_id}/outputs/{n}" for n in range(6)]
    assert emu.cost_spent_total() == 8 + 4


def test_completion_delay_and_staging_follow_config(make_emu: MakeEmu, api: httpx.Client) -> None:
    emu = make_emu(completion_min_s=7200, completion_max_s=9000)
    for _ in range(10):
        job = emu.job(submit(api, emu))
        delay = (job.finishes_at - job.created_at).total_seconds()
        assert 7200 <= delay <= 9000
        staging = (job.staging_until - job.created_at).total_seconds()
        assert staging == pytest.approx(min(600, delay * 0.1))


def test_same_seed_same_jobs_and_files(make_emu: MakeEmu, api: httpx.Client) -> None:
    one, two = make_emu(), make_emu()
    a, b = submit(api, one), submit(api, two)
    assert one.job(a).finishes_at == two.job(b).finishes_at
    one.complete(a)
    two.complete(b)
    assert [f.sha256 for f in one.expected_files(a)] == [f.sha256 for f in two.expected_files(b)]


def test_failed_jobs(make_emu: MakeEmu, api: httpx.Client, clock: FakeClock) -> None:
    emu = make_emu(fail_rate=1.0, completion_min_s=3600, completion_max_s=3600)
    request_id = submit(api, emu)
    clock.advance(3600)
    payload = status(api, emu, request_id)
    assert payload["status"] == "failed"
    assert isinstance(payload["failReason"], str) and payload["failReason"]
    assert (payload["urls"], payload["expires"]) == ([], None)
    assert api.get(f"{emu.api_base_url}/{request_id}/outputs/0").status_code == 404


def test_forced_outcomes(emu: Emulator, api: httpx.Client) -> None:
    failing, finishing = submit(api, emu), submit(api, emu)
    emu.fail(failing, "Query timed out")
    emu.complete(finishing)
    assert status(api, emu, failing)["failReason"] == "Query timed out"
    assert status(api, emu, finishing)["status"] == "done"
    emu.complete(failing)  # a forced retry of the outcome replaces it
    assert status(api, emu, failing)["failReason"] is None


def test_user_id_request(emu: Emulator, api: httpx.Client, s3: httpx.Client) -> None:
    body = {"userId": "ann@example.com", "startDate": "2025-02-01", "endDate": "2025-02-28"}
    request_id = done_request(api, emu, body)
    payload = status(api, emu, request_id)
    assert (payload["userId"], payload["amplitudeId"]) == ("ann@example.com", None)
    assert len(payload["urls"]) == 2
    data = s3.get(presigned(api, emu, request_id)).content
    events = [json.loads(line) for line in gzip.decompress(data).splitlines()]
    assert {e["user_id"] for e in events} == {"ann@example.com"}


# -- outputs and the S3 origin ---------------------------------------------------------------


def test_outputs_redirect_to_presigned_s3(
    emu: Emulator, api: httpx.Client, s3: httpx.Client
) -> None:
    request_id = done_request(api, emu)
    expected = emu.expected_files(request_id)
    assert [f.index for f in expected] == list(range(6))
    assert [f.month for f in expected] == ["2025-01"] * 2 + ["2025-02"] * 2 + ["2025-03"] * 2
    for file in expected:
        location = presigned(api, emu, request_id, file.index)
        assert location.startswith(
            f"{emu.s3_origin}/amplitude-dsar-exports/{request_id}/{file.index}.json.gz?"
        )
        query = parse_qs(urlsplit(location).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["X-Amz-Date"] == ["20260105T090000Z"]
        assert query["X-Amz-Expires"] == ["900"]
        assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"][0])
        with s3.stream("GET", location) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/octet-stream"
            assert "content-encoding" not in response.headers
            data = b"".join(response.iter_raw())
        assert int(response.headers["content-length"]) == len(data) == file.size
        assert hashlib.sha256(data).hexdigest() == file.sha256
        events = [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
        assert len(events) == file.events and 5 <= file.events <= 60
        month_start = datetime.strptime(file.month, "%Y-%m").replace(tzinfo=UTC)
        for event in events:
            assert event["amplitude_id"] == 123456789
            assert event["app"] == file.project_id
            assert EVENT_TIME.match(event["event_time"])
            assert event["event_time"][:7] == file.month
            when = datetime.strptime(event["event_time"], "%Y-%m-%d %H:%M:%S.%f")
            assert when.replace(tzinfo=UTC) >= max(month_start, datetime(2025, 1, 15, tzinfo=UTC))
            assert when < datetime(2025, 3, 3)
    s3_calls = emu.calls("s3")
    assert len(s3_calls) == 6 and {c.cost for c in s3_calls} == {0}
    assert emu.cost_spent_total() == 8 + 6


def test_s3_refuses_an_authorization_header(
    emu: Emulator, api: httpx.Client, s3: httpx.Client
) -> None:
    location = presigned(api, emu, done_request(api, emu))
    response = api.get(location)  # the mistake: the credentialed client follows the redirect
    assert response.status_code == 400
    assert "<Code>InvalidArgument</Code>" in response.text
    assert "Only one auth mechanism allowed" in response.text
    assert [c.status for c in emu.s3_calls_with_authorization()] == [400]
    assert s3.get(location).status_code == 200
    assert len(emu.s3_calls_with_authorization()) == 1


def test_tampered_presigned_url_fails(emu: Emulator, api: httpx.Client, s3: httpx.Client) -> None:
    request_id = done_request(api, emu)
    location = presigned(api, emu, request_id)
    for tampered in (
        with_param(location, **{"X-Amz-Expires": "999999"}),
        with_param(location, **{"X-Amz-Signature": "0" * 64}),
        location.replace(f"/{request_id}/0.json.gz", f"/{request_id}/1.json.gz"),
    ):
        response = s3.get(tampered)
        assert response.status_code == 403
        assert "<Code>SignatureDoesNotMatch</Code>" in response.text
    assert s3.get(location.split("?")[0]).status_code == 403


def test_presigned_url_expires(
    emu: Emulator, api: httpx.Client, s3: httpx.Client, clock: FakeClock
) -> None:
    location = presigned(api, emu, done_request(api, emu))
    clock.advance(900)
    assert s3.get(location).status_code == 200
    clock.advance(1)
    response = s3.get(location)
    assert response.status_code == 403
    assert "<Code>AccessDenied</Code>" in response.text and "Request has expired" in response.text


def test_presigned_url_never_outlives_the_result(
    emu: Emulator, api: httpx.Client, clock: FakeClock
) -> None:
    request_id = done_request(api, emu)
    clock.advance(timedelta(days=2) - timedelta(seconds=100))
    query = parse_qs(urlsplit(presigned(api, emu, request_id)).query)
    assert query["X-Amz-Expires"] == ["100"]


def test_results_expire(emu: Emulator, api: httpx.Client, clock: FakeClock) -> None:
    request_id = done_request(api, emu)
    expires = datetime.fromisoformat(status(api, emu, request_id)["expires"]).replace(tzinfo=UTC)
    clock.set(expires)
    presigned(api, emu, request_id)
    clock.advance(1)
    spent = emu.cost_spent_total()
    response = api.get(f"{emu.api_base_url}/{request_id}/outputs/0")
    assert response.status_code == 404
    assert response.json() == {"error": "results expired"}
    assert emu.cost_spent_total() == spent + 1
    assert status(api, emu, request_id)["status"] == "done"


def test_expire_now(emu: Emulator, api: httpx.Client) -> None:
    request_id = done_request(api, emu)
    emu.expire(request_id)
    assert api.get(f"{emu.api_base_url}/{request_id}/outputs/0").status_code == 404


def test_outputs_before_done_and_out_of_range(emu: Emulator, api: httpx.Client) -> None:
    request_id = submit(api, emu)
    assert api.get(f"{emu.api_base_url}/{request_id}/outputs/0").status_code == 404
    emu.complete(request_id)
    assert api.get(f"{emu.api_base_url}/{request_id}/outputs/6").status_code == 404
    assert api.get(f"{emu.api_base_url}/{request_id}/outputs/5").status_code == 302


def test_content_encoding_trap(make_emu: MakeEmu, api: httpx.Client, s3: httpx.Client) -> None:
    emu = make_emu(s3_content_encoding_gzip=True)
    request_id = done_request(api, emu)
    expected = emu.expected_files(request_id)[0]
    with s3.stream("GET", presigned(api, emu, request_id)) as response:
        assert response.headers["content-encoding"] == "gzip"
        raw = b"".join(response.iter_raw())
    assert hashlib.sha256(raw).hexdigest() == expected.sha256
    with s3.stream("GET", presigned(api, emu, request_id)) as response:
        decoded = b"".join(response.iter_bytes())
    assert decoded == gzip.decompress(raw) != raw


def test_uncached_files_stream_the_same_bytes(
    make_emu: MakeEmu, api: httpx.Client, s3: httpx.Client
) -> None:
    cached, streamed = make_emu(), make_emu(cache_files=False)
    a, b = done_request(api, cached), done_request(api, streamed)
    assert cached.expected_files(a) != [] and [f.sha256 for f in cached.expected_files(a)] == [
        f.sha256 for f in streamed.expected_files(b)
    ]
    data = s3.get(presigned(api, streamed, b, 3)).content
    assert hashlib.sha256(data).hexdigest() == streamed.expected_files(b)[3].sha256


def test_date_header_follows_the_clock(emu: Emulator, api: httpx.Client) -> None:
    response = api.get(f"{emu.api_base_url}/1")
    assert response.headers["date"] == "Mon, 05 Jan 2026 09:00:00 GMT"


# -- budget --------------------------------------------------------------------------------


def test_budget_up_to_the_limit_then_429(
    make_emu: MakeEmu, api: httpx.Client, clock: FakeClock
) -> None:
    emu = make_emu(budget_per_hour=20)
    request_id = submit(api, emu)
    for _ in range(12):
        status(api, emu, request_id)
    assert emu.cost_in_window() == 20
    response = api.get(f"{emu.api_base_url}/{request_id}")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3600"
    assert "error" in response.json()
    assert (emu.rate_limited_count(), emu.cost_spent_total()) == (1, 20)
    clock.advance(3599)
    assert api.get(f"{emu.api_base_url}/{request_id}").status_code == 429
    clock.advance(1)
    status(api, emu, request_id)
    assert emu.cost_in_window() == 1


def test_retry_after_counts_until_enough_cost_leaves(
    make_emu: MakeEmu, api: httpx.Client, clock: FakeClock
) -> None:
    emu = make_emu(budget_per_hour=16)
    submit(api, emu)
    clock.advance(600)
    submit(api, emu)
    clock.advance(600)
    response = api.post(emu.api_base_url, json=BODY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(3600 - 1200)


def test_rate_limit_options(make_emu: MakeEmu, api: httpx.Client) -> None:
    emu = make_emu(budget_per_hour=8, send_retry_after=False, charge_rate_limited=True)
    submit(api, emu)
    response = api.get(f"{emu.api_base_url}/1")
    assert response.status_code == 429
    assert "retry-after" not in response.headers
    assert emu.cost_spent_total() == 9


def test_spend_external_shares_the_budget(make_emu: MakeEmu, api: httpx.Client) -> None:
    emu = make_emu(budget_per_hour=100)
    emu.spend_external(95)
    assert api.post(emu.api_base_url, json=BODY).status_code == 429
    assert api.get(f"{emu.api_base_url}/1").status_code == 404  # 1 still fits
    assert (emu.cost_in_window(), emu.cost_spent_total()) == (96, 1)


def test_budget_is_atomic_under_concurrency(make_emu: MakeEmu, api: httpx.Client) -> None:
    emu = make_emu(budget_per_hour=60)
    url = f"{emu.api_base_url}/1"

    def hammer(_: int) -> list[int]:
        return [api.get(url).status_code for _ in range(10)]

    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = [code for batch in pool.map(hammer, range(12)) for code in batch]
    assert (codes.count(404), codes.count(429)) == (60, 60)
    assert emu.cost_in_window() == emu.cost_spent_total() == 60


def test_cost_window_unit() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    window = CostWindow(10)
    window.charge(t0, 6)
    window.charge(t0 + timedelta(minutes=30), 4)
    assert not window.fits(t0 + timedelta(minutes=45), 1)
    assert window.seconds_until_fits(t0 + timedelta(minutes=45), 1) == 15 * 60
    assert window.seconds_until_fits(t0 + timedelta(minutes=45), 7) == 45 * 60
    assert window.spent(t0 + timedelta(hours=1)) == 4
    assert window.spent(t0 + timedelta(minutes=45)) == 10  # asking about later forgot nothing
    assert window.retry_after(t0 + timedelta(minutes=45), 1, clock_speed=60) == 15
    assert window.spent(t0 - timedelta(seconds=1)) == 0


# -- faults --------------------------------------------------------------------------------


def test_scripted_5xx_is_charged_and_not_json(emu: Emulator, api: httpx.Client) -> None:
    emu.faults.script("api", "5xx", count=2)
    for _ in range(2):
        response = api.post(emu.api_base_url, json=BODY)
        assert response.status_code in (500, 502, 503)
        assert response.headers["content-type"] == "text/html"
        with pytest.raises(json.JSONDecodeError):
            response.json()
    assert emu.jobs() == {}  # a failed POST created nothing
    assert submit(api, emu) == 53367
    assert [(c.status >= 500, c.cost, c.fault) for c in emu.posts()] == [
        (True, 8, "5xx"),
        (True, 8, "5xx"),
        (False, 8, None),
    ]
    assert emu.faults.pending() == 0


def test_dropped_post_still_creates_the_job(emu: Emulator, api: httpx.Client) -> None:
    emu.faults.script("api", "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(emu.api_base_url, json=BODY)
    assert list(emu.jobs()) == [53367]  # the id was lost on the way back
    assert [(c.status, c.cost, c.fault) for c in emu.posts()] == [(0, 8, "drop")]
    assert submit(api, emu) == 53368


def test_malformed_status_body(emu: Emulator, api: httpx.Client) -> None:
    request_id = submit(api, emu)
    emu.faults.script("api", "malformed")
    response = api.get(f"{emu.api_base_url}/{request_id}")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert status(api, emu, request_id)["status"] == "staging"
    assert emu.cost_spent_total() == 8 + 2


def test_malformed_waits_for_a_json_call(emu: Emulator, api: httpx.Client) -> None:
    request_id = done_request(api, emu)
    emu.faults.script("api", "malformed")
    presigned(api, emu, request_id)  # a redirect has no JSON to break
    assert emu.faults.pending("api") == 1
    assert api.get(f"{emu.api_base_url}/{request_id}").status_code == 200
    assert emu.faults.pending() == 0


def test_scripted_429_is_not_charged(emu: Emulator, api: httpx.Client) -> None:
    emu.faults.script("api", "429")
    response = api.get(f"{emu.api_base_url}/1")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert emu.cost_spent_total() == 0
    assert emu.rate_limited_count() == 1


def test_torn_download(emu: Emulator, api: httpx.Client, s3: httpx.Client) -> None:
    request_id = done_request(api, emu)
    size = emu.expected_files(request_id)[0].size
    emu.faults.script("s3", "torn")
    received = bytearray()
    with s3.stream("GET", presigned(api, emu, request_id)) as response:
        assert int(response.headers["content-length"]) == size
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                received += chunk
    assert len(received) == size // 2
    assert emu.calls("s3")[-1].fault == "torn"


def test_truncated_gzip_only_the_gzip_check_catches(
    emu: Emulator, api: httpx.Client, s3: httpx.Client
) -> None:
    request_id = done_request(api, emu)
    expected = emu.expected_files(request_id)[0]
    emu.faults.script("s3", "truncated")
    response = s3.get(presigned(api, emu, request_id))
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content) == expected.size // 2
    assert response.content == emu.file_bytes(request_id, 0)[: expected.size // 2]
    with pytest.raises(EOFError):
        gzip.decompress(response.content)


def test_s3_5xx_and_drop(emu: Emulator, api: httpx.Client, s3: httpx.Client) -> None:
    request_id = done_request(api, emu)
    location = presigned(api, emu, request_id)
    emu.faults.script("s3", "5xx")
    emu.faults.script("s3", "drop")
    assert s3.get(location).status_code in (500, 502, 503)
    with pytest.raises(httpx.RemoteProtocolError):
        s3.get(location)
    assert s3.get(location).status_code == 200
    assert emu.cost_spent_total() == 8 + 1


def test_slow_answers_take_real_time(emu: Emulator, api: httpx.Client) -> None:
    emu.faults.set(origin="api", slow_seconds=0.2)
    emu.faults.script("api", "slow")
    started = time.monotonic()
    assert api.get(f"{emu.api_base_url}/1").status_code == 404
    assert time.monotonic() - started >= 0.2
    with pytest.raises(httpx.ReadTimeout):
        emu.faults.script("api", "slow")
        api.get(f"{emu.api_base_url}/1", timeout=0.05)


def test_fault_rates(emu: Emulator, api: httpx.Client, s3: httpx.Client) -> None:
    request_id = done_request(api, emu)
    location = presigned(api, emu, request_id)
    emu.faults.set(http_5xx_rate=1.0)
    assert api.get(f"{emu.api_base_url}/{request_id}").status_code >= 500
    assert s3.get(location).status_code >= 500
    emu.faults.set(http_5xx_rate=0.0, drop_connection_rate=0.5)
    outcomes = []
    for _ in range(30):
        try:
            outcomes.append(api.get(f"{emu.api_base_url}/{request_id}").status_code)
        except httpx.RemoteProtocolError:
            outcomes.append(0)
    assert 0 in outcomes and 200 in outcomes
    emu.faults.clear()
    emu.faults.set(origin="s3", torn_download_rate=1.0)
    assert status(api, emu, request_id)["status"] == "done"  # torn does not apply to the API
    emu.faults.clear()
    assert s3.get(location).status_code == 200


def test_fault_validation(emu: Emulator) -> None:
    with pytest.raises(ValueError):
        emu.faults.script("s3", "malformed")
    with pytest.raises(ValueError):
        emu.faults.script("api", "torn")
    with pytest.raises(TypeError):
        emu.faults.set(nonsense_rate=0.5)
    with pytest.raises(ValueError):
        emu.faults.set(http_5xx_rate=1.5)


def test_call_records(emu: Emulator, api: httpx.Client, s3: httpx.Client) -> None:
    request_id = done_request(api, emu)
    s3.get(presigned(api, emu, request_id))
    assert [f.name for f in fields(CallRecord)][:7] == [
        "at",
        "origin",
        "method",
        "path",
        "status",
        "cost",
        "authorization_present",
    ]
    api_call, output_call, s3_call = emu.calls()
    assert (api_call.origin, api_call.method, api_call.path, api_call.status) == (
        "api",
        "POST",
        "/api/2/dsar/requests",
        202,
    )
    assert (output_call.status, output_call.cost, output_call.authorization_present) == (
        302,
        1,
        True,
    )
    assert (s3_call.origin, s3_call.status, s3_call.authorization_present) == ("s3", 200, False)
    assert s3_call.at == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


# -- content -------------------------------------------------------------------------------


def test_months_touched() -> None:
    assert months_touched(date(2024, 11, 30), date(2025, 2, 1)) == [
        date(2024, 11, 1),
        date(2024, 12, 1),
        date(2025, 1, 1),
        date(2025, 2, 1),
    ]
    assert months_touched(date(2025, 5, 5), date(2025, 5, 5)) == [date(2025, 5, 1)]


def _one_spec(**changes: Any) -> FileSpec:
    options: dict[str, Any] = {
        "seed": 3,
        "amplitude_id": 42,
        "user_id": "user-42",
        "start": date(2025, 6, 1),
        "end": date(2025, 6, 30),
        "projects": [1],
        "events_per_file": (5, 60),
    } | changes
    return file_specs(**options)[0]


def test_files_are_reproducible_and_streamable() -> None:
    spec = _one_spec()
    data = file_bytes(spec)
    assert data == file_bytes(_one_spec())
    assert data != file_bytes(_one_spec(seed=4))
    assert data[4:8] == b"\0\0\0\0"  # gzip mtime 0
    big = _one_spec(events_per_file=(1500, 1500))
    chunks = list(iter_file_chunks(big, chunk_size=2048))
    assert len(chunks) > 2
    stats = file_stats(big)
    assert stats.events == 1500
    assert stats.size == sum(map(len, chunks))
    lines = zlib.decompress(b"".join(chunks), wbits=31).splitlines()
    assert len(lines) == 1500
    assert len({json.loads(line)["$insert_id"] for line in lines}) == 1500


def test_standalone_entry_point() -> None:
    """``python -m dsar_scheduler.tools.emulator`` prints its URLs and stops on SIGTERM."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "dsar_scheduler.tools.emulator",
        "--port",
        "0",
        "--s3-port",
        "0",
    ]
    command += ["--api-key", KEY, "--secret-key", SECRET]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        api_line = proc.stdout.readline()
        s3_line = proc.stdout.readline()
        api_url = api_line.split()[-1]
        assert api_url.endswith("/api/2/dsar/requests")
        assert s3_line.split()[-1].startswith("http://127.0.0.1:")
        response = httpx.post(api_url, json=BODY, auth=(KEY, SECRET), timeout=5)
        assert response.status_code == 202
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
