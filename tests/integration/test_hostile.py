"""Hostile and malformed input: property tests over queue rows and over the API's answers
(no input crashes a tick or stops other rows from progressing), and the client's rules for
where credentials go and which redirects it follows."""

from __future__ import annotations

import base64
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from dsar_scheduler.adapters.amplitude import AmplitudeClient, ApiError, ErrorKind
from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.core.states import State
from dsar_scheduler.runtime import operations
from dsar_scheduler.runtime.migrate import upgrade
from tests.support.faultkit import Tap, swap_client
from tests.support.harness import Harness, harness

SLOW_JOBS = {"completion_min_s": 30 * 86400, "completion_max_s": 31 * 86400}
#: DSAR_HOSTILE_EXAMPLES=500 for a longer hunt; the default keeps the suite quick.
EXAMPLES = int(os.environ.get("DSAR_HOSTILE_EXAMPLES", "25"))
HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SQL_ISH = [
    "1; DROP TABLE dsar_queue; --",
    "' OR '1'='1",
    "1) UNION SELECT * FROM dsar_api_calls --",
    "$(rm -rf /)",
    "../../etc/passwd",
    "%00",
    "\x00",
    "\uff11\uff12\uff13",  # full-width digits (int() would accept them)
    "123\u200b",
    "0x7B",
    "1e3",
    "  42  ",
    "+42",
    "-0",
    "9" * 400,
]


def _value() -> st.SearchStrategy[Any]:
    """Anything an upstream system (or an attacker with INSERT rights) might put in a
    column of SQLite's dynamically typed queue table."""
    return st.one_of(
        st.none(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=60),
        st.binary(max_size=40),
        st.sampled_from(SQL_ISH),
        st.dates().map(str),
        st.datetimes().map(str),
        st.dates(min_value=date(2024, 1, 1), max_value=date(2025, 12, 31)).map(str),
    )


def _bindable(value: Any) -> Any:
    """What the sqlite3 driver can bind: integers past 64 bits go in as text."""
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return str(value)
    return value


def _insert(h: Harness, row: dict[str, Any]) -> int:
    with h.app.sessions() as session, session.begin():
        queue_id: int = session.execute(
            text(
                "INSERT INTO dsar_queue (amplitude_id, start_date, end_date, external_ref, "
                "requested_by) VALUES (:a, :s, :e, :r, :b) RETURNING id"
            ),
            {k: _bindable(v) for k, v in row.items()},
        ).scalar_one()
    return queue_id


def _request_of(h: Harness, queue_id: int) -> Any:
    with h.app.sessions() as session:
        return session.execute(
            text("SELECT id, state, amplitude_id FROM dsar_requests WHERE queue_id = :q"),
            {"q": queue_id},
        ).one_or_none()


def _good(n: int) -> dict[str, Any]:
    return {"a": 500_000 + n, "s": "2025-01-01", "e": "2025-01-31", "r": f"GOOD-{n}", "b": None}


def _tidy(h: Harness) -> None:
    """Cancel what is outstanding, so examples do not pile up polls for each other."""
    for request in h.app.ledger.requests.in_state(State.QUEUED, State.SUBMITTED, State.FAILED):
        operations.cancel(h.app.ledger, request.id, h.clock.now(), "test cleanup")


def _assert_clean_tick(h: Harness) -> None:
    report = h.tick()
    assert report.outcome == "ok", report
    assert report.errors == []
    assert h.app.ledger.queue.pending_rows(10) == []  # every row has a verdict


def _check_row(h: Harness, counter: list[int], row: dict[str, Any]) -> None:
    counter[0] += 1
    hostile = _insert(h, row)
    good = _insert(h, _good(counter[0]))
    _assert_clean_tick(h)
    verdict = _request_of(h, hostile)
    assert verdict is not None
    if verdict.state != State.REJECTED:
        assert 0 < int(verdict.amplitude_id) < 2**63
    progressed = _request_of(h, good)
    assert progressed is not None and progressed.state == State.SUBMITTED
    _tidy(h)
    h.clock.advance(timedelta(hours=1))


