"""The emulator's User Search and User Activity over real HTTP, their shared budget, users
coming back after deletion, and the DSAR API's answer for a known user (by ``userId``, with
merged IDs, and after a deletion)."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.tools.emulator import Emulator
from dsar_scheduler.tools.emulator.population import PopulationSubject
from tests.support.privacy_emulator import (
    ORG_KEY,
    ORG_SECRET,
    START,
    ProjectApi,
    advance_to,
    pick,
    running_emulator,
)

P1, P2, P3 = 187_520, 187_521, 187_522
RANGE = {"startDate": "2025-11-01", "endDate": "2025-12-31"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[Emulator]:
    with running_emulator(clock) as emulator:
        yield emulator


@pytest.fixture
def p1(emu: Emulator, clock: FakeClock) -> Iterator[ProjectApi]:
    api = ProjectApi(emu, clock, P1)
    yield api
    api.close()


def export(emu: Emulator, body: dict[str, Any]) -> list[tuple[int, int, str | None]]:
    """(project, amplitude_id, user_id) of every event a finished DSAR request serves."""
    with httpx.Client(auth=(ORG_KEY, ORG_SECRET), timeout=10) as api:
        response = api.post(emu.api_base_url, json={**body, **RANGE})
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    emu.complete(request_id)
    seen = set()
    for expected in emu.expected_files(request_id):
        data = gzip.decompress(emu.file_bytes(request_id, expected.index))
        for line in data.splitlines():
            event = json.loads(line)
            assert event["app"] == expected.project_id
            seen.add((event["app"], event["amplitude_id"], event["user_id"]))
    return sorted(seen, key=str)


def delete_everywhere(emu: Emulator, clock: FakeClock, ids: list[int], projects: Any) -> None:
    for project_id in projects:
        api = ProjectApi(emu, clock, project_id)
        answer = api.post(amplitude_ids=ids, ignore_invalid_id=True)
        assert answer.status_code == 200, answer.text
        api.close()


# -- User Search -------------------------------------------------------------------------


def test_every_search_type(emu: Emulator, p1: ProjectApi) -> None:
    subject = pick(emu, P1, merged=True)
    record = {"user_id": subject.user_id, "amplitude_id": subject.amplitude_id}
    assert p1.search(subject.user_id) == {"matches": [record], "type": "match_user_or_device_id"}
    assert p1.search(subject.amplitude_id) == {"matches": [record], "type": "match_amplitude_id"}
    merged = p1.search(subject.merged_ids[0])  # a merged ID finds its user
    assert merged == {"matches": [record], "type": "match_amplitude_id"}
    live = emu.privacy.identity(subject, P1)
    assert live is not None
    (device, *_) = user_data(p1, subject.amplitude_id)["device_ids"]
    assert p1.search(device) == {"matches": [record], "type": "match_user_or_device_id"}
    assert p1.search("nobody@example.com") == {"matches": [], "type": "nomatch"}
    assert p1.search(123456789) == {"matches": [], "type": "nomatch"}
    assert p1.client.get("/api/2/usersearch").status_code == 400


def test_a_prefix_search_finds_several_users(emu: Emulator) -> None:
    """Family heads' user IDs are prefixes of their members' (``user-8000000`` of
    ``user-80000001``...): an exact match answers only the head, a bare prefix all."""
    head = emu.privacy.subject("user-8000010")
    members = [s for s in emu.privacy.subjects() if s.user_id.startswith(head.user_id)]
    assert len(members) == 3
    project_id = next(p for p in head.projects if all(p in m.projects for m in members))
    api = ProjectApi(emu, FakeClock(START), project_id)
    exact = api.search(head.user_id)
    assert exact["type"] == "match_user_or_device_id"
    assert [m["user_id"] for m in exact["matches"]] == [head.user_id]
    prefix = api.search("user-800001")
    assert prefix["type"] == "match_user_prefix"
    found = {m["user_id"] for m in prefix["matches"]}
    assert {m.user_id for m in members} <= found and len(found) > 3
    assert all(m["user_id"].startswith("user-800001") for m in prefix["matches"])
    api.close()


def test_an_exact_match_may_list_prefix_matches_too(clock: FakeClock) -> None:
    with running_emulator(clock, exact_search_lists_prefix_matches=True) as emu:
        head = emu.privacy.subject("user-8000010")
        project_id = head.projects[0]
        api = ProjectApi(emu, clock, project_id)
        answer = api.search(head.user_id)
        assert answer["type"] == "match_user_or_device_id"
        assert answer["matches"][0]["user_id"] == head.user_id and len(answer["matches"]) > 1
        api.close()


# -- User Activity -----------------------------------------------------------------------


def user_data(api: ProjectApi, amplitude_id: int) -> dict[str, Any]:
    response = api.activity(amplitude_id)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["userData"]
    return data


def test_user_activity_shows_merged_ids_and_their_events(emu: Emulator, p1: ProjectApi) -> None:
    subject = pick(emu, P1, merged=True)
    answer = p1.activity(subject.merged_ids[-1]).json()
    data = answer["userData"]
    assert data["canonical_amplitude_id"] == subject.amplitude_id
    assert data["merged_amplitude_ids"] == list(subject.merged_ids)
    assert data["user_id"] == subject.user_id
    assert len(data["device_ids"]) == 1 + len(subject.merged_ids)
    events = answer["events"]
    assert {e["amplitude_id"] for e in events} == {subject.amplitude_id, *subject.merged_ids}
    assert {e["user_id"] for e in events if e["amplitude_id"] in subject.merged_ids} == {None}
    assert {e["device_id"] for e in events} <= set(data["device_ids"])
    times = [e["event_time"] for e in events]
    assert times == sorted(times, reverse=True)  # latest first by default


def test_user_activity_paging_and_errors(emu: Emulator, p1: ProjectApi) -> None:
    subject = pick(emu, P1)
    everything = p1.activity(subject.amplitude_id).json()["events"]
    page = p1.activity(subject.amplitude_id, offset=2, limit=3).json()["events"]
    assert page == everything[2:5]
    earliest = p1.activity(subject.amplitude_id, direction="earliest").json()["events"]
    assert [e["uuid"] for e in earliest] == [e["uuid"] for e in reversed(everything)]
    assert p1.activity(subject.amplitude_id, limit=1001).status_code == 400
    assert p1.activity(subject.amplitude_id, direction="sideways").status_code == 400
    assert p1.activity(subject.user_id).status_code == 400
    assert p1.activity(5).json() == {"userData": {}, "events": []}


# -- the search budget -------------------------------------------------------------------


def test_search_and_activity_share_360_an_hour_per_project(
    emu: Emulator, p1: ProjectApi, clock: FakeClock
) -> None:
    subject = pick(emu, P1)
    for n in range(360):
        if n % 2:
            assert p1.client.get("/api/2/usersearch", params={"user": "x"}).status_code == 200
        else:
            assert p1.activity(5).status_code == 200
        if n == 179:
            clock.advance(1_800)  # half the calls half an hour later
    refused = p1.activity(subject.amplitude_id)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1800"  # until the first half leaves the hour
    assert p1.client.get("/api/2/usersearch", params={"user": "x"}).status_code == 429
    other = ProjectApi(emu, clock, P2)
    assert other.search("x")["type"] == "nomatch"  # another project's budget is its own
    other.close()
    assert p1.post(amplitude_ids=[subject.amplitude_id]).status_code == 200  # not deletion's
    clock.advance(1_800)
    assert p1.search(subject.user_id)["type"] == "match_user_or_device_id"
    assert emu.privacy.rate_limited_count() == 2


def test_more_than_10_searches_in_flight_is_a_429(clock: FakeClock) -> None:
    with running_emulator(clock, search_latency_s=0.8) as emu:
        apis = [ProjectApi(emu, clock, P1) for _ in range(11)]
        statuses: list[int] = []
        barrier = threading.Barrier(len(apis))

        def one(api: ProjectApi) -> None:
            barrier.wait()
            statuses.append(api.client.get("/api/2/usersearch", params={"user": "x"}).status_code)

        threads = [threading.Thread(target=one, args=(api,)) for api in apis]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        for api in apis:
            api.close()
        assert sorted(statuses) == [200] * 10 + [429]


# -- after a deletion --------------------------------------------------------------------


def test_a_deleted_user_is_gone_from_search_activity_and_exports(
    emu: Emulator, clock: FakeClock
) -> None:
    subject = next(s for s in emu.privacy.subjects() if {P1, P2} <= set(s.projects))
    delete_everywhere(emu, clock, [subject.amplitude_id], [P1])
    (job,) = emu.privacy.deletion_jobs(P1)
    advance_to(clock, job.active_scrub_done_date)
    api = ProjectApi(emu, clock, P1)
    assert api.search(subject.user_id) == {"matches": [], "type": "nomatch"}
    assert api.activity(subject.amplitude_id).json() == {"userData": {}, "events": []}
    api.close()
    projects = {p for p, _, _ in export(emu, {"amplitudeId": subject.amplitude_id})}
    assert projects == set(subject.projects) - {P1}
    by_user = {p for p, _, _ in export(emu, {"userId": subject.user_id})}
    assert by_user == set(subject.projects) - {P1}


def test_a_returning_user_comes_back_under_a_new_id(clock: FakeClock) -> None:
    with running_emulator(clock, reingest_rate=1.0, reingest_delay_days=1) as emu:
        subject = pick(emu, P1, merged=False)
        delete_everywhere(emu, clock, [subject.amplitude_id], [P1])
        (job,) = emu.privacy.deletion_jobs(P1)
        api = ProjectApi(emu, clock, P1)
        advance_to(clock, job.done_on)
        assert api.search(subject.user_id)["type"] == "nomatch"  # done, not yet back
        advance_to(clock, job.done_on + timedelta(days=1))
        (match,) = api.search(subject.user_id)["matches"]
        new_id = match["amplitude_id"]
        assert match["user_id"] == subject.user_id and new_id != subject.amplitude_id
        assert user_data(api, new_id)["user_id"] == subject.user_id
        assert api.activity(subject.amplitude_id).json()["userData"] == {}
        assert emu.privacy.subject(new_id) is subject
        live = emu.privacy.identity(subject, P1)
        assert live is not None and (live.canonical_id, live.generation) == (new_id, 1)
        exported = export(emu, {"userId": subject.user_id})
        assert (P1, new_id, subject.user_id) in exported
        assert all(a != subject.amplitude_id for p, a, _ in exported if p == P1)
        api.close()


# -- DSAR by user ID -----------------------------------------------------------------------


def test_dsar_by_user_id_exports_merged_ids_under_their_own_ids(emu: Emulator) -> None:
    subject = pick(emu, P1, merged=True)
    exported = export(emu, {"userId": subject.user_id})
    ids = {a for _, a, _ in exported}
    assert ids == {subject.amplitude_id, *subject.merged_ids}
    assert {p for p, _, _ in exported} == set(subject.projects)
    assert {u for _, a, u in exported if a in subject.merged_ids} == {None}
    by_merged = export(emu, {"amplitudeId": subject.merged_ids[0]})
    assert {a for _, a, _ in by_merged} == {subject.merged_ids[0]}


def test_dsar_by_user_id_may_miss_merged_ids(clock: FakeClock) -> None:
    with running_emulator(clock, dsar_user_export_includes_merged=False) as emu:
        subject: PopulationSubject = pick(emu, P1, merged=True)
        exported = export(emu, {"userId": subject.user_id})
        assert {a for _, a, _ in exported} == {subject.amplitude_id}


def test_a_user_deleted_everywhere_exports_nothing(emu: Emulator, clock: FakeClock) -> None:
    subject = pick(emu, P1, merged=False)
    delete_everywhere(emu, clock, [subject.amplitude_id], subject.projects)
    latest = max(
        j.active_scrub_done_date for p in subject.projects for j in emu.privacy.deletion_jobs(p)
    )
    advance_to(clock, latest)
    assert export(emu, {"userId": subject.user_id}) == []


def test_unknown_users_export_as_before(emu: Emulator) -> None:
    exported = export(emu, {"userId": "ann@example.com"})
    assert {u for _, _, u in exported} == {"ann@example.com"}
    assert {p for p, _, _ in exported} == {P1, P2}


def test_same_seed_same_population(clock: FakeClock) -> None:
    with running_emulator(clock) as one, running_emulator(clock) as two:
        assert one.privacy.subjects() == two.privacy.subjects()
    with running_emulator(clock, subject_count=5, prefix_family_every=0) as small:
        assert [s.amplitude_id for s in small.privacy.subjects()] == list(
            range(8_000_000, 8_000_005)
        )
