"""Service terms as the ConnectedDrive terms of service define them ("Servicebedingungen"), in UTC.

The terms (catalogue, "Dienste: ..."):

- "Zeitlich unbegrenzt" (`unlimited`): for the life of the vehicle. It can be cancelled at any time
  with six weeks' notice (AGB 6.2): it stops at notice + 6 weeks, not at once.
- "Laufzeit 5 Jahre" (`5y`): five years from the vehicle's first registration ("ab Erstzulassung").
- "Laufzeit 3 Jahre" (`2+1y`): two years from first registration, renewed once, silently, by one year
  unless the customer cancels with six weeks' notice to the end of the two years (AGB 3.2, 6.2). A
  notice on the deadline day itself is in time. There is no flat 36-month term: "3y" is refused.
- "Laufzeit 1 Jahr" (`1y`) and "Laufzeit 3 Monate" (`3m`): from the booking's start.
- A fixed term that does not renew simply runs out: it cannot be cancelled, except on sale of the
  vehicle (AGB 7.4), with six weeks' notice (and no refund). A 2+1 term on sale ends at notice + 6
  weeks too, or earlier if its own end comes first.
- A booking names an option code and one term; each service of the code runs on that term if it
  lists it, otherwise on its own (6AP booked "2+1y": Lademanagement and Remote 3D View 2+1 from
  first registration, Remote Services unlimited): `Booking.for_term` is the booking of one such service.
- Store extensions ("Nachbuchung": 12, 6 or 1 months) bought before the end extend the end; one bought
  on or after the end starts at its purchase date, so a service never ends in the past. Extensions
  bought while the service runs are summed before they are added, so that their order cannot change
  the result through clamping.

Calendar arithmetic: months are calendar months; a day that does not exist in the target month is
clamped to its last day (31 Jan + 1 month = 28/29 Feb). A term ends at midnight UTC at the start of
its end date: the service is active while `now < end`, so it works through the whole day before.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

NOTICE = timedelta(weeks=6)  # every notice period of the terms: AGB 3.2, 6.2, 7.4
RENEWAL_NOTICE = NOTICE
EXPIRING_WINDOW = timedelta(weeks=6)  # "expiring": the customer should be told to extend
EXTENSION_MONTHS = frozenset({12, 6, 1})


class Term(StrEnum):
    UNLIMITED = "unlimited"
    YEARS_5 = "5y"
    YEARS_2_PLUS_1 = "2+1y"
    YEAR_1 = "1y"
    MONTHS_3 = "3m"

    @property
    def label(self) -> str:
        """The term's name in the terms of service."""
        return _LABELS[self]

    @property
    def from_first_registration(self) -> bool:
        return self in (Term.YEARS_5, Term.YEARS_2_PLUS_1)

    @classmethod
    def of_label(cls, label: str) -> Term:
        for term, text in _LABELS.items():
            if text == label:
                return term
        raise ValueError(f"{label!r} is not a term of the terms of service ({', '.join(_LABELS.values())})")


_LABELS = {
    Term.UNLIMITED: "Zeitlich unbegrenzt",
    Term.YEARS_5: "Laufzeit 5 Jahre",
    Term.YEARS_2_PLUS_1: "Laufzeit 3 Jahre",
    Term.YEAR_1: "Laufzeit 1 Jahr",
    Term.MONTHS_3: "Laufzeit 3 Monate",
}
_MONTHS = {Term.YEARS_5: 60, Term.YEARS_2_PLUS_1: 24, Term.YEAR_1: 12, Term.MONTHS_3: 3}
ACCEPTED_TERMS = (
    "unlimited (Zeitlich unbegrenzt), 5y (Laufzeit 5 Jahre), 2+1y (Laufzeit 3 Jahre: two years, renewed once "
    "by one year unless cancelled six weeks before), 1y (Laufzeit 1 Jahr), 3m (Laufzeit 3 Monate)"
)


def parse_term(text: str) -> Term:
    """A term by its value; a refusal names the accepted ones (the flat "3y" of old is not among them)."""
    try:
        return Term(text)
    except ValueError:
        hint = " ('Laufzeit 3 Jahre' is the 2+1 rule: 2+1y)" if text == "3y" else ""
        raise ValueError(f"unknown term {text[:40]!r}{hint}; the terms are {ACCEPTED_TERMS}") from None


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


