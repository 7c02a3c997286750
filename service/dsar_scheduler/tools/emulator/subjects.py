"""Which files a subject has: the projects it has data in, and the months it was active.

Amplitude answers with "about one file per month per project for which the user has data",
so the number of files differs from user to user. Every draw here is seeded by the subject
(and the project and month), never by the order of calls: a failed job resubmitted for the
same subject gets the same files, as it would from Amplitude.
"""

from __future__ import annotations

import random
from datetime import date

from dsar_scheduler.tools.emulator.config import EmulatorConfig
from dsar_scheduler.tools.emulator.content import FileSpec, file_specs


def subject_files(
    cfg: EmulatorConfig,
    amplitude_id: int,
    user_id: str | None,
    start: date,
    end: date,
    projects: list[int] | None = None,
) -> list[FileSpec]:
    """The outputs of one request, in ``urls`` order; never empty (a ``done`` job has its
    "download URLs populated", so a subject with no active month keeps its first file)
    unless ``projects`` (default: ``project_count`` of them) is empty."""
    if projects is None:
        projects = [cfg.first_project_id + k for k in range(project_count(cfg, amplitude_id))]
    specs = file_specs(
        seed=cfg.seed,
        amplitude_id=amplitude_id,
        user_id=user_id,
        start=start,
        end=end,
        projects=projects,
        events_per_file=cfg.events_per_file,
    )
    if cfg.empty_month_rate <= 0:
        return specs
    kept = [spec for spec in specs if not _empty(cfg, spec)]
    return kept or specs[:1]


def export_files(
    cfg: EmulatorConfig, sources: list[tuple[int, str | None, int]], start: date, end: date
) -> list[FileSpec]:
    """The outputs of a request for a known user: for each of its IDs found today (from
    ``Identities.export_sources``: Amplitude ID, user ID on its events, project), its files
    in those projects; empty once the user is deleted everywhere."""
    projects_of: dict[tuple[int, str | None], list[int]] = {}
    for amplitude_id, user_id, project_id in sources:
        projects_of.setdefault((amplitude_id, user_id), []).append(project_id)
    return [
        spec
        for (amplitude_id, user_id), projects in projects_of.items()
        for spec in subject_files(cfg, amplitude_id, user_id, start, end, projects)
    ]


def project_count(cfg: EmulatorConfig, amplitude_id: int) -> int:
    """Projects the subject has data in: ``projects_weights`` (of 1, 2, 3... projects) when
    set, else exactly ``projects_per_subject``."""
    weights = cfg.projects_weights
    if weights is None:
        return cfg.projects_per_subject
    rng = random.Random(f"dsar-projects:{cfg.seed}:{amplitude_id}")
    return rng.choices(range(1, len(weights) + 1), weights=weights)[0]


def _empty(cfg: EmulatorConfig, spec: FileSpec) -> bool:
    """The subject had no events in this project this month (independent per cell)."""
    key = f"dsar-empty:{cfg.seed}:{spec.amplitude_id}:{spec.project_id}:{spec.month}"
    return random.Random(key).random() < cfg.empty_month_rate
