"""Options of the emulated User Privacy (deletion), User Search and User Activity APIs.

Each default is the documented value where Amplitude documents one, and otherwise the
reading in ``reference/next-capabilities.md`` (marked [A] there); docs/emulator-privacy.md
lists every assumption beside its setting. Times are in clock days or seconds (the injected
clock's), except the ``*_latency_s`` holds, which are real seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Documented: 100 IDs per request, 1 request a second and 8 in parallel per project.
MAX_IDS_PER_REQUEST = 100
#: Documented: User Search and User Activity together, 360 an hour and 10 at once per project.
SEARCH_BUDGET_PER_HOUR = 360
SEARCH_MAX_IN_FLIGHT = 10
#: At most 16 projects: a re-ingested Amplitude ID encodes its project's index in 4 bits.
MAX_PROJECTS = 16

StatusCase = Literal["lower", "capitalized", "mixed"]
GoneFrom = Literal["scrub", "done"]


@dataclass(frozen=True)
class ProjectKeys:
    """One project and the key that selects it on the privacy endpoints."""

    project_id: int
    api_key: str
    secret_key: str


def default_project_keys(first_project_id: int, count: int) -> tuple[ProjectKeys, ...]:
    """Deterministic keys, so a test or a second process can write them without asking."""
    ids = range(first_project_id, first_project_id + count)
    return tuple(ProjectKeys(p, f"project-{p}-api-key", f"project-{p}-secret-key") for p in ids)


@dataclass(frozen=True)
class PrivacyConfig:
    """How the org's projects, users and deletion jobs behave."""

    # -- projects -------------------------------------------------------------------------
    #: ``None``: ``project_count`` projects from ``EmulatorConfig.first_project_id`` with the
    #: keys of ``default_project_keys``.
    projects: tuple[ProjectKeys, ...] | None = None
    project_count: int = 3

    # -- the known users ------------------------------------------------------------------
    subject_count: int = 40
    #: Subject k's canonical Amplitude ID is ``first_subject_id + k``.
    first_subject_id: int = 8_000_000
    #: ``{amplitude_id}`` is the canonical ID; the default is what DSAR files already carry.
    user_id_format: str = "user-{amplitude_id}"
    #: Every n-th subject (0: none) heads a family of ``prefix_family_size`` more subjects
    #: whose IDs are its ID followed by one digit, so its user ID is a prefix of theirs.
    prefix_family_every: int = 10
    prefix_family_size: int = 2
    #: Chance that a subject has data in each project (at least one project each).
    presence_rate: float = 0.7
    #: Chance that a subject has anonymous IDs merged into it, and the weights of 1, 2... IDs.
    merged_rate: float = 0.3
    merged_weights: tuple[float, ...] = (0.6, 0.4)
    first_merged_id: int = 9_000_000_000
    #: Chance that a subject's app keeps sending events after its deletion: once the job is
    #: ``done`` (+ ``reingest_delay_days``), a new Amplitude ID appears for its user ID.
    reingest_rate: float = 0.1
    reingest_delay_days: int = 1
    first_reingested_id: int = 9_500_000_000

    # -- deletion jobs --------------------------------------------------------------------
    max_ids_per_request: int = MAX_IDS_PER_REQUEST
    #: A new batch's ``day`` is today + U(low, high) whole days [UP-old: 10-13].
    batch_delay_days: tuple[int, int] = (10, 13)
    #: ``staging`` (joinable, revocable) until ``day`` - this many days, then ``submitted``.
    staging_cutoff_days: int = 3
    #: ``active_scrub_done_date`` = ``day`` + U(low, high) days [A].
    scrub_delay_days: tuple[int, int] = (0, 2)
    #: ``done`` this many days after ``active_scrub_done_date`` ("~5 days").
    done_after_scrub_days: int = 5
    #: When a deleted ID stops being found (search, activity, DSAR exports): the scrub date
    #: (the data is "no longer accessible") or the ``done`` date.
    gone_from: GoneFrom = "scrub"
    #: GET refuses a ``start_day``..``end_day`` window longer than this (6 months) [A].
    max_listing_window_days: int = 183
    #: ``lower`` (as the prose writes it), ``capitalized`` (as the tables do), or ``mixed``.
    status_case: StatusCase = "lower"
    #: Accepted requests per key in any ``deletion_rate_window_s``: 1 a second; 0 disables.
    deletion_rate_limit: int = 1
    deletion_rate_window_s: float = 1.0
    deletion_max_in_flight: int = 8
    #: Real seconds each deletion call holds its in-flight slot (0: answer at once).
    deletion_latency_s: float = 0.0

    # -- search ---------------------------------------------------------------------------
    search_budget_per_hour: int = SEARCH_BUDGET_PER_HOUR
    search_max_in_flight: int = SEARCH_MAX_IN_FLIGHT
    search_latency_s: float = 0.0
    #: An exact user-ID match also lists the users it is a prefix of (same ``type``) [A].
    exact_search_lists_prefix_matches: bool = False
    #: User Activity serves the events of the last this many days.
    activity_days: int = 90

    # -- DSAR by user ID ------------------------------------------------------------------
    #: A DSAR request by ``userId`` also exports the merged anonymous IDs' events (each with
    #: its own ``amplitude_id``); False leaves them out, for a client's coverage check.
    dsar_user_export_includes_merged: bool = True

    def __post_init__(self) -> None:
        problems = self._population_problems() + self._job_problems() + self._limit_problems()
        if problems:
            raise ValueError("; ".join(problems))

    def project_keys(self, first_project_id: int) -> tuple[ProjectKeys, ...]:
        if self.projects is not None:
            return self.projects
        return default_project_keys(first_project_id, self.project_count)

    def _population_problems(self) -> list[str]:
        problems = []
        count = len(self.projects) if self.projects is not None else self.project_count
        if not 1 <= count <= MAX_PROJECTS:
            problems.append(f"need 1..{MAX_PROJECTS} projects")
        if self.projects is not None and len({p.project_id for p in self.projects}) != count:
            problems.append("project ids must be distinct")
        if self.projects is not None and len({p.api_key for p in self.projects}) != count:
            problems.append("project api keys must be distinct")
        if self.subject_count < 0 or self.first_subject_id < 1:
            problems.append("subject_count must be >= 0 and first_subject_id >= 1")
        if "{amplitude_id}" not in self.user_id_format:
            problems.append("user_id_format must contain {amplitude_id}")
        if self.prefix_family_every < 0 or not 0 <= self.prefix_family_size <= 9:
            problems.append("prefix_family_every >= 0 and prefix_family_size within 0..9")
        rates = ("presence_rate", "merged_rate", "reingest_rate")
        problems.extend(
            f"{name} must be within [0, 1]"
            for name in rates
            if not 0.0 <= getattr(self, name) <= 1.0
        )
        weights = self.merged_weights
        if not weights or len(weights) > 9 or min(weights) < 0 or sum(weights) <= 0:
            problems.append("merged_weights: 1 to 9 non-negative weights with a positive sum")
        if self.reingest_delay_days < 0:
            problems.append("reingest_delay_days must not be negative")
        return problems

    def _job_problems(self) -> list[str]:
        problems = []
        low, high = self.batch_delay_days
        if not self.staging_cutoff_days < low <= high:
            # A new batch must open in staging and after every earlier one: (project, day)
            # names a job, and the API has no other job id.
            problems.append("need staging_cutoff_days < batch_delay_days[0] <= [1]")
        if self.staging_cutoff_days < 0:
            problems.append("staging_cutoff_days must not be negative")
        scrub_low, scrub_high = self.scrub_delay_days
        if not 0 <= scrub_low <= scrub_high or self.done_after_scrub_days < 0:
            problems.append("need 0 <= scrub_delay_days[0] <= [1], done_after_scrub_days >= 0")
        if self.max_ids_per_request < 1 or self.max_listing_window_days < 0:
            problems.append("max_ids_per_request >= 1 and max_listing_window_days >= 0")
        if self.status_case not in ("lower", "capitalized", "mixed"):
            problems.append("status_case must be lower, capitalized or mixed")
        if self.gone_from not in ("scrub", "done"):
            problems.append("gone_from must be scrub or done")
        return problems

    def _limit_problems(self) -> list[str]:
        problems = []
        if self.deletion_rate_limit < 0 or self.deletion_rate_window_s <= 0:
            problems.append("deletion_rate_limit >= 0 and deletion_rate_window_s > 0")
        if self.deletion_max_in_flight < 1 or self.search_max_in_flight < 1:
            problems.append("the in-flight limits must be >= 1")
        if self.search_budget_per_hour < 1 or self.activity_days < 1:
            problems.append("search_budget_per_hour and activity_days must be >= 1")
        if self.deletion_latency_s < 0 or self.search_latency_s < 0:
            problems.append("latencies must not be negative")
        return problems
