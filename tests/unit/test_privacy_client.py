"""The project-key client (deletions, User Search, User Activity) over httpx.MockTransport: each
call's method, path, query, key and body; each answer parsed; each error classified without a
word of the body's personal data; the guards that stop a call before it is sent."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import date
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dsar_scheduler.adapters.amplitude import (
    ApiError,
    Cancellation,
    DeletionEntry,
    DeletionJob,
    ErrorKind,
    PrivacyApi,
    PrivacyClient,
    UserMatch,
)
from dsar_scheduler.projects import ProjectKey, Projects

HOST = "https://amplitude.com"
DELETIONS = f"{HOST}/api/2/deletions/users"
SEARCH = f"{HOST}/api/2/usersearch"
ACTIVITY = f"{HOST}/api/2/useractivity"
PROJECTS = Projects(
    (
        ProjectKey(11, SecretStr("key-eleven"), SecretStr("secret-eleven")),
        ProjectKey(22, SecretStr("key-twenty-two"), SecretStr("secret-twenty-two")),
    )
)
EMAIL = "someone@example.com"
SUBJECT = 90_817_263_544
REQUESTER = "dsar-scheduler/req-00000042"
DAY = date(2026, 3, 20)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Answers every request with ``response`` and keeps the requests."""

    def __init__(self, response: httpx.Response | Handler) -> None:
        self.response = response
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if callable(self.response):
            return self.response(request)
        return self.response


def client(handler: Handler, *, base: str = HOST, allow_http: bool = False) -> PrivacyClient:
    return PrivacyClient(
        PROJECTS,
        deletion_url=f"{base}/api/2/deletions/users",
        user_search_url=f"{base}/api/2/usersearch",
        user_activity_url=f"{base}/api/2/useractivity",
        allow_http=allow_http,
        transport=httpx.MockTransport(handler),
    )


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def entry_json(amplitude_id: int = SUBJECT, day: str = "2026-03-08") -> dict[str, Any]:
    return {"amplitude_id": amplitude_id, "requested_on_day": day, "requester": REQUESTER}


# -- the calls -------------------------------------------------------------------------------


def test_delete_users_posts_json_with_the_project_key_and_keeps_the_answer_as_a_receipt() -> None:
    answer = {
        "day": "2026-03-20",
        "status": "Staging",
        "amplitude_ids": [entry_json(), {**entry_json(5), "user_id": EMAIL}],
        "invalid_ids": [123, "ghost"],
    }
    raw = json.dumps(answer).encode()
    rec = Recorder(httpx.Response(200, content=raw))
    api: PrivacyApi = client(rec)
    receipt = api.delete_users(22, [SUBJECT, 5], [EMAIL], REQUESTER)
    (sent,) = rec.seen
    assert (sent.method, str(sent.url)) == ("POST", DELETIONS)
    assert sent.headers["authorization"] == basic("key-twenty-two", "secret-twenty-two")
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content) == {
        "amplitude_ids": [SUBJECT, 5],
        "user_ids": [EMAIL],
        "requester": REQUESTER,
        "ignore_invalid_id": True,
        "ignore_invalid_ids": True,
    }
    assert (receipt.project, receipt.day, receipt.status) == (22, DAY, "staging")
    assert receipt.entries == (
        DeletionEntry(SUBJECT, date(2026, 3, 8), REQUESTER),
        DeletionEntry(5, date(2026, 3, 8), REQUESTER),
    )
    assert receipt.invalid_ids == ("123", "ghost")
    assert receipt.body.raw == raw
    assert receipt.body.sha256 == hashlib.sha256(raw).hexdigest()


def test_each_project_s_calls_carry_that_project_s_key_only() -> None:
    rec = Recorder(httpx.Response(200, json={"type": "nomatch", "matches": []}))
    c = client(rec)
    c.search_user(11, "u1")
    c.search_user(22, "u1")
    assert [r.headers["authorization"] for r in rec.seen] == [
        basic("key-eleven", "secret-eleven"),
        basic("key-twenty-two", "secret-twenty-two"),
    ]


def test_only_user_ids_are_sent_without_an_empty_amplitude_id_list() -> None:
    rec = Recorder(httpx.Response(200, json={"day": "2026-03-20", "status": "staging"}))
    client(rec).delete_users(11, [], ["u-1"], REQUESTER)
    assert set(json.loads(rec.seen[0].content)) == {
        "user_ids",
        "requester",
        "ignore_invalid_id",
        "ignore_invalid_ids",
    }


