"""Calling the emulator's privacy endpoints from a test: one project's key, on a fake clock.

Every deletion call moves the clock one second on afterwards, so a test stays within the
documented 1 call a second unless it means not to (``tick=False``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.tools.emulator import Emulator, EmulatorConfig, PrivacyConfig
from dsar_scheduler.tools.emulator.population import PopulationSubject

ORG_KEY, ORG_SECRET = "org-key", "org-secret"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DELETIONS = "/api/2/deletions/users"


@contextmanager
def running_emulator(clock: FakeClock, **privacy: Any) -> Iterator[Emulator]:
    """An emulator with seed 1 and these privacy settings; fails the test on an internal
    error of the emulator."""
    config = EmulatorConfig(
        api_key=ORG_KEY, secret_key=ORG_SECRET, seed=1, privacy=PrivacyConfig(**privacy)
    )
    emu = Emulator(config, clock).start()
    try:
        yield emu
    finally:
        errors = emu.internal_errors
        emu.stop()
    assert errors == []


class ProjectApi:
    def __init__(self, emu: Emulator, clock: FakeClock, project_id: int) -> None:
        self.emu, self.clock, self.project_id = emu, clock, project_id
        self.client = httpx.Client(
            base_url=emu.api_origin, auth=emu.privacy.keys_of(project_id), timeout=10
        )

    def close(self) -> None:
        self.client.close()

    def today(self) -> date:
        return self.clock.now().date()

    def post(self, *, tick: bool = True, **fields: Any) -> httpx.Response:
        return self._deletion_call("POST", DELETIONS, tick, json=fields)

    def listing(self, start: date, end: date, *, tick: bool = True) -> httpx.Response:
        params = {"start_day": start.isoformat(), "end_day": end.isoformat()}
        return self._deletion_call("GET", DELETIONS, tick, params=params)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job from 30 days back to 150 ahead (the window stays under 6 months)."""
        today = self.today()
        response = self.listing(today - timedelta(days=30), today + timedelta(days=150))
        assert response.status_code == 200, response.text
        jobs: list[dict[str, Any]] = response.json()
        return jobs

    def delete(self, member: int | str, day: str, *, tick: bool = True) -> httpx.Response:
        return self._deletion_call("DELETE", f"{DELETIONS}/{member}/{day}", tick)

    def _deletion_call(self, method: str, url: str, tick: bool, **options: Any) -> httpx.Response:
        try:
            return self.client.request(method, url, **options)
        finally:
            if tick:
                self.clock.advance(1)

    def search(self, user: str | int) -> dict[str, Any]:
        response = self.client.get("/api/2/usersearch", params={"user": str(user)})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def activity(self, user: int | str, **params: Any) -> httpx.Response:
        return self.client.get("/api/2/useractivity", params={"user": str(user), **params})


def pick(
    emu: Emulator,
    project_id: int,
    *,
    merged: bool | None = None,
    reingests: bool | None = None,
    skip: int = 0,
) -> PopulationSubject:
    """A known user with data in the project (with merged IDs or not, returning or not)."""
    found = [
        s
        for s in emu.privacy.subjects()
        if project_id in s.projects
        and (merged is None or bool(s.merged_ids) == merged)
        and (reingests is None or s.reingests == reingests)
    ]
    assert len(found) > skip, "the population has no such user: change the settings"
    return found[skip]


def advance_to(clock: FakeClock, day: date, hour: int = 9) -> None:
    clock.set(datetime(day.year, day.month, day.day, hour, tzinfo=UTC))
