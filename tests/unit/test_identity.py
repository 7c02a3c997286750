"""Identity resolution by table: only an exact user ID or Amplitude ID is the subject; a prefix
or a shared device holds the request for review; merged IDs are always included."""

from __future__ import annotations

import pytest

from dsar_scheduler.core.identity import (
    Absent,
    Activity,
    Ambiguous,
    Found,
    Match,
    SearchAnswer,
    Subject,
    judge,
    resolve,
    review_reason,
    with_merged,
)

ALICE = Subject(user_id="alice@example.com")


@pytest.mark.parametrize(
    ("subject", "answer", "expected"),
    [
        # exact user ID: found, even when the type is spelled in capitals
        (
            ALICE,
            SearchAnswer(7, "match_user_or_device_id", (Match("alice@example.com", 11),)),
            Found(7, frozenset({11})),
        ),
        (
            ALICE,
            SearchAnswer(7, "MATCH_USER_OR_DEVICE_ID", (Match("alice@example.com", 11),)),
            Found(7, frozenset({11})),
        ),
        # the same user ID under two Amplitude IDs (a re-ingested user): both are the subject
        (
            ALICE,
            SearchAnswer(
                7,
                "match_user_or_device_id",
                (Match("alice@example.com", 11), Match("alice@example.com", 12)),
            ),
            Found(7, frozenset({11, 12})),
        ),
        # exact match plus another user sharing a device: only the exact one
        (
            ALICE,
            SearchAnswer(
                7,
                "match_user_or_device_id",
                (Match("alice@example.com", 11), Match("bob@example.com", 13)),
            ),
            Found(7, frozenset({11})),
        ),
        # a user ID differing in case is someone else
        (
            ALICE,
            SearchAnswer(7, "match_user_or_device_id", (Match("Alice@example.com", 11),)),
            Ambiguous(
                7,
                (Match("Alice@example.com", 11),),
                "only a shared device matched, not the user ID",
            ),
        ),
        # prefix matches only: several other users, held
        (
            Subject(user_id="alice"),
            SearchAnswer(
                7,
                "match_user_prefix",
                (Match("alice@example.com", 11), Match("alice2@example.com", 14)),
            ),
            Ambiguous(
                7,
                (Match("alice@example.com", 11), Match("alice2@example.com", 14)),
                "only user IDs that begin with the subject's matched",
            ),
        ),
        # by Amplitude ID
        (
            Subject(amplitude_id=11),
            SearchAnswer(7, "match_amplitude_id", (Match("alice@example.com", 11),)),
            Found(7, frozenset({11})),
        ),
        (Subject(amplitude_id=11), SearchAnswer(7, "nomatch", ()), Absent(7)),
        # an answer that says match but lists nobody is no match
        (ALICE, SearchAnswer(7, "match_user_or_device_id", ()), Absent(7)),
        # an unknown type with no exact match is never taken as the subject
        (
            ALICE,
            SearchAnswer(7, "match_something_new", (Match("carol", 15),)),
            Ambiguous(
                7, (Match("carol", 15),), "an answer of an unknown type ('match_something_new')"
            ),
        ),
    ],
)
def test_judge(subject: Subject, answer: SearchAnswer, expected: object) -> None:
    assert judge(subject, answer) == expected


def test_search_term_prefers_the_user_id_and_needs_one_of_them() -> None:
    assert Subject(user_id="u1", amplitude_id=5).search_term() == "u1"
    assert Subject(amplitude_id=5).search_term() == "5"
    with pytest.raises(ValueError, match="user ID or an Amplitude ID"):
        Subject().search_term()


def test_merged_and_canonical_ids_are_included() -> None:
    activity = Activity(
        amplitude_id=11, canonical_amplitude_id=10, merged_amplitude_ids=(21, 22), user_id="a"
    )
    assert with_merged({11}, [activity]) == {10, 11, 21, 22}
    # an unknown ID (empty userData) adds nothing but itself
    assert with_merged({11}, [Activity(amplitude_id=11)]) == {11}


def test_resolve_across_projects() -> None:
    answers = [
        SearchAnswer(1, "match_user_or_device_id", (Match("alice@example.com", 11),)),
        SearchAnswer(2, "nomatch", ()),
        SearchAnswer(3, "match_user_or_device_id", (Match("alice@example.com", 31),)),
    ]
    activities = {1: [Activity(11, 11, (12,), "alice@example.com")]}
    result = resolve(ALICE, answers, activities)
    assert result.ids == {1: frozenset({11, 12}), 3: frozenset({31})}
    assert not result.needs_review and not result.nowhere


def test_one_ambiguous_project_holds_the_whole_request() -> None:
    answers = [
        SearchAnswer(1, "match_user_or_device_id", (Match("alice@example.com", 11),)),
        SearchAnswer(2, "match_user_prefix", (Match("alice@example.com.evil", 41),)),
    ]
    result = resolve(ALICE, answers, {})
    assert result.needs_review
    reason = review_reason(result.review)
    assert "project 2" in reason and "1 candidate(s)" in reason
    # the candidates' identifiers stay out of the reason text (it reaches logs)
    assert "evil" not in reason and "41" not in reason


def test_a_subject_in_no_project() -> None:
    result = resolve(ALICE, [SearchAnswer(1, "nomatch"), SearchAnswer(2, "nomatch")], {})
    assert result.nowhere and not result.needs_review
