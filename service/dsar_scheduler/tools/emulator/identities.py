"""Who can be found today, project by project: the population less what deletions removed,
plus the new IDs of users whose app kept sending events after their deletion.

Everything is derived on each question from the population, the deletion jobs and today's
date, so moving the clock is all it takes for a deletion to take effect or a user to come
back. The caller holds the emulator's lock (the deletion jobs are read here).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from dsar_scheduler.tools.emulator.content import profile_device_id
from dsar_scheduler.tools.emulator.population import Population, PopulationSubject
from dsar_scheduler.tools.emulator.privacy_config import PrivacyConfig
from dsar_scheduler.tools.emulator.privacy_jobs import DeletionBook

SearchType = str  # match_user_or_device_id | match_amplitude_id | match_user_prefix | nomatch


@dataclass(frozen=True)
class Live:
    """What is left of one subject in one project: ``canonical_id`` is ``None`` once it is
    deleted (and, for a returning user, until its new ID appears); ``generation`` counts the
    deletions a returning user came back from."""

    subject: PopulationSubject
    project_id: int
    canonical_id: int | None
    merged_ids: tuple[int, ...]
    generation: int


@dataclass(frozen=True)
class UserRecord:
    """A user as the search and activity endpoints show it. An anonymous merged ID whose
    canonical ID was deleted stands alone: its own canonical, no user ID."""

    user_id: str | None
    canonical_id: int
    merged_ids: tuple[int, ...]
    subject: PopulationSubject

    def match(self) -> dict[str, object]:
        return {"user_id": self.user_id, "amplitude_id": self.canonical_id}


class Identities:
    def __init__(
        self, seed: int, cfg: PrivacyConfig, population: Population, jobs: DeletionBook
    ) -> None:
        self._seed = seed
        self._cfg = cfg
        self.population = population
        self._jobs = jobs

    def live(self, subject: PopulationSubject, project_id: int, today: date) -> Live | None:
        """The subject in one project today; ``None`` if it never had data there."""
        if project_id not in subject.projects:
            return None
        merged = tuple(m for m in subject.merged_ids if not self._gone(project_id, m, today))
        generation = 0
        while True:
            current = self.population.reingested_id(subject, project_id, generation)
            if not self._gone(project_id, current, today):
                return Live(subject, project_id, current, merged, generation)
            done = self._jobs.done_on(project_id, current)
            delay = timedelta(days=self._cfg.reingest_delay_days)
            if not subject.reingests or done is None or today < done + delay:
                return Live(subject, project_id, None, merged, generation)
            generation += 1

    def record_of_id(self, project_id: int, amplitude_id: int, today: date) -> UserRecord | None:
        """The user an Amplitude ID belongs to, if the ID is found in the project today."""
        subject = self.population.owner_of(amplitude_id)
        live = self.live(subject, project_id, today) if subject is not None else None
        if live is None:
            return None
        if amplitude_id == live.canonical_id:
            return _record(live)
        if amplitude_id in live.merged_ids:
            return _record(live) if live.canonical_id is not None else _alone(live, amplitude_id)
        return None

    def record_of_user(self, project_id: int, user_id: str, today: date) -> UserRecord | None:
        """The user with this exact user ID, if it has a canonical ID in the project today."""
        subject = self.population.by_user_id(user_id)
        live = self.live(subject, project_id, today) if subject is not None else None
        if live is None or live.canonical_id is None:
            return None
        return _record(live)

    def search(
        self, project_id: int, query: str, today: date
    ) -> tuple[SearchType, list[UserRecord]]:
        """User Search's answer: an Amplitude ID, else an exact user or device ID, else a
        user-ID prefix, else nothing."""
        if query.isdigit():
            record = self.record_of_id(project_id, int(query), today)
            if record is not None:
                return "match_amplitude_id", [record]
        exact = self.record_of_user(project_id, query, today)
        prefixed = self._with_prefix(project_id, query, today)
        if exact is not None:
            others = [r for r in prefixed if r.user_id != query]
            listed = others if self._cfg.exact_search_lists_prefix_matches else []
            return "match_user_or_device_id", [exact, *listed]
        by_device = self._by_device(project_id, query, today)
        if by_device:
            return "match_user_or_device_id", by_device
        if prefixed:
            return "match_user_prefix", prefixed
        return "nomatch", []

    def device_ids(self, project_id: int, record: UserRecord) -> list[str]:
        ids = (record.canonical_id, *record.merged_ids)
        return [profile_device_id(self._seed, a, project_id) for a in ids]

    def export_sources(
        self, amplitude_id: int | None, user_id: str | None, today: date
    ) -> list[tuple[int, str | None, int]] | None:
        """(Amplitude ID, user ID on its events, project) of each part of a DSAR export, or
        ``None`` when the request names nobody in the population (the old, any-ID files)."""
        if amplitude_id is not None:
            return self._export_of_id(amplitude_id, today)
        subject = self.population.by_user_id(user_id or "")
        if subject is None:
            return None
        sources: list[tuple[int, str | None, int]] = []
        for project_id in subject.projects:
            live = self.live(subject, project_id, today)
            if live is None:
                continue
            if live.canonical_id is not None:
                sources.append((live.canonical_id, subject.user_id, project_id))
            if self._cfg.dsar_user_export_includes_merged:
                sources.extend((m, None, project_id) for m in live.merged_ids)
        return sources

    def _export_of_id(
        self, amplitude_id: int, today: date
    ) -> list[tuple[int, str | None, int]] | None:
        owner = self.population.owner_of(amplitude_id)
        if owner is None:
            return None
        anonymous = amplitude_id in owner.merged_ids
        return [
            (amplitude_id, None if anonymous else owner.user_id, project_id)
            for project_id in owner.projects
            if self.record_of_id(project_id, amplitude_id, today) is not None
        ]

    def _gone(self, project_id: int, amplitude_id: int, today: date) -> bool:
        gone_on = self._jobs.gone_on(project_id, amplitude_id)
        return gone_on is not None and today >= gone_on

    def _with_prefix(self, project_id: int, prefix: str, today: date) -> list[UserRecord]:
        if not prefix:
            return []
        subjects = self.population.with_prefix(prefix)
        found = (self.record_of_user(project_id, s.user_id, today) for s in subjects)
        return [r for r in found if r is not None]

    def _by_device(self, project_id: int, device_id: str, today: date) -> list[UserRecord]:
        """Users with a found ID whose events carry this device ID."""
        found: list[UserRecord] = []
        for subject in self.population.subjects:
            live = self.live(subject, project_id, today)
            if live is None:
                continue
            records = [_record(live)] if live.canonical_id is not None else []
            if live.canonical_id is None:
                records = [_alone(live, m) for m in live.merged_ids]
            found.extend(r for r in records if device_id in self.device_ids(project_id, r))
        return found


def _record(live: Live) -> UserRecord:
    assert live.canonical_id is not None
    return UserRecord(live.subject.user_id, live.canonical_id, live.merged_ids, live.subject)


def _alone(live: Live, merged_id: int) -> UserRecord:
    return UserRecord(None, merged_id, (), live.subject)