def test_a_post_whose_every_id_was_invalid_has_no_day() -> None:
    rec = Recorder(httpx.Response(200, json={"amplitude_ids": [], "invalid_ids": [SUBJECT]}))
    receipt = client(rec).delete_users(11, [SUBJECT], [], REQUESTER)
    assert (receipt.day, receipt.status, receipt.entries) == (None, None, ())
    assert receipt.invalid_ids == (str(SUBJECT),)


def test_list_deletions_asks_for_the_window_and_types_every_job() -> None:
    answer = [
        {
            "day": "2026-03-20",
            "status": "Done",
            "amplitude_ids": [entry_json()],
            "active_scrub_done_date": "2026-03-21",
            "app": 22,
        },
        {"day": "2026-04-02", "status": "SUBMITTED", "amplitude_ids": [entry_json(7)]},
        {"day": "2026-04-09", "status": "staging", "active_scrub_done_date": None},
    ]
    raw = json.dumps(answer).encode()
    rec = Recorder(httpx.Response(200, content=raw))
    listing = client(rec).list_deletions(22, date(2026, 3, 1), date(2026, 4, 30))
    (sent,) = rec.seen
    assert (sent.method, sent.url.path) == ("GET", "/api/2/deletions/users")
    assert dict(sent.url.params) == {"start_day": "2026-03-01", "end_day": "2026-04-30"}
    assert sent.headers["authorization"] == basic("key-twenty-two", "secret-twenty-two")
    assert listing.jobs == (
        DeletionJob(
            DAY, "done", (DeletionEntry(SUBJECT, date(2026, 3, 8), REQUESTER),), date(2026, 3, 21)
        ),
        DeletionJob(
            date(2026, 4, 2), "submitted", (DeletionEntry(7, date(2026, 3, 8), REQUESTER),), None
        ),
        DeletionJob(date(2026, 4, 9), "staging", (), None),
    )
    assert (listing.body.raw, listing.body.sha256) == (raw, hashlib.sha256(raw).hexdigest())


def test_an_empty_listing_is_no_jobs() -> None:
    listing = client(Recorder(httpx.Response(200, json=[]))).list_deletions(11, DAY, DAY)
    assert listing.jobs == () and listing.body.raw == b"[]"


def test_cancel_deletion_deletes_the_entry_of_that_day() -> None:
    raw = json.dumps(entry_json()).encode()
    rec = Recorder(httpx.Response(200, content=raw))
    cancelled = client(rec).cancel_deletion(11, SUBJECT, DAY)
    (sent,) = rec.seen
    assert (sent.method, str(sent.url)) == ("DELETE", f"{DELETIONS}/{SUBJECT}/2026-03-20")
    assert sent.headers["authorization"] == basic("key-eleven", "secret-eleven")
    assert cancelled == Cancellation(
        11, DAY, DeletionEntry(SUBJECT, date(2026, 3, 8), REQUESTER), cancelled.body
    )
    assert cancelled.body.raw == raw


def test_search_user_sends_the_user_and_types_the_matches() -> None:
    answer = {
        "type": "match_user_or_device_id",
        "matches": [
            {"user_id": EMAIL, "amplitude_id": SUBJECT},
            {"user_id": None, "amplitude_id": "42"},
            {"user_id": "", "amplitude_id": 43},
        ],
    }
    rec = Recorder(httpx.Response(200, json=answer))
    found = client(rec).search_user(11, EMAIL)
    (sent,) = rec.seen
    assert (sent.method, sent.url.path, dict(sent.url.params)) == (
        "GET",
        "/api/2/usersearch",
        {"user": EMAIL},
    )
    assert sent.headers["authorization"] == basic("key-eleven", "secret-eleven")
    assert (found.project, found.type) == (11, "match_user_or_device_id")
    assert found.matches == (UserMatch(EMAIL, SUBJECT), UserMatch(None, 42), UserMatch(None, 43))


def test_no_match_is_an_empty_search() -> None:
    rec = Recorder(httpx.Response(200, json={"type": "NoMatch", "matches": []}))
    found = client(rec).search_user(11, "nobody")
    assert (found.type, found.matches) == ("nomatch", ())


