"""Service terms: how long a booked service runs, in calendar arithmetic, in UTC.

- Months are calendar months; a day that does not exist in the target month is clamped to its
  last day (31 Jan + 1 month = 28/29 Feb; 29 Feb 2024 + 12 months = 28 Feb 2025).
- A term ends at midnight UTC at the start of its end date: the service is active while
  `now < end`, so it works through the whole day before.
- "2+1": 24 months, renewed once by 12 months unless cancelled at least six weeks (42 days) before
  the end of the 24 months. A cancellation on the deadline day itself is in time.
- Extensions bought in the store (12, 6 or 1 months) are added to the end of the term, summed first
  so that the order of purchase cannot change the result through clamping.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

RENEWAL_NOTICE = timedelta(weeks=6)
EXPIRING_WINDOW = timedelta(weeks=6)  # "expiring": the customer should be told to extend
EXTENSION_MONTHS = frozenset({12, 6, 1})


class Term(StrEnum):
    UNLIMITED = "unlimited"
    YEARS_5 = "5y"
    YEARS_3 = "3y"
    YEARS_2_PLUS_1 = "2+1y"
    YEAR_1 = "1y"
    MONTHS_3 = "3m"


_MONTHS = {Term.YEARS_5: 60, Term.YEARS_3: 36, Term.YEARS_2_PLUS_1: 24, Term.YEAR_1: 12, Term.MONTHS_3: 3}


class ServiceStatus(StrEnum):
    NOT_STARTED = "not_started"
    ACTIVE = "active"
    EXPIRING = "expiring"  # active, ending within six weeks
    EXPIRED = "expired"


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Booking:
    """One service booked in one vehicle."""

    code: str
    term: Term
    start: date
    extensions: tuple[int, ...] = ()
    cancelled_on: date | None = None  # notice of cancellation; matters for the 2+1 renewal

    def __post_init__(self) -> None:
        bad = [m for m in self.extensions if m not in EXTENSION_MONTHS]
        if bad:
            raise ValueError(f"service {self.code}: extensions of {bad} months; the store sells 12, 6 or 1")
        if self.term is Term.UNLIMITED and self.extensions:
            raise ValueError(f"service {self.code}: an unlimited term cannot be extended")

    def renewal_deadline(self) -> date | None:
        """Last day a 2+1 booking can be cancelled to stop the one-year renewal."""
        if self.term is not Term.YEARS_2_PLUS_1:
            return None
        return add_months(self.start, 24) - RENEWAL_NOTICE

    def renews(self) -> bool:
        deadline = self.renewal_deadline()
        return deadline is not None and (self.cancelled_on is None or self.cancelled_on > deadline)

    def end(self) -> date | None:
        """First day the service no longer runs; None for unlimited."""
        if self.term is Term.UNLIMITED:
            return None
        months = _MONTHS[self.term] + (12 if self.renews() else 0)
        return add_months(self.start, months + sum(self.extensions))

    def status(self, now: datetime) -> ServiceStatus:
        if now < midnight(self.start):
            return ServiceStatus.NOT_STARTED
        end = self.end()
        if end is None:
            return ServiceStatus.ACTIVE
        ends_at = midnight(end)
        if now >= ends_at:
            return ServiceStatus.EXPIRED
        return ServiceStatus.EXPIRING if ends_at - now <= EXPIRING_WINDOW else ServiceStatus.ACTIVE

    def is_running(self, now: datetime) -> bool:
        return self.status(now) in (ServiceStatus.ACTIVE, ServiceStatus.EXPIRING)
