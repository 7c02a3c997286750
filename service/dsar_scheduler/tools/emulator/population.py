"""The org's known users: who exists, in which projects, with which merged anonymous IDs.

Fixed by (seed, settings) alone, so two emulators with the same seed know the same users and
a test can look a subject up before it calls anything. What changes over time (deletions, a
user coming back under a new ID) is ``identities``' business, not this module's.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from dsar_scheduler.tools.emulator.privacy_config import PrivacyConfig

#: A re-ingested ID packs (subject index, project index, generation) into its offset.
_PROJECT_BITS = 16
_GENERATIONS = 64


@dataclass(frozen=True)
class PopulationSubject:
    """One user as first seen: ``amplitude_id`` is the canonical ID; ``merged_ids`` are the
    anonymous IDs merged into it (their raw events keep their own ``amplitude_id``)."""

    index: int
    user_id: str
    amplitude_id: int
    merged_ids: tuple[int, ...]
    projects: tuple[int, ...]
    reingests: bool


class Population:
    """Every known user, with look-ups by user ID, Amplitude ID and user-ID prefix."""

    def __init__(self, seed: int, cfg: PrivacyConfig, project_ids: tuple[int, ...]) -> None:
        self._cfg = cfg
        self.project_ids = project_ids
        self.subjects = tuple(_draw(seed, cfg, project_ids, i, a) for i, a in _canonical(cfg))
        self._by_user = {s.user_id: s for s in self.subjects}
        self._by_id = {a: s for s in self.subjects for a in (s.amplitude_id, *s.merged_ids)}
        self._sorted_users = sorted(self._by_user)
        if len(self._by_user) != len(self.subjects) or len(self._by_id) != sum(
            1 + len(s.merged_ids) for s in self.subjects
        ):
            raise ValueError("population settings give two users the same ID")
        top = max(self._by_id, default=0)
        if self.subjects and top >= cfg.first_reingested_id:
            raise ValueError("first_reingested_id must be above every other Amplitude ID")

    def by_user_id(self, user_id: str) -> PopulationSubject | None:
        return self._by_user.get(user_id)

    def by_amplitude_id(self, amplitude_id: int) -> PopulationSubject | None:
        """The subject whose canonical or merged ID this is (re-ingested IDs: ``reingested``)."""
        return self._by_id.get(amplitude_id)

    def owner_of(self, amplitude_id: int) -> PopulationSubject | None:
        """Whose ID this is: canonical, merged or re-ingested."""
        subject = self._by_id.get(amplitude_id)
        if subject is not None:
            return subject
        found = self.reingested(amplitude_id)
        return found[0] if found is not None else None

    def with_prefix(self, prefix: str) -> list[PopulationSubject]:
        """Users whose user ID starts with ``prefix``, in user-ID order."""
        start = bisect.bisect_left(self._sorted_users, prefix)
        found = []
        for user_id in self._sorted_users[start:]:
            if not user_id.startswith(prefix):
                break
            found.append(self._by_user[user_id])
        return found

    def reingested_id(self, subject: PopulationSubject, project_id: int, generation: int) -> int:
        """The ID the subject's events arrive under in a project after ``generation``
        deletions (generation 0 is its canonical ID)."""
        if generation == 0:
            return subject.amplitude_id
        if generation >= _GENERATIONS:
            raise ValueError("too many re-ingestions of one user in one project")
        slot = subject.index * _PROJECT_BITS + self.project_ids.index(project_id)
        return self._cfg.first_reingested_id + slot * _GENERATIONS + generation

    def reingested(self, amplitude_id: int) -> tuple[PopulationSubject, int, int] | None:
        """(subject, project, generation) of a re-ingested ID; ``None`` for any other ID."""
        offset = amplitude_id - self._cfg.first_reingested_id
        if offset < 0:
            return None
        slot, generation = divmod(offset, _GENERATIONS)
        index, project_index = divmod(slot, _PROJECT_BITS)
        if generation == 0 or index >= len(self.subjects):
            return None
        if project_index >= len(self.project_ids):
            return None
        return self.subjects[index], self.project_ids[project_index], generation


def _canonical(cfg: PrivacyConfig) -> list[tuple[int, int]]:
    """(index, canonical ID) of every subject: the plain ones, then each family's members
    (the head's ID with one more digit, so the head's user ID is a prefix of theirs)."""
    plain = [cfg.first_subject_id + k for k in range(cfg.subject_count)]
    members: list[int] = []
    if cfg.prefix_family_every > 0:
        for head in plain[:: cfg.prefix_family_every]:
            members.extend(head * 10 + j for j in range(1, cfg.prefix_family_size + 1))
    return list(enumerate(plain + members))


def _draw(
    seed: int, cfg: PrivacyConfig, project_ids: tuple[int, ...], index: int, amplitude_id: int
) -> PopulationSubject:
    """One subject's projects, merged IDs and re-ingestion, from its own seeded RNG."""
    rng = random.Random(f"privacy-subject:{seed}:{amplitude_id}")
    first = rng.randrange(len(project_ids))
    projects = tuple(
        p for k, p in enumerate(project_ids) if k == first or rng.random() < cfg.presence_rate
    )
    merged: tuple[int, ...] = ()
    if rng.random() < cfg.merged_rate:
        count = rng.choices(range(1, len(cfg.merged_weights) + 1), cfg.merged_weights)[0]
        merged = tuple(cfg.first_merged_id + index * 10 + j for j in range(1, count + 1))
    return PopulationSubject(
        index=index,
        user_id=cfg.user_id_format.format(amplitude_id=amplitude_id),
        amplitude_id=amplitude_id,
        merged_ids=merged,
        projects=projects,
        reingests=rng.random() < cfg.reingest_rate,
    )