def test_any_queue_row_gets_a_verdict_and_never_stops_the_others_sqlite(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{tmp_path}/dsar.db"
    upgrade(url)
    counter = [0]
    with harness(url, tmp_path, clock, emulator_options=SLOW_JOBS, policy="baseline") as h:

        @HOSTILE
        @given(
            st.fixed_dictionaries(
                {
                    "a": _value(),
                    "s": _value(),
                    "e": _value(),
                    "r": st.one_of(st.none(), st.text(max_size=400), st.sampled_from(SQL_ISH)),
                    "b": st.one_of(st.none(), st.text(max_size=80), st.binary(max_size=20)),
                }
            )
        )
        def check(row: dict[str, Any]) -> None:
            _check_row(h, counter, row)

        check()
        assert h.emulator.internal_errors == []


@pytest.mark.postgres
def test_any_insertable_queue_row_gets_a_verdict_postgres(
    pg_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """PostgreSQL refuses wrong types at INSERT (upstream sees that error), so the rows
    here are what it accepts: any 64-bit integer, any date, any text without NUL."""
    upgrade(pg_url)
    counter = [0]
    text_value = st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
        max_size=255,
    )
    with harness(pg_url, tmp_path, clock, emulator_options=SLOW_JOBS, policy="baseline") as h:

        @settings(HOSTILE, max_examples=max(5, EXAMPLES // 2))
        @given(
            st.fixed_dictionaries(
                {
                    "a": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
                    "s": st.one_of(st.none(), st.dates()),
                    "e": st.one_of(st.none(), st.dates()),
                    "r": st.one_of(st.none(), text_value, st.sampled_from(SQL_ISH[:6])),
                    "b": st.one_of(st.none(), text_value),
                }
            )
        )
        def check(row: dict[str, Any]) -> None:
            _check_row(h, counter, row)

        check()


# -- the API's answers ---------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_urls = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "{real}",
            "{real}\x00",
            "{api}/../../../../etc/passwd",
            "https://evil.example/api/2/dsar/requests/1/outputs/0",
            "https://amplitude.com.evil.example/x",
            "https://user:pw@amplitude.com/api/2/dsar/requests/1/outputs/0",
            "http://169.254.169.254/latest/meta-data/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "/relative/outputs/0",
            "//evil.example/x",
            "https://amplitude.com:99999/x",
            "https://[::1/x",
        ]
    ),
)
_status_body = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "requestId": _json,
            "status": st.one_of(
                st.sampled_from(["staging", "submitted", "done", "failed", "DONE", "", "gone"]),
                _json,
            ),
            "urls": st.one_of(st.lists(_urls, max_size=4), _json),
            "expires": st.one_of(
                st.sampled_from(
                    [
                        "2026-01-07T09:00:00",
                        "0001-01-01T00:00:00",
                        "9999-12-31T23:59:59",
                        "2026-01-07T09:00:00+14:00",
                        "2026-13-45T99:99:99",
                        "yesterday",
                    ]
                ),
                st.datetimes().map(lambda d: d.isoformat()),
                _json,
            ),
            "failReason": st.one_of(st.text(max_size=60), _json),
        },
    ),
)


def _fill(value: Any, real: str, api: str) -> Any:
    if isinstance(value, str):
        return value.replace("{real}", real).replace("{api}", api)
    if isinstance(value, list):
        return [_fill(v, real, api) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, real, api) for k, v in value.items()}
    return value