def test_user_activity_asks_for_one_event_and_reads_the_identity() -> None:
    answer = {
        "userData": {
            "user_id": EMAIL,
            "canonical_amplitude_id": SUBJECT,
            "merged_amplitude_ids": [5, "6"],
            "device_ids": ["d1"],
            "num_events": 12,
        },
        "events": [{"event_type": "x"}],
    }
    rec = Recorder(httpx.Response(200, json=answer))
    activity = client(rec).user_activity(22, 5)
    (sent,) = rec.seen
    assert (sent.method, sent.url.path) == ("GET", "/api/2/useractivity")
    assert dict(sent.url.params) == {"user": "5", "limit": "1"}
    assert sent.headers["authorization"] == basic("key-twenty-two", "secret-twenty-two")
    assert activity.known
    assert (activity.project, activity.amplitude_id) == (22, 5)
    assert (activity.canonical_amplitude_id, activity.merged_amplitude_ids) == (SUBJECT, (5, 6))
    assert activity.user_id == EMAIL


@pytest.mark.parametrize("answer", [{"userData": {}, "events": []}, {"events": []}])
def test_an_unknown_amplitude_id_has_no_identity(answer: dict[str, Any]) -> None:
    activity = client(Recorder(httpx.Response(200, json=answer))).user_activity(11, 5)
    assert not activity.known
    assert (activity.canonical_amplitude_id, activity.merged_amplitude_ids) == (None, ())
    assert activity.user_id is None


def test_a_known_user_with_no_canonical_id_is_its_own_canonical_id() -> None:
    answer = {"userData": {"user_id": "", "num_events": 3}}
    activity = client(Recorder(httpx.Response(200, json=answer))).user_activity(11, 5)
    assert (activity.known, activity.canonical_amplitude_id, activity.user_id) == (True, 5, None)


# -- guards: refused before anything is sent -------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.delete_users(11, list(range(1, 101)), ["u"], REQUESTER), "101 ids"),
        (lambda c: c.delete_users(11, [], [], REQUESTER), "0 ids"),
        (lambda c: c.delete_users(11, [True], [], REQUESTER), "must be an integer"),
        (lambda c: c.delete_users(11, [0], [], REQUESTER), "positive"),
        (lambda c: c.delete_users(11, [2**63], [], REQUESTER), "positive"),
        (lambda c: c.delete_users(11, [], [""], REQUESTER), "non-empty string"),
        (lambda c: c.delete_users(11, [5], [], " "), "requester"),
        (lambda c: c.delete_users(99, [5], [], REQUESTER), "no key for project 99"),
        (lambda c: c.list_deletions(11, date(2026, 1, 1), date(2026, 7, 1)), "180 days"),
        (lambda c: c.list_deletions(11, DAY, date(2026, 3, 19)), "before start_day"),
        (lambda c: c.cancel_deletion(11, -1, DAY), "positive"),
        (lambda c: c.search_user(11, " "), "non-empty"),
        (lambda c: c.search_user(True, "u"), "project id must be an integer"),
        (lambda c: c.user_activity(11, 0), "positive"),
    ],
)
def test_a_call_that_must_not_be_made_is_refused_before_sending(
    call: Callable[[PrivacyClient], object], message: str
) -> None:
    rec = Recorder(httpx.Response(200, json={}))
    with pytest.raises(ValueError, match=message):
        call(client(rec))
    assert rec.seen == []


def test_the_limits_themselves_are_allowed() -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=[] if r.method == "GET" else {}))
    c = client(rec)
    c.delete_users(11, list(range(1, 51)), [f"u{i}" for i in range(50)], REQUESTER)  # 100
    c.list_deletions(11, date(2026, 1, 1), date(2026, 6, 30))  # 180 days
    assert len(json.loads(rec.seen[0].content)["amplitude_ids"]) == 50
    assert dict(rec.seen[1].url.params)["end_day"] == "2026-06-30"


# -- errors: classified, naming the call and the project, never quoting personal data -------

