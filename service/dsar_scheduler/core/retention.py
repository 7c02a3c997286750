"""Retention: when a request's downloaded files fall due for purging from storage, when its
record (kept without the personal data) is removed from the ledger, and the words the audit
trail uses for both. Pure rules of (a request's times, now, the policy).

An export is personal data the privacy team needs only until it has handed it to the
consumer; the record of what was done (names, sizes and sha256 of the files, when each thing
happened) is what a regulator asks for, for 24 months under CCPA §7101. So files go early and
the record late, and never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dsar_scheduler.core.states import State

#: What ``dsar delivered`` needs: a request whose export is stored and not yet purged.
DELIVERABLE = State.STORED
#: The request kind whose stored export moves to ``purging`` and ``purged``. A stored request
#: of another kind (an access with its deletion) waits for the deletion flow to move it on;
#: its files then go without a change of state.
ACCESS = "access"


@dataclass(frozen=True)
class RetentionPolicy:
    """DSAR_RESULT_RETENTION_DAYS, DSAR_RECORD_RETENTION_DAYS, DSAR_PURGE_ON_DELIVERY."""

    #: Files are purged this long after they were stored (``None``: never by age).
    result_after: timedelta | None
    #: A finished request's record is removed this long after its files were purged or it
    #: ended without files (``None``: never).
    record_after: timedelta | None
    #: A request marked delivered is purged at once, not at the end of its retention.
    purge_on_delivery: bool = False

    @classmethod
    def from_days(
        cls, result_days: float, record_days: float, purge_on_delivery: bool = False
    ) -> RetentionPolicy:
        """0 days means never."""
        return cls(
            timedelta(days=result_days) if result_days > 0 else None,
            timedelta(days=record_days) if record_days > 0 else None,
            purge_on_delivery,
        )

    def result_cutoff(self, now: datetime) -> datetime | None:
        """Files stored at or before this are past their retention (``None``: none are)."""
        return None if self.result_after is None else now - self.result_after

    def record_cutoff(self, now: datetime) -> datetime | None:
        """Records finished at or before this are past theirs (``None``: none are)."""
        return None if self.record_after is None else now - self.record_after


def purge_due_at(
    policy: RetentionPolicy,
    stored_at: datetime | None,
    delivered_at: datetime | None,
    deadline: datetime | None,
) -> datetime | None:
    """When a stored export's files fall due for purging; ``None``: not while the policy
    stands. ``deadline`` is the request's legal deadline (``extended_until``, else
    ``due_at``): an export not yet delivered is kept at least until then, since it may still
    have to be handed over. Delivered, with ``purge_on_delivery``: at delivery, if sooner."""
    due: datetime | None = None
    if policy.result_after is not None and stored_at is not None:
        due = stored_at + policy.result_after
        if delivered_at is None and deadline is not None and deadline > due:
            due = deadline
    if policy.purge_on_delivery and delivered_at is not None:
        due = delivered_at if due is None else min(due, delivered_at)
    return due


def is_purge_due(
    policy: RetentionPolicy,
    stored_at: datetime | None,
    delivered_at: datetime | None,
    deadline: datetime | None,
    now: datetime,
) -> bool:
    due = purge_due_at(policy, stored_at, delivered_at, deadline)
    return due is not None and due <= now


def purge_why(
    policy: RetentionPolicy, stored_at: datetime | None, delivered_at: datetime | None
) -> str:
    """Why the files go now, for the audit trail."""
    if (
        policy.purge_on_delivery
        and delivered_at is not None
        and (
            policy.result_after is None
            or stored_at is None
            or delivered_at <= stored_at + policy.result_after
        )
    ):
        return f"delivered {_at(delivered_at)} (DSAR_PURGE_ON_DELIVERY)"
    days = _days(policy.result_after)
    stored = _at(stored_at) if stored_at is not None else "(unknown)"
    return f"stored {stored}, kept {days} (DSAR_RESULT_RETENTION_DAYS)"


def delivered_refusal(state: str, delivered_at: datetime | None) -> str | None:
    """Why ``dsar delivered`` cannot mark this request (``None``: it can)."""
    if state in (State.PURGING, State.PURGED):
        return f"it is {state}: its files are already removed from storage"
    if state != DELIVERABLE:
        return f"it is {state}, not stored: only a stored export can be delivered"
    if delivered_at is not None:
        return f"it was already marked delivered at {_at(delivered_at)}"
    return None


# -- the audit trail's words --------------------------------------------------------------


def purge_started_reason(why: str, files: int, manifest_sha256: str | None) -> str:
    return (
        f"purge started: {why}; {files} file(s) to remove from storage, then "
        f"manifest.json ({_manifest(manifest_sha256)})"
    )


def purge_progress(removed: int, total: int) -> str:
    """The request's visible reason while its purge is under way."""
    return (
        f"purging: {removed} of {total} file(s) removed from storage; "
        "the next tick carries on if this one stopped"
    )


def purged_reason(
    files: int, size: int, manifest_sha256: str | None, manifest_removed: bool
) -> str:
    """The purge's last event: what was removed (the file rows keep each name, size and
    sha256, and when each was removed)."""
    text = f"purged: {files} file(s), {size} bytes removed from storage"
    if manifest_removed:
        text += f", and manifest.json ({_manifest(manifest_sha256)})"
    return text + "; each file's name, bytes and sha256 are kept as the record"


def record_removed_reason(now: datetime, policy: RetentionPolicy) -> str:
    return (
        f"record removed {_at(now)}: kept {_days(policy.record_after)} after the request "
        "ended (DSAR_RECORD_RETENTION_DAYS); its history, files and subject are deleted"
    )


def _manifest(sha256: str | None) -> str:
    return f"sha256 {sha256}" if sha256 else "it was not in storage"


def _at(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _days(span: timedelta | None) -> str:
    if span is None:
        return "forever"
    days = span.total_seconds() / 86400
    return f"{days:g} day(s)"
