"""Legal deadlines: how long each regime gives to answer a request, when a request is due
from the moment it was received, the one extension a regime allows, and how much of the time
is gone. Pure: values in, dates out (the ledger stores them, the planner and alerts read them).

How the dates are counted, and why:

* The clock starts on receipt, and the day of receipt is day 0: a period starts the day after
  the event (GDPR: Reg. 1182/71 Art. 3(1); California: Civ. Code §10 excludes the first day).
* Days are calendar days. Months are calendar months (Reg. 1182/71 Art. 3(2)(c)): the same date
  that many months on, or the last day of that month when it has no such date, so 31 January
  is due 28 February (29 in a leap year), never 2 or 3 March.
* A request is due by the END of its due day in UTC, ``23:59:59.999999``: the laws count whole
  days, so an answer at any time on the last day is in time; and the last instant of that day
  (not the next midnight) so that ``stored_at <= due_at`` (the status view's test) means "by
  the due day", and a due time prints as the day it is. UTC because the service does not know
  the team's time zone: in Europe the UTC day ends an hour or two after the local one, in
  California eight hours before it; the alerts at 50% and 80% of the time leave days either way.
* No shift past weekends or public holidays (Reg. 1182/71 Art. 3(4) moves a deadline that
  falls on one to the next working day, Civ. Code §10 past a holiday): the date here is never
  later than the law's.
* The one extension runs from receipt too: the regime's period plus the extension (GDPR one
  month + two = three months from receipt: 31 January → 28 February, extended to 30 April).
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

#: The last instant of a due day (see the module's docstring).
END_OF_DAY = time(23, 59, 59, 999999)
#: Shares of a request's time after which it is reported (metrics, alerts, ``dsar status``).
ALERT_SHARES = (0.5, 0.8)


@dataclass(frozen=True)
class Period:
    """A legal period: calendar months, then calendar days."""

    months: int = 0
    days: int = 0

    def after(self, day: date) -> date:
        return add_months(day, self.months) + timedelta(days=self.days)

    def __add__(self, other: Period) -> Period:
        return Period(self.months + other.months, self.days + other.days)

    def __str__(self) -> str:
        parts = [(self.months, "month"), (self.days, "day")]
        return " and ".join(f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n)


@dataclass(frozen=True)
class Regime:
    """One law's rule for answering a request: within ``period`` of receipt, extendable once
    by ``extension`` with notice (and the reason) given inside the first period."""

    name: str
    law: str
    period: Period
    extension: Period


#: The rules, with their sources (../shared/reference/next-capabilities.md, section 3). The
#: names are what upstream writes in ``dsar_queue.regime`` (any case); at most 16 characters.
REGIMES: Mapping[str, Regime] = {
    regime.name: regime
    for regime in (
        # California: 11 CCR §7021(b), 45 calendar days "regardless of time required to
        # verify"; Civ. Code §1798.130(a)(2), extended once by 45 days (90 in all) with notice
        # and the reason inside the first 45.
        Regime("ccpa", "CCPA/CPRA (California)", Period(days=45), Period(days=45)),
        # GDPR Art. 12(3): one month of receipt, extendable by two further months, the data
        # subject told (with the reasons) within the first month; months counted per
        # Reg. 1182/71 (dataprotection.ie, "How long will it take?").
        Regime("gdpr", "GDPR (EU)", Period(months=1), Period(months=2)),
        # Virginia VCDPA, Va. Code §59.1-577(B): 45 days, once +45 with notice in the first 45.
        Regime("vcdpa", "VCDPA (Virginia)", Period(days=45), Period(days=45)),
        # Colorado CPA, C.R.S. §6-1-1306: 45 days, +45 once.
        Regime("cpa", "CPA (Colorado)", Period(days=45), Period(days=45)),
        # The states below from the secondary summary the reference cites
        # (jeffersongoncalves/laravel-us-privacy-requests): "most 45 + 45", Iowa 90 + 45.
        Regime("icdpa", "ICDPA (Iowa)", Period(days=90), Period(days=45)),
        Regime("ocpa", "OCPA (Oregon)", Period(days=45), Period(days=45)),
        Regime("ucpa", "UCPA (Utah)", Period(days=45), Period(days=45)),
    )
}
#: Other names upstream systems use for a regime in the table.
ALIASES: Mapping[str, str] = {"cpra": "ccpa"}


@dataclass(frozen=True)
class Deadline:
    """A request's deadline: its regime, when it was received, when it is due, and the one
    extension if it was taken."""

    regime: str
    received_at: datetime
    due_at: datetime
    extended_until: datetime | None = None

    @property
    def until(self) -> datetime:
        """The deadline in force: the extended one if the extension was taken."""
        return self.extended_until or self.due_at


def known_regimes() -> str:
    return ", ".join(REGIMES)


def regime_named(raw: str | None, default: str) -> Regime | str:
    """The regime a queue row names (any case, surrounding blanks ignored; none: ``default``),
    or why it cannot be used."""
    name = (raw or "").strip().lower() or default
    regime = REGIMES.get(ALIASES.get(name, name))
    if regime is None:
        return f"regime {name[:40]!r} is not one of: {known_regimes()}"
    return regime


def add_months(day: date, months: int) -> date:
    """The same date ``months`` calendar months on, or the last day of that month when it is
    shorter (Reg. 1182/71 Art. 3(2)(c))."""
    index = day.year * 12 + day.month - 1 + months
    year, month = index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def end_of(day: date) -> datetime:
    return datetime.combine(day, END_OF_DAY, UTC)


def _receipt_day(received_at: datetime) -> date:
    return received_at.astimezone(UTC).date()


def deadline_for(regime: Regime, received_at: datetime) -> Deadline:
    """The deadline of a request received at ``received_at`` (aware) under ``regime``."""
    due = end_of(regime.period.after(_receipt_day(received_at)))
    return Deadline(regime.name, received_at.astimezone(UTC), due)


def extension_until(regime: Regime, received_at: datetime) -> datetime:
    """The deadline the one extension gives: the period and the extension from receipt."""
    return end_of((regime.period + regime.extension).after(_receipt_day(received_at)))


def extend(deadline: Deadline, now: datetime) -> datetime | str:
    """The new deadline if ``deadline`` may be extended now, else why not: a regime allows
    one extension, and only with notice given before the first deadline passes."""
    regime = REGIMES.get(deadline.regime)
    if regime is None:
        return f"regime {deadline.regime!r} is not one of: {known_regimes()}"
    if deadline.extended_until is not None:
        return (
            f"already extended once, to {deadline.extended_until:%Y-%m-%d} "
            f"({regime.law} allows one extension)"
        )
    if now > deadline.due_at:
        return (
            f"the deadline passed on {deadline.due_at:%Y-%m-%d}; {regime.law} allows an "
            "extension only with notice given before it"
        )
    return extension_until(regime, deadline.received_at)


def elapsed_share(deadline: Deadline, now: datetime) -> float:
    """How much of the request's time (to the deadline in force) is gone: 0 at receipt, 1 at
    the deadline, more after it."""
    total = (deadline.until - deadline.received_at).total_seconds()
    used = (now - deadline.received_at).total_seconds()
    return max(0.0, used / total) if total > 0 else 1.0


def outcome(deadline: Deadline, answered_at: datetime | None, now: datetime) -> str:
    """``met`` (answered by the deadline in force), ``missed`` (answered late, or not answered
    and past it), or ``open``."""
    if answered_at is not None:
        return "met" if answered_at <= deadline.until else "missed"
    return "missed" if now > deadline.until else "open"