def test_any_status_answer_leaves_the_tick_and_the_other_requests_alone(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{tmp_path}/dsar.db"
    upgrade(url)
    victim: dict[str, Any] = {}
    downloads = Tap()

    def rewrite(_request: httpx.Request, body: dict[str, Any]) -> Any:
        if body.get("requestId") == victim.get("remote"):
            return victim["body"]
        return None

    tap = Tap(rewrite=rewrite)
    with harness(url, tmp_path, clock, emulator_options=SLOW_JOBS, policy="baseline") as h:
        swap_client(h.app, tap, download_transport=downloads)
        api = h.emulator.api_base_url
        n = [0]

        @HOSTILE
        @given(_status_body)
        def check(body: Any) -> None:
            n[0] += 1
            for k in (0, 1):
                h.enqueue(600_000 + 2 * n[0] + k, "2025-01-01", "2025-01-31")
            h.tick()
            mine = h.app.ledger.requests.in_state(State.SUBMITTED)[-2:]
            assert len(mine) == 2
            target, bystander = mine
            assert target.remote_request_id is not None
            real = f"{api}/{target.remote_request_id}/outputs/0"
            victim.update(remote=target.remote_request_id, body=_fill(body, real, api))
            h.clock.advance(timedelta(minutes=30))
            _assert_clean_tick(h)
            after = h.app.ledger.requests.get(bystander.id)
            assert after is not None and after.polls == 1 and after.errors == 0
            hit = h.app.ledger.requests.get(target.id)
            assert hit is not None and hit.state in {
                State.SUBMITTED,
                State.DONE,
                State.FETCHING,
                State.STORED,
                State.FAILED,
                State.DEAD,
                State.SUBMITTING,  # failed, then resubmitted in the same tick
            }
            _tidy(h)
            h.clock.advance(timedelta(hours=1))

        check()
        api_origin = httpx.URL(api)
        for request in tap.seen:  # every credentialed call went to the configured API origin
            assert (request.url.host, request.url.port) == (api_origin.host, api_origin.port)
        for request in downloads.seen:
            assert "authorization" not in request.headers
        assert h.emulator.internal_errors == []


# -- where credentials go, which redirects are followed ------------------------------------

BASE = "https://amplitude.com/api/2/dsar/requests"
AUTH = "Basic " + base64.b64encode(b"key:secret").decode()


def _client(
    api: httpx.MockTransport, s3: httpx.MockTransport | None = None, base: str = BASE
) -> AmplitudeClient:
    return AmplitudeClient(
        base,
        "key",
        "secret",
        allow_http=base.startswith("http:"),
        transport=api,
        download_transport=s3 or httpx.MockTransport(lambda _: httpx.Response(200)),
    )


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://bucket.s3.amazonaws.com/f", "refusing plain http"),
        ("ftp://bucket/f", "refusing a ftp URL"),
        ("file:///etc/passwd", "refusing a file URL"),
        ("data:text/plain,hello", "refusing a data URL"),
        ("javascript:alert(1)", "refusing a javascript URL"),
        ("https://user:pw@bucket.s3.amazonaws.com/f", "user name or password"),
        ("https://bucket.s3.amazonaws.com:99999/f", "unparseable"),
    ],
)
def test_redirects_only_to_https_with_a_clear_error(location: str, message: str) -> None:
    c = _client(httpx.MockTransport(lambda _: httpx.Response(302, headers={"Location": location})))
    with pytest.raises(ApiError) as info:
        c.resolve_output(f"{BASE}/1/outputs/0")
    assert info.value.kind is ErrorKind.UNTRUSTED_URL
    assert message in str(info.value)


def test_with_allow_http_plain_http_goes_only_to_the_configured_host() -> None:
    base = "http://127.0.0.1:8081/api/2/dsar/requests"
    for location, ok in [
        ("http://127.0.0.1:8082/bucket/1/0.json.gz?sig=1", True),  # the emulator's S3 port
        ("http://10.0.0.7:8082/bucket/1/0.json.gz", False),
        ("http://evil.example/f", False),
        ("https://bucket.s3.amazonaws.com/f", True),
    ]:
        c = _client(
            httpx.MockTransport(
                lambda _, loc=location: httpx.Response(302, headers={"Location": loc})
            ),
            base=base,
        )
        if ok:
            assert c.resolve_output(f"{base}/1/outputs/0") == location
        else:
            with pytest.raises(ApiError, match="only to the configured API host"):
                c.resolve_output(f"{base}/1/outputs/0")