CALLS: dict[str, Callable[[PrivacyClient], object]] = {
    "delete_users": lambda c: c.delete_users(11, [SUBJECT], [EMAIL], REQUESTER),
    "list_deletions": lambda c: c.list_deletions(11, DAY, DAY),
    "cancel_deletion": lambda c: c.cancel_deletion(11, SUBJECT, DAY),
    "search_user": lambda c: c.search_user(11, EMAIL),
    "user_activity": lambda c: c.user_activity(11, SUBJECT),
}
OTHER_EMAIL, OTHER_ID = "other.person@example.org", "123456789012"
PERSONAL = (EMAIL, str(SUBJECT), OTHER_EMAIL, OTHER_ID)
LEAKY = f"unknown ids {EMAIL}, {SUBJECT}; also {OTHER_EMAIL} and {OTHER_ID}"


def assert_no_personal_data(err: ApiError) -> None:
    for text in (str(err), err.body, *map(str, err.args)):
        assert not any(value in text for value in PERSONAL), text


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize(
    ("response", "kind", "retry_after"),
    [
        (httpx.Response(429, headers={"Retry-After": "30"}, text=LEAKY), "rate_limited", 30),
        (httpx.Response(429), "rate_limited", None),
        (httpx.Response(401, text=LEAKY), "auth", None),
        (httpx.Response(403), "auth", None),
        (httpx.Response(400, json={"error": LEAKY}), "rejected", None),
        (httpx.Response(404, text=LEAKY), "not_found", None),
        (httpx.Response(408), "transient", None),
        (httpx.Response(500, text=f"<html>{LEAKY}</html>"), "transient", None),
        (httpx.Response(503), "transient", None),
    ],
)
def test_status_codes_map_to_the_error_kinds(
    name: str, response: httpx.Response, kind: str, retry_after: float | None
) -> None:
    with pytest.raises(ApiError) as info:
        CALLS[name](client(Recorder(response)))
    err = info.value
    assert (err.kind, err.retry_after, err.status_code) == (
        ErrorKind(kind),
        retry_after,
        response.status_code,
    )
    assert "(project 11)" in str(err)
    assert_no_personal_data(err)


def test_a_refusal_keeps_amplitude_s_message_with_the_identifiers_cut_out() -> None:
    with pytest.raises(ApiError) as info:
        CALLS["delete_users"](client(Recorder(httpx.Response(400, json={"error": LEAKY}))))
    assert info.value.kind is ErrorKind.REJECTED
    assert info.value.body == "unknown ids [id], [id]; also [id] and [id]"
    assert str(info.value) == "rejected: deletions POST (project 11): request refused (HTTP 400)"


