from __future__ import annotations

import itertools

import pytest

from dsar_scheduler.core.states import (
    FINAL,
    TRANSITIONS,
    IllegalTransition,
    State,
    check_transition,
)


def test_every_state_has_a_transition_entry() -> None:
    assert set(TRANSITIONS) == set(State)


def test_final_states_only_leave_by_an_operator_retry() -> None:
    """...or, for a stored export that was asked with its deletion, to that deletion, and
    for a stored export past its retention, to its purge."""
    for state in FINAL - {State.STORED}:
        assert TRANSITIONS[state] <= {State.QUEUED}
    assert TRANSITIONS[State.STORED] == {State.RESOLVING, State.PURGING}


def test_the_purge_path_is_legal_and_ends_for_good() -> None:
    for current, new in itertools.pairwise([State.STORED, State.PURGING, State.PURGED]):
        check_transition(current, new)
    assert TRANSITIONS[State.PURGING] == {State.PURGED}  # a purge under way only finishes
    assert TRANSITIONS[State.PURGED] == frozenset()  # no retry: the files are gone
    assert State.PURGED in FINAL and State.PURGING not in FINAL


@pytest.mark.parametrize(
    "path",
    [
        # a deletion: resolved, sent, verified
        [State.QUEUED, State.RESOLVING, State.DELETING, State.DELETED],
        # a subject in no project: nothing to delete
        [State.QUEUED, State.RESOLVING, State.DELETED],
        # held for review, then resolved again by an operator
        [State.QUEUED, State.RESOLVING, State.REVIEW, State.RESOLVING, State.DELETING],
        # access and deletion: the export first
        [State.FETCHING, State.STORED, State.RESOLVING, State.DELETING, State.DELETED],
    ],
)
def test_deletion_paths_are_legal(path: list[State]) -> None:
    for current, new in itertools.pairwise(path):
        check_transition(current, new)


def test_the_happy_path_is_legal() -> None:
    path = [
        State.QUEUED,
        State.SUBMITTING,
        State.SUBMITTED,
        State.DONE,
        State.FETCHING,
        State.STORED,
    ]
    for current, new in itertools.pairwise(path):
        check_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (State.QUEUED, State.STORED),
        (State.STORED, State.QUEUED),
        (State.REJECTED, State.QUEUED),
        (State.SUBMITTED, State.SUBMITTING),
        (State.DONE, State.SUBMITTED),
        (State.DELETED, State.DELETING),
        (State.DELETING, State.STORED),
        (State.REVIEW, State.DELETING),  # a held request is resolved again before deleting
    ],
)
def test_illegal_transitions_are_refused(current: State, new: State) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(current, new)
