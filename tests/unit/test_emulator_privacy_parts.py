"""The pure parts of the emulator's privacy side: the population, the deletion book's dates,
the per-key lanes, request parsing and the settings' validation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from dsar_scheduler.tools.emulator.content import file_specs, iter_events, profile_device_id
from dsar_scheduler.tools.emulator.population import Population
from dsar_scheduler.tools.emulator.privacy_config import PrivacyConfig, ProjectKeys
from dsar_scheduler.tools.emulator.privacy_jobs import DeletionBook, NotStaging, status_text
from dsar_scheduler.tools.emulator.privacy_limits import Lane
from dsar_scheduler.tools.emulator.privacy_requests import parse_deletion, parse_window
from dsar_scheduler.tools.emulator.server import HttpRequest

PROJECTS = (187_520, 187_521, 187_522)
TODAY = date(2026, 1, 5)


def population(**settings: Any) -> Population:
    return Population(1, PrivacyConfig(**settings), PROJECTS)


# -- population ----------------------------------------------------------------------------


def test_population_families_make_user_ids_prefixes_of_others() -> None:
    people = population()
    assert len(people.subjects) == 40 + 4 * 2
    head = people.by_user_id("user-8000020")
    assert head is not None
    family = people.with_prefix(head.user_id)
    assert [s.user_id for s in family] == ["user-8000020", "user-80000201", "user-80000202"]
    assert people.with_prefix("nobody") == []


def test_population_draws_are_within_settings() -> None:
    people = population(presence_rate=0.0, merged_rate=1.0, merged_weights=(0, 1))
    assert all(len(s.projects) == 1 and len(s.merged_ids) == 2 for s in people.subjects)
    ids = [a for s in people.subjects for a in (s.amplitude_id, *s.merged_ids)]
    assert len(set(ids)) == len(ids)
    assert all(people.owner_of(a) is s for s in people.subjects for a in s.merged_ids)
    every = population(presence_rate=1.0, merged_rate=0.0, reingest_rate=1.0)
    assert all(s.projects == PROJECTS and not s.merged_ids and s.reingests for s in every.subjects)


def test_reingested_ids_round_trip() -> None:
    people = population()
    subject = people.subjects[7]
    assert people.reingested_id(subject, PROJECTS[0], 0) == subject.amplitude_id
    new_id = people.reingested_id(subject, PROJECTS[2], 3)
    assert people.reingested(new_id) == (subject, PROJECTS[2], 3)
    assert people.owner_of(new_id) is subject
    assert people.reingested(subject.amplitude_id) is None
    assert people.owner_of(5) is None


def test_user_id_format_is_a_setting() -> None:
    people = population(user_id_format="{amplitude_id}@example.com", prefix_family_every=0)
    assert people.subjects[0].user_id == "8000000@example.com"


def test_device_ids_are_the_ones_on_the_events() -> None:
    (spec,) = file_specs(
        seed=1,
        amplitude_id=42,
        user_id="u",
        start=date(2025, 1, 1),
        end=date(2025, 1, 31),
        projects=[PROJECTS[1]],
        events_per_file=(3, 3),
    )
    assert {e["device_id"] for e in iter_events(spec)} == {profile_device_id(1, 42, PROJECTS[1])}


# -- deletion jobs -----------------------------------------------------------------------


def test_batches_timeline_and_removal() -> None:
    book = DeletionBook(1, PrivacyConfig())
    job = book.batch_for(PROJECTS[0], TODAY)
    assert 10 <= (job.day - TODAY).days <= 13
    assert job.staging_until == job.day - timedelta(days=3)
    assert 0 <= (job.scrub_on - job.day).days <= 2
    assert job.done_on == job.scrub_on + timedelta(days=5)
    assert book.batch_for(PROJECTS[0], TODAY) == job  # the same draw until stored
    book.add(job, 7, TODAY, "r")
    assert book.batch_for(PROJECTS[0], job.staging_until - timedelta(days=1)) is job
    assert book.batch_for(PROJECTS[0], job.staging_until) is not job
    assert book.gone_on(PROJECTS[0], 7) == job.scrub_on and book.gone_on(PROJECTS[1], 7) is None
    with pytest.raises(NotStaging):
        book.remove(PROJECTS[0], 7, job.day, job.staging_until)
    removed = book.remove(PROJECTS[0], 7, job.day, TODAY)
    assert removed is not None and removed.requester == "r"
    assert book.gone_on(PROJECTS[0], 7) is None
    assert book.remove(PROJECTS[0], 7, job.day, TODAY) is None


def test_status_spelling() -> None:
    assert status_text("done", "lower", TODAY) == "done"
    assert status_text("done", "capitalized", TODAY) == "Done"
    mixed = {status_text("staging", "mixed", TODAY + timedelta(days=d)) for d in range(2)}
    assert mixed == {"staging", "Staging"}


# -- lanes ---------------------------------------------------------------------------------


def test_a_lane_counts_accepted_calls_in_its_window() -> None:
    lane = Lane("deletion", 1, 1.0, 8)
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    assert lane.enter(t0, 1.0) is None
    lane.leave()
    refusal = lane.enter(t0 + timedelta(seconds=0.2), 1.0)
    assert refusal is not None and refusal.retry_after == 1
    assert lane.enter(t0 + timedelta(seconds=1), 1.0) is None
    hourly = Lane("search", 2, 3_600.0, 10)
    for _ in range(2):
        assert hourly.enter(t0, 1.0) is None
    refusal = hourly.enter(t0 + timedelta(minutes=30), 60.0)
    assert refusal is not None and refusal.retry_after == 30  # 1800 clock s at 60x


def test_a_lane_limits_calls_in_flight() -> None:
    lane = Lane("search", 0, 1.0, 2)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    assert lane.enter(now, 1.0) is None and lane.enter(now, 1.0) is None
    refusal = lane.enter(now, 1.0)
    assert refusal is not None and "in flight" in refusal.message
    lane.leave()
    assert lane.enter(now, 1.0) is None and lane.in_flight == 2


# -- parsing -------------------------------------------------------------------------------


def post(body: bytes, content_type: str = "application/json") -> HttpRequest:
    return HttpRequest("POST", "/", "", {"content-type": content_type}, body)


@pytest.mark.parametrize(
    ("body", "ignore"),
    [
        (b'{"amplitude_ids": [1], "ignore_invalid_id": true}', True),
        (b'{"amplitude_ids": [1], "ignore_invalid_id": "True"}', True),
        (b'{"amplitude_ids": [1], "ignore_invalid_ids": "true"}', True),
        (b'{"amplitude_ids": [1], "ignore_invalid_id": "false"}', False),
        (b'{"amplitude_ids": [1]}', False),
    ],
)
def test_boolean_spellings(body: bytes, ignore: bool) -> None:
    assert parse_deletion(post(body), 100).ignore_invalid is ignore


def test_ids_are_deduplicated_and_counted() -> None:
    ask = parse_deletion(post(b'{"amplitude_ids": [1, "1", 2], "user_ids": ["a", "a"]}'), 100)
    assert (ask.amplitude_ids, ask.user_ids) == ((1, 2), ("a",))
    with pytest.raises(ValueError, match="at most 2"):
        parse_deletion(post(b'{"amplitude_ids": [1, 2], "user_ids": ["a"]}'), 2)
    for bad in (b'{"amplitude_ids": [true]}', b'{"amplitude_ids": [0]}', b"[1]"):
        with pytest.raises(ValueError):
            parse_deletion(post(bad), 100)


def test_form_bodies() -> None:
    form = b"amplitude_ids[]=1&amplitude_ids[]=2&user_ids=a&requester=x&ignore_invalid_id=True"
    ask = parse_deletion(post(form, "application/x-www-form-urlencoded; charset=utf-8"), 100)
    assert (ask.amplitude_ids, ask.user_ids, ask.requester, ask.ignore_invalid) == (
        (1, 2),
        ("a",),
        "x",
        True,
    )


def test_listing_window() -> None:
    def window(query: str) -> tuple[date, date]:
        return parse_window(HttpRequest("GET", "/", query, {}, b""), 183)

    assert window("start_day=2026-01-01&end_day=2026-07-03") == (
        date(2026, 1, 1),
        date(2026, 7, 3),
    )
    for bad in ("start_day=2026-01-01", "start_day=2026-01-01&end_day=2026-07-04", "x=1"):
        with pytest.raises(ValueError):
            window(bad)


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"project_count": 0}, "projects"),
        ({"project_count": 17}, "projects"),
        ({"batch_delay_days": (3, 5)}, "staging_cutoff_days"),
        ({"scrub_delay_days": (2, 1)}, "scrub_delay_days"),
        ({"user_id_format": "user"}, "user_id_format"),
        ({"presence_rate": 1.5}, "presence_rate"),
        ({"status_case": "upper"}, "status_case"),
        ({"search_max_in_flight": 0}, "in-flight"),
        (
            {"projects": (ProjectKeys(1, "k", "s"), ProjectKeys(2, "k", "t"))},
            "api keys must be distinct",
        ),
    ],
)
def test_settings_are_checked(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrivacyConfig(**settings)


def test_projects_can_be_given() -> None:
    keys = (ProjectKeys(5, "a", "b"),)
    assert PrivacyConfig(projects=keys).project_keys(187_520) == keys
    assert [k.project_id for k in PrivacyConfig(project_count=2).project_keys(10)] == [10, 11]
