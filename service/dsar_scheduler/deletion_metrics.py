"""The deletion gauges, from ``ledger.deletion_stats`` at scrape time. Labels are entry states,
privacy API names and project ids (not personal data), never a subject's identifier.

Every labelled family lists all its label values (0 included), so a rule or a panel reading
one never finds it missing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric

from dsar_scheduler.core.deletion import Entry
from dsar_scheduler.core.privacy_limits import LIMITS
from dsar_scheduler.ledger.deletion_stats import DeletionCounts

#: The project-key APIs, as ``dsar_privacy_*`` label them.
PRIVACY_APIS = tuple(LIMITS)


def deletion_gauges(counts: DeletionCounts, now: datetime) -> Iterator[Metric]:
    entries = GaugeMetricFamily(
        "dsar_deletion_entries",
        "Deletion entries (a subject's Amplitude ID in one project) by state",
        labels=["state"],
    )
    for state in Entry:
        entries.add_metric([state.value], counts.entries.get(state.value, 0))
    yield entries
    yield GaugeMetricFamily(
        "dsar_deletion_entries_overdue",
        "Deletion entries not done 30 days after they were sent (Amplitude's promise)",
        value=counts.overdue_entries,
    )
    yield GaugeMetricFamily(
        "dsar_deletion_requests_overdue",
        "Deletion requests with at least one overdue entry",
        value=counts.overdue_requests,
    )
    yield GaugeMetricFamily(
        "dsar_deletion_reingested_subjects",
        "Deletion requests whose user ID came back under a new Amplitude ID after it was "
        "verified deleted (the 7- and 30-day checks)",
        value=counts.reingested_subjects,
    )
    yield GaugeMetricFamily(
        "dsar_deletion_review_oldest_age_seconds",
        "How long the request held longest for review (ambiguous identity) has waited",
        value=_age(counts.oldest_review, now),
    )
    yield GaugeMetricFamily(
        "dsar_deletion_unverified_oldest_age_seconds",
        "How long ago Amplitude called done the oldest deletion entry User Search has not "
        "yet confirmed gone",
        value=_age(counts.oldest_unverified, now),
    )
    yield GaugeMetricFamily(
        "dsar_deletion_requests_after_deadline",
        "Deletion requests whose Amplitude job (its day and the five-day backup wait) would "
        "be done after the request's legal deadline",
        value=counts.after_deadline,
    )
    yield from _privacy_gauges(counts)


def _privacy_gauges(counts: DeletionCounts) -> Iterator[Metric]:
    search = GaugeMetricFamily(
        "dsar_privacy_search_calls_in_window",
        "User Search and User Activity calls in the last hour, per project key",
        labels=["project"],
    )
    for project, calls in sorted(counts.search_calls.items()):
        search.add_metric([str(project)], calls)
    yield search
    yield GaugeMetricFamily(
        "dsar_privacy_search_limit_per_hour",
        "User Search and User Activity calls a project key may make per hour",
        value=LIMITS["search"].per_hour or 0,
    )
    limited = GaugeMetricFamily(
        "dsar_privacy_rate_limited_calls_in_window",
        "Privacy API calls answered 429 in the last hour, by API (deletion, search)",
        labels=["api"],
    )
    for api in PRIVACY_APIS:
        limited.add_metric([api], counts.rate_limited.get(api, 0))
    yield limited


def _age(since: datetime | None, now: datetime) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())
