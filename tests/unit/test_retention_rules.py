"""The retention rules (``core.retention``), by table: when a stored export's files fall due,
what ``dsar delivered`` refuses, the settings' meaning of 0, and the audit trail's words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dsar_scheduler.config import ConfigError, load_settings
from dsar_scheduler.core.retention import (
    RetentionPolicy,
    delivered_refusal,
    is_purge_due,
    purge_due_at,
    purge_why,
    purged_reason,
)
from dsar_scheduler.core.states import State

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
D30 = RetentionPolicy(30 * DAY, 730 * DAY)
D30_DELIVERY = RetentionPolicy(30 * DAY, 730 * DAY, purge_on_delivery=True)
NEVER = RetentionPolicy(None, None)
NEVER_BUT_DELIVERY = RetentionPolicy(None, None, purge_on_delivery=True)


@pytest.mark.parametrize(
    ("policy", "delivered", "deadline", "due"),
    [
        # 30 days after stored, whatever else
        (D30, None, None, T0 + 30 * DAY),
        # undelivered: kept until the legal deadline when that is later (CCPA 45 days)
        (D30, None, T0 + 45 * DAY, T0 + 45 * DAY),
        # a deadline already inside the retention changes nothing
        (D30, None, T0 + 10 * DAY, T0 + 30 * DAY),
        # delivered: the hold until the deadline is lifted, the retention stands
        (D30, T0 + 2 * DAY, T0 + 45 * DAY, T0 + 30 * DAY),
        # DSAR_PURGE_ON_DELIVERY: due at delivery
        (D30_DELIVERY, T0 + 2 * DAY, T0 + 45 * DAY, T0 + 2 * DAY),
        # ... unless the retention ends sooner (a late delivery mark)
        (D30_DELIVERY, T0 + 40 * DAY, None, T0 + 30 * DAY),
        (D30_DELIVERY, None, T0 + 45 * DAY, T0 + 45 * DAY),
        # DSAR_RESULT_RETENTION_DAYS=0: never by age; delivery still purges when asked to
        (NEVER, None, None, None),
        (NEVER, T0 + DAY, None, None),
        (NEVER_BUT_DELIVERY, None, None, None),
        (NEVER_BUT_DELIVERY, T0 + DAY, T0 + 45 * DAY, T0 + DAY),
    ],
)
def test_purge_due_at(
    policy: RetentionPolicy,
    delivered: datetime | None,
    deadline: datetime | None,
    due: datetime | None,
) -> None:
    assert purge_due_at(policy, T0, delivered, deadline) == due
    if due is not None:
        assert not is_purge_due(policy, T0, delivered, deadline, due - timedelta(seconds=1))
        assert is_purge_due(policy, T0, delivered, deadline, due)
    else:
        assert not is_purge_due(policy, T0, delivered, deadline, T0 + 10_000 * DAY)


def test_never_due_without_a_stored_time() -> None:
    assert purge_due_at(D30, None, None, None) is None
    assert purge_due_at(D30_DELIVERY, None, T0, None) == T0


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ((30, 730), (30 * DAY, 730 * DAY)),
        ((0, 730), (None, 730 * DAY)),
        ((0.5, 0), (DAY / 2, None)),
    ],
)
def test_zero_days_means_never(days: tuple[float, float], expected: tuple[object, object]) -> None:
    policy = RetentionPolicy.from_days(*days)
    assert (policy.result_after, policy.record_after) == expected


def test_cutoffs() -> None:
    assert D30.result_cutoff(T0) == T0 - 30 * DAY
    assert D30.record_cutoff(T0) == T0 - 730 * DAY
    assert NEVER.result_cutoff(T0) is None
    assert NEVER.record_cutoff(T0) is None


@pytest.mark.parametrize(
    ("state", "delivered", "refused"),
    [
        (State.STORED, None, None),
        (State.STORED, T0, "already marked delivered at 2026-03-01 12:00:00 UTC"),
        (State.PURGED, None, "purged: its files are already removed"),
        (State.PURGING, None, "purging: its files are already removed"),
        (State.FETCHING, None, "fetching, not stored"),
        (State.QUEUED, None, "queued, not stored"),
        (State.CANCELLED, None, "cancelled, not stored"),
    ],
)
def test_what_delivered_refuses(
    state: State, delivered: datetime | None, refused: str | None
) -> None:
    refusal = delivered_refusal(state, delivered)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal


def test_the_audit_trail_says_why_and_what() -> None:
    assert purge_why(D30, T0, None) == (
        "stored 2026-03-01 12:00:00 UTC, kept 30 day(s) (DSAR_RESULT_RETENTION_DAYS)"
    )
    assert purge_why(D30_DELIVERY, T0, T0 + DAY) == (
        "delivered 2026-03-02 12:00:00 UTC (DSAR_PURGE_ON_DELIVERY)"
    )
    # delivered, but the retention ran out first: the retention is the reason
    assert "DSAR_RESULT_RETENTION_DAYS" in purge_why(D30_DELIVERY, T0, T0 + 31 * DAY)
    text = purged_reason(3, 1234, "ab" * 32, manifest_removed=True)
    assert text.startswith("purged: 3 file(s), 1234 bytes removed from storage")
    assert f"manifest.json (sha256 {'ab' * 32})" in text
    assert "manifest" not in purged_reason(1, 10, None, manifest_removed=False)
    assert "it was not in storage" in purged_reason(1, 10, None, manifest_removed=True)


@pytest.mark.parametrize(
    ("result", "record", "ok"),
    [
        (30, 730, True),
        (0, 730, True),  # files kept forever; records of requests without files still go
        (30, 0, True),  # records kept forever
        (0, 0, True),
        (800, 730, False),  # the record must outlive the files
        (-1, 730, False),
    ],
)
def test_settings(result: float, record: float, ok: bool) -> None:
    values = {"result_retention_days": result, "record_retention_days": record}
    if ok:
        settings = load_settings(**values)
        assert (settings.result_retention_days, settings.record_retention_days) == (result, record)
    else:
        with pytest.raises(ConfigError, match="RETENTION_DAYS"):
            load_settings(**values)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.result_retention_days == 30
    assert settings.record_retention_days == 730  # CCPA §7101: 24 months
    assert settings.purge_on_delivery is False
