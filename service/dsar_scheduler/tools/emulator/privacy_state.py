"""What the privacy endpoints and their test controls share: the projects and their keys,
the known users, the deletion jobs, and each project's limits."""

from __future__ import annotations

from dataclasses import dataclass

from dsar_scheduler.tools.emulator.config import EmulatorConfig
from dsar_scheduler.tools.emulator.identities import Identities
from dsar_scheduler.tools.emulator.population import Population
from dsar_scheduler.tools.emulator.privacy_config import PrivacyConfig, ProjectKeys
from dsar_scheduler.tools.emulator.privacy_jobs import DeletionBook
from dsar_scheduler.tools.emulator.privacy_limits import Lane

HOUR_S = 3_600.0


@dataclass(frozen=True)
class PrivacyState:
    """``jobs`` (and so ``identities``) are guarded by the org's lock; the lanes lock
    themselves."""

    config: PrivacyConfig
    projects: tuple[ProjectKeys, ...]
    population: Population
    jobs: DeletionBook
    identities: Identities
    deletion_lanes: dict[int, Lane]
    search_lanes: dict[int, Lane]

    @classmethod
    def new(cls, config: EmulatorConfig) -> PrivacyState:
        cfg = config.privacy
        projects = cfg.project_keys(config.first_project_id)
        population = Population(config.seed, cfg, tuple(p.project_id for p in projects))
        jobs = DeletionBook(config.seed, cfg)
        return cls(
            config=cfg,
            projects=projects,
            population=population,
            jobs=jobs,
            identities=Identities(config.seed, cfg, population, jobs),
            deletion_lanes={
                p.project_id: Lane(
                    "deletion",
                    cfg.deletion_rate_limit,
                    cfg.deletion_rate_window_s,
                    cfg.deletion_max_in_flight,
                )
                for p in projects
            },
            search_lanes={
                p.project_id: Lane(
                    "user search and activity",
                    cfg.search_budget_per_hour,
                    HOUR_S,
                    cfg.search_max_in_flight,
                )
                for p in projects
            },
        )
