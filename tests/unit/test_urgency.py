"""Legal deadlines in the planner's order of polls (``core.urgency``, through ``planner.plan``):
when the budget binds, the nearest deadline goes first, but never ahead of a poll overdue by
more than a whole gap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dsar_scheduler.core.completion import HOUR, CompletionModel
from dsar_scheduler.core.planner import Facts, Outstanding, PlannerConfig, plan
from dsar_scheduler.core.urgency import NO_DEADLINE, optional_order, required_order

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
GAP_S = 8 * HOUR


def hours(h: float) -> datetime:
    return NOW + timedelta(hours=h)


def days(d: float) -> datetime:
    return NOW + timedelta(days=d)


def test_required_polls_go_nearest_deadline_first() -> None:
    required = [
        (hours(-1), 1, days(40)),
        (hours(-0.5), 2, days(3)),
        (hours(-2), 3, NO_DEADLINE),  # admitted before deadlines: last
        (hours(-0.1), 4, days(10)),
    ]
    assert required_order(required, NOW, GAP_S) == [2, 4, 1, 3]


def test_among_equal_deadlines_the_most_overdue_goes_first() -> None:
    required = [(hours(-1), 1, days(5)), (hours(-3), 2, days(5)), (hours(-2), 3, days(5))]
    assert required_order(required, NOW, GAP_S) == [2, 3, 1]


def test_a_poll_overdue_by_more_than_a_gap_goes_before_any_deadline() -> None:
    required = [
        (hours(-1), 1, days(1)),  # the nearest deadline
        (hours(-9), 2, days(40)),  # 9 h overdue at an 8 h gap: its result may be expiring
        (hours(-12), 3, NO_DEADLINE),  # more overdue still
        (hours(-7), 4, days(2)),  # overdue, within the gap: by its deadline
    ]
    assert required_order(required, NOW, GAP_S) == [3, 2, 1, 4]
    # with a gap of a day none of them is that late: by deadline alone
    assert required_order(required, NOW, 24 * HOUR) == [1, 4, 2, 3]


def test_optional_polls_go_likeliest_first_then_nearest_deadline() -> None:
    optional = [
        (0.2, 1, 1.0, days(2)),
        (0.6, 2, 1.0, days(30)),
        (0.2, 3, 1.0, days(1)),  # as likely as 1, a nearer deadline
        (0.2, 4, 1.0, NO_DEADLINE),
        (0.6, 5, 1.0, days(20)),
    ]
    assert [rid for _, rid, _, _ in optional_order(optional)] == [5, 2, 3, 1, 4]


def running(rid: int, deadline: datetime | None, due_in_h: float | None = -0.5) -> Outstanding:
    submitted = NOW - timedelta(hours=20)
    return Outstanding(
        id=rid,
        submitted_at=submitted,
        seen_running_at=NOW - timedelta(hours=8.5),
        next_required_at=None if due_in_h is None else hours(due_in_h),
        expected_files=26.0,
        deadline=deadline,
    )


def facts(requests: list[Outstanding], headroom: int) -> Facts:
    return Facts(
        now=NOW,
        interval_s=1800,
        limit=14_400,
        headroom=headroom,
        freed_before_next=0,
        outstanding=requests,
        pending_files=0,
        queued=0,
        files_per_new=26.0,
        model=CompletionModel.uniform(),
    )


def test_the_plan_polls_the_nearest_deadlines_first_when_the_budget_binds() -> None:
    """No headroom at all: the tick polls the head of the list until the budget stops it, so
    the head is what gets polled."""
    requests = [
        running(1, days(40)),
        running(2, days(2)),
        running(3, None),
        running(4, days(9)),
        running(5, days(2) + timedelta(hours=1)),
    ]
    result = plan(facts(requests, headroom=0), PlannerConfig())
    assert result.polls == [2, 5, 4, 1, 3]
    assert result.required == 5


def test_without_deadlines_the_plan_is_as_before_most_overdue_first() -> None:
    requests = [running(1, None, -0.5), running(2, None, -1.0), running(3, None, None)]
    result = plan(facts(requests, headroom=0), PlannerConfig())
    assert result.polls == [2, 1, 3]
