"""The emulator's User Privacy (deletion) API over real HTTP, on a fake clock: project keys,
the POST's rules, batching to a ``day``, the job's timeline, DELETE while in staging, and the
per-key limits. These pin what the service's deletion client will meet."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.tools.emulator import Emulator
from tests.support.privacy_emulator import (
    DELETIONS,
    ORG_KEY,
    ORG_SECRET,
    START,
    ProjectApi,
    advance_to,
    pick,
    running_emulator,
)

P1, P2 = 187_520, 187_521


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


def day_of(response: httpx.Response) -> date:
    assert response.status_code == 200, response.text
    return date.fromisoformat(response.json()["day"])


# -- keys --------------------------------------------------------------------------------


def test_a_project_key_is_required_and_selects_the_project(emu: Emulator, p1: ProjectApi) -> None:
    url = emu.api_origin + DELETIONS
    assert httpx.post(url, json={"amplitude_ids": [1]}).status_code == 401
    org_key = httpx.get(emu.api_origin + "/api/2/usersearch?user=x", auth=(ORG_KEY, ORG_SECRET))
    assert org_key.status_code == 401  # the DSAR key is not a project key
    api_key, _ = emu.privacy.keys_of(P1)
    assert httpx.post(url, json={}, auth=(api_key, "wrong")).status_code == 401
    # the project key opens the privacy endpoints, and not the DSAR API
    subject = pick(emu, P1)
    assert p1.post(amplitude_ids=[subject.amplitude_id]).status_code == 200
    dsar = httpx.get(emu.api_base_url + "/1", auth=emu.privacy.keys_of(P1))
    assert dsar.status_code == 401
    assert [j["amplitude_ids"][0]["amplitude_id"] for j in p1.jobs()] == [subject.amplitude_id]
    other = ProjectApi(emu, p1.clock, P2)
    assert other.jobs() == []  # another project's key sees its own jobs only
    other.close()


def test_default_projects_and_keys_are_deterministic(emu: Emulator) -> None:
    keys = emu.privacy.project_keys()
    assert [k.project_id for k in keys] == [187_520, 187_521, 187_522]
    assert keys[0].api_key == "project-187520-api-key"
    assert keys[0].secret_key == "project-187520-secret-key"
    parsed = tomllib.loads(emu.privacy.projects_toml())
    assert parsed["projects"]["187521"] == {
        "api_key": "project-187521-api-key",
        "secret_key": "project-187521-secret-key",
    }


def test_the_standalone_emulator_writes_the_project_keys(tmp_path: Path) -> None:
    keys_file = tmp_path / "projects.toml"
    command = [sys.executable, "-m", "dsar_scheduler.tools.emulator", "--port", "0"]
    command += ["--s3-port", "0", "--write-projects-file", str(keys_file)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        api_url = proc.stdout.readline().split()[-1]
        proc.stdout.readline()
        assert proc.stdout.readline().split()[-1] == str(keys_file)
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
        project = tomllib.loads(keys_file.read_text())["projects"]["187520"]
        origin = api_url.removesuffix("/api/2/dsar/requests")
        auth = (project["api_key"], project["secret_key"])
        found = httpx.get(f"{origin}/api/2/usersearch?user=user-8000001", auth=auth, timeout=5)
        assert found.json()["type"] == "match_user_or_device_id"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# -- the POST ----------------------------------------------------------------------------


def test_more_than_100_ids_is_a_400(emu: Emulator, p1: ProjectApi) -> None:
    many = list(range(1, 101))
    over = p1.post(amplitude_ids=many[:60], user_ids=[f"u{n}" for n in range(41)])
    assert over.status_code == 400 and "at most 100" in over.json()["error"]
    at_limit = p1.post(amplitude_ids=many, ignore_invalid_id=True)
    assert at_limit.status_code == 200 and at_limit.json()["invalid_ids"] == many
    assert p1.post().status_code == 400  # no ids at all


def test_an_unknown_id_without_the_flag_marks_nobody(emu: Emulator, p1: ProjectApi) -> None:
    known = pick(emu, P1)
    refused = p1.post(amplitude_ids=[known.amplitude_id, 5], user_ids=["nobody@example.com"])
    assert refused.status_code == 400
    assert refused.json()["invalid_ids"] == [5, "nobody@example.com"]
    assert p1.jobs() == [] and emu.privacy.deletion_jobs(P1) == []
    assert p1.search(known.user_id)["type"] == "match_user_or_device_id"


@pytest.mark.parametrize(
    "flag",
    [
        {"ignore_invalid_id": True},
        {"ignore_invalid_id": "true"},
        {"ignore_invalid_id": "True"},
        {"ignore_invalid_ids": True},
    ],
)
def test_ignore_invalid_id_marks_the_rest(
    emu: Emulator, p1: ProjectApi, flag: dict[str, Any]
) -> None:
    known = pick(emu, P1)
    answer = p1.post(amplitude_ids=[known.amplitude_id, 5], requester="dsar/1", **flag)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "staging" and body["invalid_ids"] == [5]
    assert body["amplitude_ids"] == [
        {
            "amplitude_id": known.amplitude_id,
            "requested_on_day": START.date().isoformat(),
            "requester": "dsar/1",
        }
    ]


def test_bad_flags_and_bodies_are_400(p1: ProjectApi) -> None:
    assert p1.post(amplitude_ids=[1], ignore_invalid_id="yes").status_code == 400
    assert p1.post(amplitude_ids=["abc"]).status_code == 400
    assert p1.post(amplitude_ids=7).status_code == 400
    assert p1.post(user_ids=[""]).status_code == 400
    raw = p1.client.post(DELETIONS, content=b"not json")
    assert raw.status_code == 400
    assert p1.client.put(DELETIONS, json={}).status_code == 405
    assert p1.client.get(DELETIONS + "/1/2026-01-20/x").status_code == 404


def test_form_encoding_with_repeated_keys(emu: Emulator, p1: ProjectApi) -> None:
    a, b = pick(emu, P1), pick(emu, P1, skip=1)
    form = (
        f"amplitude_ids={a.amplitude_id}&amplitude_ids={b.amplitude_id}"
        "&amplitude_ids=5&requester=form&ignore_invalid_id=True"
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = p1.client.post(DELETIONS, content=form.encode(), headers=headers)
    assert answer.status_code == 200, answer.text
    ids = [e["amplitude_id"] for e in answer.json()["amplitude_ids"]]
    assert ids == [a.amplitude_id, b.amplitude_id] and answer.json()["invalid_ids"] == [5]


def test_a_user_id_stands_for_its_canonical_id_only(emu: Emulator, p1: ProjectApi) -> None:
    subject = pick(emu, P1, merged=True)
    answer = p1.post(user_ids=[subject.user_id], include_mapped_user_ids=True)
    entries = answer.json()["amplitude_ids"]
    assert [(e["amplitude_id"], e["user_id"]) for e in entries] == [
        (subject.amplitude_id, subject.user_id)
    ]
    # merged IDs are marked only when listed themselves
    both = p1.post(amplitude_ids=list(subject.merged_ids), user_ids=[subject.user_id])
    listed = {e["amplitude_id"] for e in both.json()["amplitude_ids"]}
    assert listed == {subject.amplitude_id, *subject.merged_ids}


def test_a_user_in_another_project_only_is_invalid_here(emu: Emulator, p1: ProjectApi) -> None:
    elsewhere = next(s for s in emu.privacy.subjects() if P1 not in s.projects)
    answer = p1.post(user_ids=[elsewhere.user_id], ignore_invalid_id=True)
    assert answer.json()["invalid_ids"] == [elsewhere.user_id]
    assert answer.json()["amplitude_ids"] == []


# -- batching ----------------------------------------------------------------------------


def test_posts_join_the_open_batch_until_its_day_minus_3(
    emu: Emulator, p1: ProjectApi, clock: FakeClock
) -> None:
    a, b, c = (pick(emu, P1, skip=k) for k in range(3))
    first = day_of(p1.post(amplitude_ids=[a.amplitude_id], requester="r1"))
    assert 10 <= (first - START.date()).days <= 13
    advance_to(clock, first - timedelta(days=4))  # the last day the batch is in staging
    assert day_of(p1.post(amplitude_ids=[b.amplitude_id])) == first
    again = p1.post(amplitude_ids=[a.amplitude_id], requester="r2").json()["amplitude_ids"][0]
    assert again == {  # a re-POST of a staged ID returns its existing entry
        "amplitude_id": a.amplitude_id,
        "requested_on_day": START.date().isoformat(),
        "requester": "r1",
    }
    advance_to(clock, first - timedelta(days=3))
    second = day_of(p1.post(amplitude_ids=[c.amplitude_id]))
    assert 10 <= (second - clock.now().date()).days <= 13 and second > first
    jobs = {j["day"]: j for j in p1.jobs()}
    assert jobs[first.isoformat()]["status"] == "submitted"
    assert [e["amplitude_id"] for e in jobs[first.isoformat()]["amplitude_ids"]] == [
        a.amplitude_id,
        b.amplitude_id,
    ]
    assert jobs[second.isoformat()]["status"] == "staging"


def test_batch_days_are_settings(clock: FakeClock) -> None:
    settings = {"batch_delay_days": (2, 2), "staging_cutoff_days": 1, "scrub_delay_days": (0, 0)}
    with running_emulator(clock, **settings) as emu:
        api = ProjectApi(emu, clock, P1)
        day = day_of(api.post(amplitude_ids=[pick(emu, P1).amplitude_id]))
        assert day == START.date() + timedelta(days=2)
        api.close()


# -- the timeline ------------------------------------------------------------------------


def test_the_job_timeline_on_the_clock(emu: Emulator, p1: ProjectApi, clock: FakeClock) -> None:
    subject = pick(emu, P1)
    day = day_of(p1.post(amplitude_ids=[subject.amplitude_id]))
    (job,) = emu.privacy.deletion_jobs(P1)
    scrub = job.active_scrub_done_date
    assert 0 <= (scrub - day).days <= 2 and job.done_on == scrub + timedelta(days=5)
    seen = []
    for offset in range(-4, (job.done_on - day).days + 1):
        advance_to(clock, day + timedelta(days=offset))
        (listed,) = p1.jobs()
        seen.append((offset, listed["status"], listed.get("active_scrub_done_date")))
        found = p1.search(subject.user_id)["type"] != "nomatch"
        assert found == (clock.now().date() < scrub), offset  # gone from the scrub date
    scrub_offset = (scrub - day).days
    for offset, status, scrub_date in seen:
        expected = "staging" if offset < -3 else "submitted"
        if offset >= scrub_offset + 5:
            expected = "done"
        assert status == expected, (offset, seen)
        assert scrub_date == (scrub.isoformat() if offset >= scrub_offset else None)


def test_gone_from_done_is_a_setting(clock: FakeClock) -> None:
    with running_emulator(clock, gone_from="done", scrub_delay_days=(1, 1)) as emu:
        api = ProjectApi(emu, clock, P1)
        subject = pick(emu, P1)
        day = day_of(api.post(amplitude_ids=[subject.amplitude_id]))
        advance_to(clock, day + timedelta(days=5))  # scrubbed, not yet done
        assert api.search(subject.user_id)["type"] == "match_user_or_device_id"
        advance_to(clock, day + timedelta(days=6))
        assert api.search(subject.user_id) == {"matches": [], "type": "nomatch"}
        api.close()


def test_listing_window_rules(p1: ProjectApi, emu: Emulator) -> None:
    today = p1.today()
    assert p1.listing(today, today + timedelta(days=183)).json() == []
    assert p1.listing(today, today + timedelta(days=184)).status_code == 400
    assert p1.listing(today, today - timedelta(days=1)).status_code == 400
    assert p1.client.get(DELETIONS, params={"start_day": today.isoformat()}).status_code == 400
    p1.clock.advance(1)
    day = day_of(p1.post(amplitude_ids=[pick(emu, P1).amplitude_id]))
    assert p1.listing(today, day - timedelta(days=1)).json() == []
    assert len(p1.listing(day, day).json()) == 1


def test_status_case_is_a_setting(clock: FakeClock) -> None:
    with running_emulator(clock, status_case="capitalized") as emu:
        api = ProjectApi(emu, clock, P1)
        answer = api.post(amplitude_ids=[pick(emu, P1).amplitude_id])
        assert answer.json()["status"] == "Staging"
        assert api.jobs()[0]["status"] == "Staging"
        api.close()


# -- DELETE ------------------------------------------------------------------------------


def test_delete_while_staging_then_refused(emu: Emulator, p1: ProjectApi, clock: FakeClock) -> None:
    a, b = pick(emu, P1), pick(emu, P1, skip=1)
    day = day_of(p1.post(amplitude_ids=[a.amplitude_id, b.amplitude_id], requester="r"))
    removed = p1.delete(a.amplitude_id, day.isoformat())
    assert removed.status_code == 200
    assert removed.json() == {
        "amplitude_id": a.amplitude_id,
        "requested_on_day": START.date().isoformat(),
        "requester": "r",
    }
    assert [e["amplitude_id"] for e in p1.jobs()[0]["amplitude_ids"]] == [b.amplitude_id]
    assert p1.delete(a.amplitude_id, day.isoformat()).status_code == 404
    assert p1.delete(b.amplitude_id, "2026-13-01").status_code == 400
    assert p1.search(a.user_id)["type"] == "match_user_or_device_id"
    advance_to(clock, day - timedelta(days=3))
    late = p1.delete(b.user_id, day.isoformat())  # a user ID in the path works too
    assert late.status_code == 400 and "staging" in late.json()["error"]
    assert [e["amplitude_id"] for e in p1.jobs()[0]["amplitude_ids"]] == [b.amplitude_id]


# -- limits ------------------------------------------------------------------------------


def test_more_than_one_call_a_second_is_a_429(
    emu: Emulator, p1: ProjectApi, clock: FakeClock
) -> None:
    subject = pick(emu, P1)
    assert p1.post(amplitude_ids=[subject.amplitude_id], tick=False).status_code == 200
    clock.advance(0.5)
    refused = p1.listing(p1.today(), p1.today(), tick=False)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    other = ProjectApi(emu, clock, P2)  # the limit is per key
    assert other.listing(p1.today(), p1.today(), tick=False).status_code == 200
    other.close()
    clock.advance(0.5)
    assert p1.listing(p1.today(), p1.today(), tick=False).status_code == 200
    assert emu.privacy.rate_limited_count() == 1


def test_more_than_8_in_flight_is_a_429(clock: FakeClock) -> None:
    with running_emulator(clock, deletion_rate_limit=0, deletion_latency_s=0.8) as emu:
        statuses = _concurrent(emu, clock, 9, lambda api: api.listing(START.date(), START.date()))
        assert sorted(statuses) == [200] * 8 + [429]


def _concurrent(emu: Emulator, clock: FakeClock, count: int, call: Any) -> list[int]:
    """``count`` calls sent at once, each on its own connection."""
    apis = [ProjectApi(emu, clock, P1) for _ in range(count)]
    statuses: list[int] = []
    barrier = threading.Barrier(count)

    def one(api: ProjectApi) -> None:
        barrier.wait()
        statuses.append(call(api).status_code)

    threads = [threading.Thread(target=one, args=(api,)) for api in apis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    for api in apis:
        api.close()
    return statuses


# -- faults ------------------------------------------------------------------------------


def test_a_dropped_post_still_marks(emu: Emulator, p1: ProjectApi) -> None:
    subject = pick(emu, P1)
    emu.faults.script("privacy", "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        p1.post(amplitude_ids=[subject.amplitude_id])
    assert [j.amplitude_ids for j in emu.privacy.deletion_jobs(P1)] == [(subject.amplitude_id,)]
    emu.faults.script("privacy", "5xx")
    assert p1.post(amplitude_ids=[pick(emu, P1, skip=1).amplitude_id]).status_code >= 500
    assert emu.privacy.deletion_jobs(P1)[0].amplitude_ids == (subject.amplitude_id,)


def test_delete_from_org_makes_a_job_per_project(emu: Emulator, p1: ProjectApi) -> None:
    everywhere = next(s for s in emu.privacy.subjects() if len(s.projects) == 3)
    answer = p1.post(user_ids=[everywhere.user_id, "nobody"], delete_from_org=True)
    assert answer.status_code == 200
    bodies = answer.json()
    assert [b["app"] for b in bodies] == [187_520, 187_521, 187_522]
    assert all(b["invalid_ids"] == ["nobody"] for b in bodies)
    assert p1.jobs()[0]["app"] == P1