@dataclass(frozen=True, slots=True)
class Extension:
    """Months bought in the store, and the day they were bought."""

    months: int
    bought: date

    def __post_init__(self) -> None:
        if isinstance(self.months, bool) or self.months not in EXTENSION_MONTHS:
            raise ValueError(f"an extension of {self.months!r} months; the store sells 12, 6 or 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Booking:
    """One service (option code) booked in one vehicle.

    `first_registration` anchors the 5y and 2+1 terms (it is None for the others); `cancelled_on` is
    the date of a notice of cancellation, `sale` says it was given on sale of the vehicle (AGB 7.4).
    """

    code: str
    term: Term
    start: date
    first_registration: date | None = None
    extensions: tuple[Extension, ...] = ()
    cancelled_on: date | None = None
    sale: bool = False

    def __post_init__(self) -> None:
        if self.term.from_first_registration:
            if self.first_registration is None:
                raise ValueError(
                    f"service {self.code}: the term {self.term} ({self.term.label}) runs from the vehicle's first "
                    "registration (Erstzulassung), and none is given"
                )
        else:  # not part of this booking's meaning: one representation per booking
            object.__setattr__(self, "first_registration", None)
        if self.term is Term.UNLIMITED and self.extensions:
            raise ValueError(f"service {self.code}: an unlimited term cannot be extended")
        if self.sale and self.cancelled_on is None:
            raise ValueError(f"service {self.code}: a cancellation on sale needs the date of the notice")
        if self.cancelled_on is not None and not self.sale:
            self._check_notice(self.cancelled_on)

    def _check_notice(self, notice: date) -> None:
        if self.term in (Term.YEARS_5, Term.YEAR_1, Term.MONTHS_3):
            raise ValueError(
                f"service {self.code}: a {self.term} term ({self.term.label}) does not renew and cannot be "
                f"cancelled: it runs out on {self.end()} (only on sale of the vehicle, AGB 7.4, can it be "
                "cancelled with six weeks' notice)"
            )
        deadline = self.renewal_deadline()
        if deadline is not None and notice > deadline:
            raise ValueError(
                f"service {self.code}: notice on {notice} is too late to stop the renewal of its 2+1 term "
                f"(deadline {deadline}, six weeks before the end of the two years on {self.first_end()}); "
                f"the term renews to {self._natural_end(renews=True)}"
            )

    def for_term(self, term: Term, *, first_registration: date | None = None) -> Booking:
        """This booking as one included service with its own `term` runs it (a package's services keep their
        own terms: telematics_wire.catalogue `ServiceDefinition.included_terms`).

        Same code and start; the vehicle's `first_registration` (a 3m or 1y booking does not keep it, but a
        2+1y or 5y service in it runs from it; default: the booking's own). Store extensions buy more of
        the booked term, so a service on another term has none. A notice of cancellation reaches it where
        its term can be noticed: on sale always (AGB 7.4), otherwise an unlimited service (AGB 6.2: it
        stops six weeks after the notice); a 5y, 1y or 3m service runs out. Raises ValueError when `term`
        needs a first registration the booking does not have."""
        if term is self.term:
            return self
        noticed = self.sale or term is Term.UNLIMITED
        return Booking(
            code=self.code,
            term=term,
            start=self.start,
            first_registration=first_registration or self.first_registration,
            cancelled_on=self.cancelled_on if noticed else None,
            sale=self.sale and noticed,
        )

    def first_end(self) -> date | None:
        """End of the term before any renewal or extension; None for unlimited."""
        if self.term is Term.UNLIMITED:
            return None
        anchor = self.first_registration if self.term.from_first_registration else self.start
        assert anchor is not None  # checked in __post_init__
        return add_months(anchor, _MONTHS[self.term])

    def renewal_deadline(self) -> date | None:
        """Last day a 2+1 booking can be cancelled to stop the one-year renewal (inclusive)."""
        if self.term is not Term.YEARS_2_PLUS_1:
            return None
        end = self.first_end()
        assert end is not None
        return end - RENEWAL_NOTICE

    def renews(self) -> bool:
        deadline = self.renewal_deadline()
        return deadline is not None and (self.cancelled_on is None or self.cancelled_on > deadline)

    def notice_end(self) -> date | None:
        """Where a notice of cancellation ends the service: notice + 6 weeks (unlimited, or on sale)."""
        if self.cancelled_on is None or not (self.sale or self.term is Term.UNLIMITED):
            return None
        return self.cancelled_on + NOTICE

    def _stretches(self, *, renews: bool) -> list[tuple[date, date]]:
        """The [from, to) stretches the service runs in; empty for unlimited (it has no end)."""
        if self.term is Term.UNLIMITED:
            return []
        anchor = self.first_registration if self.term.from_first_registration else self.start
        assert anchor is not None  # checked in __post_init__
        months = _MONTHS[self.term] + (12 if renews else 0)
        # Extensions in purchase order: while bought before the current end they add up on the same
        # anchor (months summed first: clamping cannot make the order matter); one bought on or after
        # the end starts a new stretch at its purchase date.
        stretches: list[tuple[date, date]] = []
        begin = self.start
        for extension in sorted(self.extensions, key=lambda e: e.bought):
            end = add_months(anchor, months)
            if extension.bought < end:
                months += extension.months
            else:
                stretches.append((begin, end))
                begin = anchor = extension.bought
                months = extension.months
        return [*stretches, (begin, add_months(anchor, months))]

    def _natural_end(self, *, renews: bool) -> date | None:
        stretches = self._stretches(renews=renews)
        return stretches[-1][1] if stretches else None

    def stretches(self) -> list[tuple[date, date | None]]:
        """When the service runs, as [from, to) dates; a gap lies between a term that ran out and an
        extension bought later. Open-ended (to = None) for an unlimited service without notice."""
        noticed = self.notice_end()
        stretches: list[tuple[date, date | None]] = list(self._stretches(renews=self.renews())) or [(self.start, None)]
        if noticed is None:
            return stretches
        capped: list[tuple[date, date | None]] = [
            (begin, noticed if end is None else min(end, noticed)) for begin, end in stretches if begin < noticed
        ]
        return capped or [(self.start, self.start)]  # noticed to end before it began

    def end(self) -> date | None:
        """First day the service no longer runs; None for unlimited and not cancelled."""
        return self.stretches()[-1][1]

    def status(self, now: datetime) -> ServiceStatus:
        if now < midnight(self.start):
            return ServiceStatus.NOT_STARTED
        for begin, end in self.stretches():
            if now < midnight(begin):
                break  # in a gap: ran out, and the next extension was bought later
            if end is None:
                return ServiceStatus.ACTIVE
            ends_at = midnight(end)
            if now < ends_at:
                return ServiceStatus.EXPIRING if ends_at - now <= EXPIRING_WINDOW else ServiceStatus.ACTIVE
        return ServiceStatus.EXPIRED

    def is_running(self, now: datetime) -> bool:
        return self.status(now) in (ServiceStatus.ACTIVE, ServiceStatus.EXPIRING)
