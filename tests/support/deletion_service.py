"""A service with the emulator's privacy endpoints configured (DSAR_PROJECTS_FILE), on a
shared fake clock, and what deletion tests read back: requests, entries, audit reasons and
the calls the emulator saw."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dsar_scheduler.adapters.clock import FakeClock
from dsar_scheduler.adapters.db import DeletionEntry, Event, QueueRow, Request
from dsar_scheduler.config import load_settings
from dsar_scheduler.core.states import State
from dsar_scheduler.metrics import Metrics
from dsar_scheduler.runtime.app import build_app
from dsar_scheduler.tools.emulator import Emulator, EmulatorConfig, PrivacyConfig
from dsar_scheduler.tools.emulator.calls import CallRecord
from dsar_scheduler.tools.emulator.population import PopulationSubject
from tests.support.harness import Harness
from tests.support.privacy_emulator import DELETIONS, pick

P1 = 187_520
#: Export jobs done within 1-4 h: a test's export finishes within a few hourly ticks.
FAST: dict[str, Any] = {"completion_min_s": 3600, "completion_max_s": 4 * 3600}
#: Deletion jobs on a short timeline, for tests not about the timeline itself (the real one,
#: 10-13 days out and done 5 days after the scrub, is tested in test_deletion_tick.py): a
#: job the next day, done the day after.
QUICK_JOBS: dict[str, Any] = {
    "batch_delay_days": (1, 1),
    "staging_cutoff_days": 0,
    "scrub_delay_days": (0, 0),
    "done_after_scrub_days": 1,
}


@contextmanager
def service(
    database_url: str,
    tmp_path: Path,
    clock: FakeClock,
    emulator_options: dict[str, Any] | None = None,
    **privacy: Any,
) -> Iterator[Harness]:
    """The service with the emulator's projects configured (DSAR_PROJECTS_FILE);
    ``emulator_options``: the emulator's other settings, ``privacy`` its privacy ones."""
    config = EmulatorConfig(
        api_key="test-key",
        secret_key="test-secret-value",
        seed=7,
        privacy=PrivacyConfig(**privacy),
        **(emulator_options or {}),
    )
    with Emulator(config, clock) as emulator:
        projects = tmp_path / "projects.toml"
        projects.write_text(emulator.privacy.projects_toml())
        projects.chmod(0o600)
        origin = emulator.api_origin
        settings = load_settings(
            database_url=database_url,
            storage_url=f"file://{tmp_path}/files",
            api_base_url=emulator.api_base_url,
            deletion_api_url=origin + DELETIONS,
            user_search_api_url=origin + "/api/2/usersearch",
            user_activity_api_url=origin + "/api/2/useractivity",
            projects_file=str(projects),
            allow_http=True,
            AMPLITUDE_API_KEY="test-key",
            AMPLITUDE_SECRET_KEY="test-secret-value",
            http_timeout_seconds=5,
        )
        app = build_app(settings, clock=clock, metrics=Metrics(), rng=random.Random(1))
        try:
            yield Harness(app, emulator, clock, tmp_path / "files")
        finally:
            app.close()
        assert emulator.internal_errors == []


def missing_merged(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> AbstractContextManager[Harness]:
    """The service whose exports by user ID leave the user's merged Amplitude IDs out, so
    that each such export gets supplementary requests (the coverage check's case)."""
    return service(
        database_url,
        tmp_path,
        clock,
        emulator_options=FAST,
        dsar_user_export_includes_merged=False,
    )


def all_requests(h: Harness) -> list[Request]:
    with h.app.sessions() as session:
        return list(session.scalars(select(Request).order_by(Request.id)))


def tick_until_all_stored(h: Harness, hours: int = 72) -> None:
    """Tick hourly until every request is stored (the parents and their supplements)."""
    for _ in range(hours):
        h.tick()
        if all(r.state == State.STORED for r in all_requests(h)):
            return
        h.clock.advance(timedelta(hours=1))
    raise AssertionError([(r.id, r.state, r.reason) for r in all_requests(h)])


def pick_clear(
    h: Harness, *, merged: bool | None, reingests: bool = False, skip: int = 0
) -> PopulationSubject:
    """A user in P1 whose user ID is no prefix of another's (a project without it would
    answer with those others as prefix matches, and hold the request for review); ``skip``
    such users passed over first."""
    users = [s.user_id for s in h.emulator.privacy.subjects()]
    for index in range(len(users)):
        subject = pick(h.emulator, P1, merged=merged, reingests=reingests, skip=index)
        if sum(u.startswith(subject.user_id) for u in users) == 1:
            if skip == 0:
                return subject
            skip -= 1
    raise AssertionError("no such user: change the population settings")


def new_deletion(h: Harness, user_id: str | None, amplitude_id: int | None = None) -> int:
    """A deletion request waiting for its subject to be resolved (as admission leaves it)."""
    now = h.clock.now()
    with h.app.sessions() as session, session.begin():
        queue = QueueRow(user_id=user_id, amplitude_id=amplitude_id, request_type="deletion")
        session.add(queue)
        session.flush()
        request = Request(
            queue_id=queue.id,
            user_id=user_id,
            amplitude_id=amplitude_id,
            request_type="deletion",
            state=State.RESOLVING.value,
            queued_at=now,
            updated_at=now,
        )
        session.add(request)
        session.flush()
        return request.id


def state_of(h: Harness, request_id: int) -> str:
    with h.app.sessions() as session:
        return str(session.scalar(select(Request.state).where(Request.id == request_id)))


def entries_of(h: Harness, request_id: int) -> dict[tuple[int, int], str]:
    """(project, Amplitude ID) -> the entry's state."""
    query = select(DeletionEntry.project_id, DeletionEntry.amplitude_id, DeletionEntry.state)
    with h.app.sessions() as session:
        rows = session.execute(query.where(DeletionEntry.request_id == request_id))
        return {(p, a): s for p, a, s in rows}


def reasons_of(h: Harness, request_id: int) -> list[str]:
    query = select(Event.reason).where(Event.request_id == request_id).order_by(Event.id)
    with h.app.sessions() as session:
        return list(session.scalars(query))


def deletion_posts(h: Harness) -> list[CallRecord]:
    return [
        c
        for c in h.emulator.calls("privacy")
        if c.method == "POST" and c.path.startswith(DELETIONS)
    ]


def deletion_calls(h: Harness) -> list[CallRecord]:
    return [c for c in h.emulator.calls("privacy") if c.path.startswith(DELETIONS)]


def searches(h: Harness) -> int:
    """User Search calls the emulator answered (any project)."""
    return sum(1 for c in h.emulator.calls("privacy") if c.path.startswith("/api/2/usersearch"))


def run_days(h: Harness, request_ids: list[int], until: str, days: int = 40) -> None:
    """A tick a day until every request is in state ``until``."""
    for _ in range(days):
        if all(state_of(h, rid) == until for rid in request_ids):
            return
        h.clock.advance(timedelta(days=1))
        h.tick()
    assert [state_of(h, rid) for rid in request_ids] == [until] * len(request_ids)
