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
    for state in FINAL:
        assert TRANSITIONS[state] <= {State.QUEUED}


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
    ],
)
def test_illegal_transitions_are_refused(current: State, new: State) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(current, new)
