"""What tests, the demo and the simulator read from the privacy side of the emulator
(``Emulator.privacy``): the project keys, the known users and their IDs as of now, and the
deletion jobs, without spending a call of any budget."""

from __future__ import annotations

from datetime import date

from dsar_scheduler.tools.emulator.identities import Live
from dsar_scheduler.tools.emulator.population import PopulationSubject
from dsar_scheduler.tools.emulator.privacy_config import ProjectKeys
from dsar_scheduler.tools.emulator.privacy_jobs import JobView
from dsar_scheduler.tools.emulator.state import OrgState


class PrivacyControls:
    def __init__(self, org: OrgState) -> None:
        self._org = org

    def project_keys(self) -> tuple[ProjectKeys, ...]:
        return self._org.privacy.projects

    def project_ids(self) -> tuple[int, ...]:
        return tuple(p.project_id for p in self._org.privacy.projects)

    def keys_of(self, project_id: int) -> tuple[str, str]:
        """(api key, secret key) of one project, for an ``httpx`` ``auth=``."""
        keys = next((p for p in self._org.privacy.projects if p.project_id == project_id), None)
        if keys is None:
            raise KeyError(f"no emulated project {project_id}")
        return keys.api_key, keys.secret_key

    def projects_toml(self) -> str:
        """The projects as a ``DSAR_PROJECTS_FILE`` (``[projects.<id>]`` with the keys)."""
        return "".join(
            f'[projects.{p.project_id}]\napi_key = "{p.api_key}"\nsecret_key = "{p.secret_key}"\n\n'
            for p in self._org.privacy.projects
        )

    def subjects(self) -> tuple[PopulationSubject, ...]:
        """Every known user as first seen (canonical ID, merged IDs, projects, whether its
        events come back after deletion)."""
        return self._org.privacy.population.subjects

    def subject(self, user_id_or_amplitude_id: str | int) -> PopulationSubject:
        """A known user by user ID, or by any of its Amplitude IDs."""
        population = self._org.privacy.population
        if isinstance(user_id_or_amplitude_id, int):
            found = population.owner_of(user_id_or_amplitude_id)
        else:
            found = population.by_user_id(user_id_or_amplitude_id)
        if found is None:
            raise KeyError(f"no known user {user_id_or_amplitude_id!r}")
        return found

    def identity(self, subject: PopulationSubject, project_id: int) -> Live | None:
        """What is found of the user in one project now: its current canonical ID (``None``
        once deleted, until a returning user's new ID appears) and its merged IDs left."""
        with self._org.lock:
            return self._org.privacy.identities.live(subject, project_id, self._today())

    def deletion_jobs(self, project_id: int) -> list[JobView]:
        with self._org.lock:
            return self._org.privacy.jobs.views(project_id, self._today())

    def rate_limited_count(self) -> int:
        """429s the privacy endpoints answered (their limits, not the DSAR budget)."""
        return sum(1 for r in self._org.calls.calls("privacy") if r.status == 429)

    def _today(self) -> date:
        return self._org.clock.now().date()
