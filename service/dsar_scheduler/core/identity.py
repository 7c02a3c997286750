"""Identity resolution: which Amplitude IDs, in which project, are the subject of a request.

A deletion is irreversible, so only an exact answer counts: the subject's own user ID, or its
own Amplitude ID. User Search also answers a user-ID *prefix* and a shared *device*: either can
be someone else, so such an answer holds the request for a person to review, with the
candidates, and never becomes a deletion. Every merged (anonymous) ID of an exact match is
included, because Amplitude's docs do not say that deleting the canonical ID covers them.
Projects that use different user-ID variables never merge, so every project is searched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class SearchType(StrEnum):
    """User Search's ``type``, one per kind of match."""

    USER_OR_DEVICE = "match_user_or_device_id"
    AMPLITUDE_ID = "match_amplitude_id"
    USER_PREFIX = "match_user_prefix"
    NONE = "nomatch"


@dataclass(frozen=True)
class Subject:
    """Who a request names: by user ID, by Amplitude ID, or both."""

    user_id: str | None = None
    amplitude_id: int | None = None

    def search_term(self) -> str:
        """What to ask User Search: the user ID when there is one (it reaches every Amplitude
        ID of the user in the project), else the Amplitude ID."""
        if self.user_id is not None:
            return self.user_id
        if self.amplitude_id is None:
            raise ValueError("a subject needs a user ID or an Amplitude ID")
        return str(self.amplitude_id)


@dataclass(frozen=True)
class Match:
    user_id: str | None
    amplitude_id: int


@dataclass(frozen=True)
class SearchAnswer:
    """One project's User Search answer."""

    project_id: int
    type: str
    matches: tuple[Match, ...] = ()


@dataclass(frozen=True)
class Found:
    """Exact matches in one project: the Amplitude IDs to look up (User Activity) for their
    merged IDs."""

    project_id: int
    amplitude_ids: frozenset[int]


@dataclass(frozen=True)
class Ambiguous:
    """Matches in one project that may be someone else: held for review, with why."""

    project_id: int
    candidates: tuple[Match, ...]
    why: str


@dataclass(frozen=True)
class Absent:
    """The project has no such subject: nothing to delete there."""

    project_id: int


Verdict = Found | Ambiguous | Absent


def is_exact(subject: Subject, match: Match) -> bool:
    """The match is the subject itself: same user ID (exactly, case included: user IDs are
    case-sensitive in Amplitude) or same Amplitude ID."""
    if subject.user_id is not None and match.user_id == subject.user_id:
        return True
    return subject.amplitude_id is not None and match.amplitude_id == subject.amplitude_id


_WHY_NOT_EXACT = {
    SearchType.USER_PREFIX.value: "only user IDs that begin with the subject's matched",
    SearchType.USER_OR_DEVICE.value: "only a shared device matched, not the user ID",
    SearchType.AMPLITUDE_ID.value: "an Amplitude ID other than the subject's matched",
}


def judge(subject: Subject, answer: SearchAnswer) -> Verdict:
    """What one project's search answer means for the subject."""
    kind = answer.type.strip().lower()
    if kind == SearchType.NONE or not answer.matches:
        return Absent(answer.project_id)
    exact = frozenset(m.amplitude_id for m in answer.matches if is_exact(subject, m))
    others = tuple(m for m in answer.matches if not is_exact(subject, m))
    if exact:
        # the exact ones are the subject; any others only share a device or a prefix with it
        return Found(answer.project_id, exact)
    why = _WHY_NOT_EXACT.get(kind, f"an answer of an unknown type ({kind!r})")
    return Ambiguous(answer.project_id, others, why)


@dataclass(frozen=True)
class Activity:
    """User Activity's ``userData`` for one Amplitude ID (all empty: unknown to Amplitude)."""

    amplitude_id: int
    canonical_amplitude_id: int | None = None
    merged_amplitude_ids: tuple[int, ...] = ()
    user_id: str | None = None


def with_merged(found: Iterable[int], activities: Iterable[Activity]) -> frozenset[int]:
    """The IDs to delete: each exact match, its canonical ID and every ID merged into it."""
    ids = set(found)
    for activity in activities:
        ids.add(activity.amplitude_id)
        if activity.canonical_amplitude_id is not None:
            ids.add(activity.canonical_amplitude_id)
        ids.update(activity.merged_amplitude_ids)
    return frozenset(ids)


@dataclass(frozen=True)
class Resolution:
    """The whole answer, across projects: IDs per project to delete, or why a person must
    look first. ``review`` empty and ``ids`` empty: the subject is in no project."""

    ids: Mapping[int, frozenset[int]] = field(default_factory=dict)
    review: tuple[Ambiguous, ...] = ()

    @property
    def needs_review(self) -> bool:
        return bool(self.review)

    @property
    def nowhere(self) -> bool:
        return not self.ids and not self.review


def resolve(
    subject: Subject,
    answers: Sequence[SearchAnswer],
    activities: Mapping[int, Sequence[Activity]],
) -> Resolution:
    """Every project's verdict put together. One ambiguous project holds the whole request:
    deleting the sure part now and the rest later would leave a half-done erasure that looks
    finished. ``activities``: per project, User Activity for each exact match."""
    ids: dict[int, frozenset[int]] = {}
    review: list[Ambiguous] = []
    for answer in answers:
        verdict = judge(subject, answer)
        if isinstance(verdict, Ambiguous):
            review.append(verdict)
        elif isinstance(verdict, Found):
            ids[verdict.project_id] = with_merged(
                verdict.amplitude_ids, activities.get(verdict.project_id, ())
            )
    return Resolution(ids=ids, review=tuple(review))


def review_reason(review: Sequence[Ambiguous]) -> str:
    """The reason a held request shows: per project, why and how many candidates (their IDs
    are in the request's record, not in this text, which reaches logs)."""
    parts = [
        f"project {item.project_id}: {item.why} ({len(item.candidates)} candidate(s))"
        for item in review
    ]
    return "held for review, no exact match: " + "; ".join(parts)
