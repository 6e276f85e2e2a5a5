from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tcu.services.terms import Booking, ServiceStatus, Term, add_months, midnight


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # leap year
        (date(2024, 2, 29), 12, date(2025, 2, 28)),  # from a leap day
        (date(2024, 2, 29), 48, date(2028, 2, 29)),
        (date(2026, 11, 30), 3, date(2027, 2, 28)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),  # across a year end
        (date(2026, 5, 31), -1, date(2026, 4, 30)),
    ],
)
def test_calendar_months_clamp_to_the_last_day(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


@pytest.mark.parametrize(
    ("term", "end"),
    [
        (Term.MONTHS_3, date(2027, 2, 23)),
        (Term.YEAR_1, date(2027, 11, 23)),
        (Term.YEARS_3, date(2029, 11, 23)),
        (Term.YEARS_5, date(2031, 11, 23)),
        (Term.YEARS_2_PLUS_1, date(2029, 11, 23)),  # not cancelled: renewed once by a year
        (Term.UNLIMITED, None),
    ],
)
def test_each_term_ends_where_it_should(term: Term, end: date | None) -> None:
    assert Booking(code="6AE", term=term, start=date(2026, 11, 23)).end() == end


def test_expiry_at_midnight_utc() -> None:
    booking = Booking(code="6AE", term=Term.YEAR_1, start=date(2026, 11, 23))
    last_instant = midnight(date(2027, 11, 23)) - timedelta(microseconds=1)
    assert booking.status(last_instant) is ServiceStatus.EXPIRING
    assert booking.is_running(last_instant)
    assert booking.status(midnight(date(2027, 11, 23))) is ServiceStatus.EXPIRED
    assert booking.status(midnight(date(2026, 11, 23)) - timedelta(seconds=1)) is ServiceStatus.NOT_STARTED
    assert booking.status(midnight(date(2026, 11, 23))) is ServiceStatus.ACTIVE


def test_expiring_window_is_six_weeks() -> None:
    booking = Booking(code="6AE", term=Term.MONTHS_3, start=date(2026, 11, 23))
    end = midnight(date(2027, 2, 23))
    assert booking.status(end - timedelta(weeks=6)) is ServiceStatus.EXPIRING
    assert booking.status(end - timedelta(weeks=6, seconds=1)) is ServiceStatus.ACTIVE


def test_two_plus_one_cancelled_by_the_deadline_does_not_renew() -> None:
    start = date(2026, 11, 23)
    deadline = date(2028, 11, 23) - timedelta(weeks=6)  # 2028-10-12
    assert Booking(code="6AE", term=Term.YEARS_2_PLUS_1, start=start).renewal_deadline() == deadline
    on_time = Booking(code="6AE", term=Term.YEARS_2_PLUS_1, start=start, cancelled_on=deadline)
    late = Booking(code="6AE", term=Term.YEARS_2_PLUS_1, start=start, cancelled_on=deadline + timedelta(days=1))
    early = Booking(code="6AE", term=Term.YEARS_2_PLUS_1, start=start, cancelled_on=date(2027, 1, 1))
    assert on_time.end() == early.end() == date(2028, 11, 23)
    assert late.end() == date(2029, 11, 23)
    assert late.is_running(midnight(date(2029, 11, 22)))
    assert not on_time.is_running(midnight(date(2028, 11, 23)))


def test_two_plus_one_from_a_leap_day() -> None:
    booking = Booking(code="6AE", term=Term.YEARS_2_PLUS_1, start=date(2028, 2, 29))
    assert booking.renewal_deadline() == date(2030, 2, 28) - timedelta(weeks=6)
    assert booking.end() == date(2031, 2, 28)


def test_extensions_add_to_the_end_in_any_order() -> None:
    start = date(2027, 1, 31)
    a = Booking(code="6NR", term=Term.MONTHS_3, start=start, extensions=(1, 12))
    b = Booking(code="6NR", term=Term.MONTHS_3, start=start, extensions=(12, 1))
    assert a.end() == b.end() == date(2028, 5, 31)
    renewed = Booking(code="6AE", term=Term.YEARS_2_PLUS_1, start=date(2026, 11, 23), extensions=(6,))
    assert renewed.end() == date(2030, 5, 23)


@pytest.mark.parametrize(("term", "extensions"), [(Term.YEAR_1, (2,)), (Term.UNLIMITED, (12,))])
def test_invalid_extensions_are_refused(term: Term, extensions: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"extend|extensions"):
        Booking(code="6AE", term=term, start=date(2026, 1, 1), extensions=extensions)


def test_status_uses_utc_instants() -> None:
    booking = Booking(code="6AE", term=Term.YEAR_1, start=date(2026, 11, 23))
    assert booking.status(datetime(2027, 11, 22, 23, 59, 59, tzinfo=UTC)).value == "expiring"