def test_a_status_or_submit_redirect_is_not_followed() -> None:
    seen: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "https://evil.example/steal"})

    c = _client(httpx.MockTransport(api))
    for call in (lambda: c.status(5), lambda: c.submit(5, date(2025, 1, 1), date(2025, 1, 2))):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.cause == "redirect" and "evil.example" in str(info.value)
    assert {r.url.host for r in seen} == {"amplitude.com"}


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/api/2/dsar/requests/1/outputs/0",
        "https://amplitude.com.evil.example/api/2/dsar/requests/1/outputs/0",
        "https://attacker@amplitude.com/api/2/dsar/requests/1/outputs/0",
        "https://amplitude.com:8443/api/2/dsar/requests/1/outputs/0",
        "http://amplitude.com/api/2/dsar/requests/1/outputs/0",
        "https://analytics.eu.amplitude.com/api/2/dsar/requests/1/outputs/0",
    ],
)
def test_an_output_url_naming_another_host_gets_no_request_at_all(url: str) -> None:
    seen: list[httpx.Request] = []
    c = _client(httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(302)))  # type: ignore[func-returns-value]
    with pytest.raises(ApiError) as info:
        c.resolve_output(url)
    assert info.value.kind is ErrorKind.UNTRUSTED_URL
    assert seen == []


_hosts = st.sampled_from(
    [
        "amplitude.com",
        "analytics.amplitude.com",
        "analytics.eu.amplitude.com",
        "evil.example",
        "amplitude.com.evil.example",
        "127.0.0.1",
        "[::1]",
        "bucket.s3.amazonaws.com",
    ]
)
_any_url = st.one_of(
    st.builds(
        lambda scheme, user, host, port, path: f"{scheme}://{user}{host}{port}{path}",
        st.sampled_from(["https", "http", "ftp", "HTTPS", "file", "javascript", ""]),
        st.sampled_from(["", "user@", "user:pw@", "@"]),
        _hosts,
        st.sampled_from(["", ":443", ":80", ":8443", ":0", ":99999", ":abc"]),
        st.text(max_size=20).map(lambda t: "/" + t),
    ),
    st.text(max_size=60),
)


@settings(max_examples=300, deadline=None)
@given(output=_any_url, location=_any_url)
def test_credentials_only_ever_go_to_amplitude_over_https(output: str, location: str) -> None:
    """Whatever URLs a status answer names and wherever they redirect, an Authorization
    header is only ever sent to https://amplitude.com or analytics.amplitude.com (this
    client's region), and the download client never sends one."""
    sent: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request)  # a server sends bytes; any byte may be in a Location
        raw = location.encode("utf-8", "surrogatepass")
        return httpx.Response(302, headers=[(b"Location", raw)])

    downloads: list[httpx.Request] = []

    def s3_answer(request: httpx.Request) -> httpx.Response:
        downloads.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b"x"))

    s3 = httpx.MockTransport(s3_answer)
    c = _client(httpx.MockTransport(api), s3)
    try:
        target = c.resolve_output(output)
        with c.download(target) as download:
            b"".join(download.chunks())
    except ApiError:
        pass
    for request in sent:
        assert request.headers.get("authorization") == AUTH
        assert request.url.scheme == "https"
        assert request.url.host in {"amplitude.com", "analytics.amplitude.com"}
        assert request.url.port in (None, 443)
    for request in downloads:
        assert "authorization" not in request.headers
        assert request.url.scheme == "https"


@pytest.mark.postgres
def test_a_refusal_whose_body_holds_nul_and_escapes_is_recorded_cleanly(
    pg_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """PostgreSQL cannot store NUL in text: a body quoted into a reason is made printable
    first, so the request ends dead with its reason instead of failing every tick."""
    upgrade(pg_url)

    def refuse(request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST":
            return None
        return httpx.Response(400, content=b'{"error": "bad\x00date \x1b[31m\xff"}')

    with harness(pg_url, tmp_path, clock, emulator_options=SLOW_JOBS) as h:
        swap_client(h.app, Tap(replace=refuse))
        h.enqueue(700_001)
        report = h.tick()
        assert report.outcome == "ok" and report.errors == []
        request = h.app.ledger.requests.get(1)
        assert request is not None and request.state == State.DEAD
        assert "Amplitude refused the request (HTTP 400)" in (request.reason or "")
        assert "\x00" not in (request.reason or "") and "bad?date" in (request.reason or "")