def test_a_refusal_in_plain_text_is_kept_short_and_scrubbed() -> None:
    text = f"Bad request: {EMAIL} " + "x" * 1000
    with pytest.raises(ApiError) as info:
        CALLS["search_user"](client(Recorder(httpx.Response(400, text=text))))
    assert info.value.body.startswith("Bad request: [id] xxx")
    assert len(info.value.body) == 200


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize(
    ("error", "cause"),
    [(httpx.ConnectError, "connection"), (httpx.ReadTimeout, "timeout")],
)
def test_transport_failures_are_transient_and_do_not_quote_the_url(
    name: str, error: type[httpx.TransportError], cause: str
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error(f"failed on {request.url}", request=request)

    with pytest.raises(ApiError) as info:
        CALLS[name](client(fail))
    assert (info.value.kind, info.value.cause) == (ErrorKind.TRANSIENT, cause)
    assert_no_personal_data(info.value)


MALFORMED: list[tuple[str, Any]] = [
    ("delete_users", f"not json {EMAIL}"),
    ("delete_users", [EMAIL]),
    ("delete_users", {"status": "staging", "amplitude_ids": [entry_json()], "day": "2026-13-01"}),
    (
        "delete_users",
        {"day": "2026-03-20", "status": "staging", "amplitude_ids": [entry_json()]}
        | {"amplitude_ids": [{"amplitude_id": EMAIL, "requested_on_day": "2026-03-08"}]},
    ),
    ("delete_users", {"day": "2026-03-20", "amplitude_ids": [entry_json()]}),
    ("delete_users", {"day": "2026-03-20", "status": "staging", "invalid_ids": EMAIL}),
    ("delete_users", {"day": EMAIL, "status": "staging"}),
    ("list_deletions", {"jobs": [EMAIL]}),
    ("list_deletions", [{"day": EMAIL, "status": "done"}]),
    ("list_deletions", [{"day": "2026-03-20", "status": 5}]),
    ("list_deletions", [{"day": "2026-03-20", "status": "done", "amplitude_ids": EMAIL}]),
    ("list_deletions", [{"day": "2026-03-20", "status": "done", "amplitude_ids": [EMAIL]}]),
    ("list_deletions", [{"day": "2026-03-20", "status": "done", "active_scrub_done_date": 1}]),
    ("list_deletions", [{**entry_json(), "requested_on_day": None}]),
    ("cancel_deletion", {}),
    ("cancel_deletion", {**entry_json(), "requester": [EMAIL]}),
    ("search_user", {"matches": [{"user_id": EMAIL, "amplitude_id": SUBJECT}]}),
    ("search_user", {"type": "match_user_prefix", "matches": {EMAIL: SUBJECT}}),
    ("search_user", {"type": "match_user_prefix", "matches": [{"user_id": [EMAIL]}]}),
    ("search_user", {"type": "x", "matches": [{"user_id": EMAIL, "amplitude_id": -1}]}),
    ("user_activity", {"userData": [EMAIL]}),
    ("user_activity", {"userData": {"canonical_amplitude_id": EMAIL}}),
    ("user_activity", {"userData": {"canonical_amplitude_id": 1, "merged_amplitude_ids": [EMAIL]}}),
    ("user_activity", {"userData": {"canonical_amplitude_id": 1, "merged_amplitude_ids": 5}}),
    ("user_activity", {"userData": {"user_id": {"email": EMAIL}}}),
]


@pytest.mark.parametrize(("name", "body"), MALFORMED)
def test_a_malformed_answer_is_a_clear_error_that_does_not_quote_it(name: str, body: Any) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    with pytest.raises(ApiError) as info:
        CALLS[name](client(Recorder(httpx.Response(200, content=content))))
    assert (info.value.kind, info.value.cause) == (ErrorKind.TRANSIENT, "malformed")
    assert "(project 11)" in str(info.value)
    assert_no_personal_data(info.value)


def test_an_oversized_answer_is_not_read() -> None:
    c = PrivacyClient(
        PROJECTS,
        deletion_url=DELETIONS,
        user_search_url=SEARCH,
        user_activity_url=ACTIVITY,
        transport=httpx.MockTransport(lambda _: httpx.Response(200, json=[entry_json()] * 50)),
        max_body_bytes=1000,
    )
    with pytest.raises(ApiError) as info:
        c.list_deletions(11, DAY, DAY)
    assert (info.value.kind, info.value.cause) == (ErrorKind.TRANSIENT, "oversized")


# -- trust: no redirect followed, no credentials anywhere but the configured endpoint --------


@pytest.mark.parametrize(
    ("location", "kind"),
    [
        ("https://evil.example/collect", ErrorKind.TRANSIENT),
        (DELETIONS + "/elsewhere", ErrorKind.TRANSIENT),
        ("ftp://evil.example/collect", ErrorKind.UNTRUSTED_URL),
        ("https://user:pw@amplitude.com/x", ErrorKind.UNTRUSTED_URL),
    ],
)
@pytest.mark.parametrize("name", list(CALLS))
def test_a_redirect_is_never_followed_so_the_key_goes_nowhere_else(
    name: str, location: str, kind: ErrorKind
) -> None:
    rec = Recorder(httpx.Response(307, headers={"Location": location}))
    with pytest.raises(ApiError) as info:
        CALLS[name](client(rec))
    assert info.value.kind is kind
    assert [r.url.host for r in rec.seen] == ["amplitude.com"]  # one call, to the endpoint


def test_plain_http_only_with_allow_http() -> None:
    with pytest.raises(ApiError) as info:
        client(Recorder(httpx.Response(200, json=[])), base="http://127.0.0.1:8081")
    assert info.value.kind is ErrorKind.UNTRUSTED_URL
    rec = Recorder(httpx.Response(200, json=[]))
    client(rec, base="http://127.0.0.1:8081", allow_http=True).list_deletions(11, DAY, DAY)
    assert str(rec.seen[0].url).startswith("http://127.0.0.1:8081/api/2/deletions/users?")


def test_the_client_s_repr_holds_no_key() -> None:
    text = repr(client(Recorder(httpx.Response(200))))
    assert "key-eleven" not in text and "secret" not in text
