"""The terms of the ConnectedDrive terms of service ("Servicebedingungen", AGB 3.2, 6.2, 7.4) as dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telematics_wire.terms import Booking, Extension, ServiceStatus, Term, add_months, midnight, parse_term

REGISTERED = date(2026, 3, 1)  # first registration ("Erstzulassung")
BOOKED = date(2026, 11, 23)


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
        (Term.MONTHS_3, date(2027, 2, 23)),  # "Laufzeit 3 Monate": from the booking
        (Term.YEAR_1, date(2027, 11, 23)),  # "Laufzeit 1 Jahr": from the booking
        (Term.YEARS_5, date(2031, 3, 1)),  # "Laufzeit 5 Jahre": ab Erstzulassung
        (Term.YEARS_2_PLUS_1, date(2029, 3, 1)),  # "Laufzeit 3 Jahre": 2 years ab Erstzulassung, renewed by 1
        (Term.UNLIMITED, None),  # "Zeitlich unbegrenzt"
    ],
)
def test_each_term_ends_where_the_terms_say(term: Term, end: date | None) -> None:
    assert Booking(code="6AE", term=term, start=BOOKED, first_registration=REGISTERED).end() == end


def test_the_terms_are_named_as_in_the_terms_of_service() -> None:
    assert [t.label for t in Term] == [
        "Zeitlich unbegrenzt",
        "Laufzeit 5 Jahre",
        "Laufzeit 3 Jahre",
        "Laufzeit 1 Jahr",
        "Laufzeit 3 Monate",
    ]
    assert Term.of_label("Laufzeit 3 Jahre") is Term.YEARS_2_PLUS_1


@pytest.mark.parametrize("text", ["3y", "36m", "2y", "", "UNLIMITED"])
def test_there_is_no_flat_three_year_term(text: str) -> None:
    with pytest.raises(ValueError, match=r"the terms are unlimited .*5y .*2\+1y .*1y .*3m") as caught:
        parse_term(text)
    if text == "3y":
        assert "'Laufzeit 3 Jahre' is the 2+1 rule" in str(caught.value)


@pytest.mark.parametrize("term", [Term.YEARS_5, Term.YEARS_2_PLUS_1])
def test_registration_anchored_terms_need_the_first_registration(term: Term) -> None:
    with pytest.raises(ValueError, match="first registration \\(Erstzulassung\\)"):
        Booking(code="6AM", term=term, start=BOOKED)


def test_a_first_registration_means_nothing_to_the_other_terms() -> None:
    booking = Booking(code="6AE", term=Term.YEAR_1, start=BOOKED, first_registration=REGISTERED)
    assert booking == Booking(code="6AE", term=Term.YEAR_1, start=BOOKED)


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


def _two_plus_one(**kwargs: object) -> Booking:
    return Booking(code="6AM", term=Term.YEARS_2_PLUS_1, start=BOOKED, first_registration=REGISTERED, **kwargs)  # type: ignore[arg-type]


def test_two_plus_one_cancelled_by_the_deadline_does_not_renew() -> None:
    deadline = date(2028, 3, 1) - timedelta(weeks=6)  # 2028-01-19: six weeks before the two years end
    assert _two_plus_one().renewal_deadline() == deadline == date(2028, 1, 19)
    on_time = _two_plus_one(cancelled_on=deadline)  # the deadline day itself is in time
    early = _two_plus_one(cancelled_on=date(2027, 1, 1))
    assert on_time.end() == early.end() == date(2028, 3, 1)
    assert not on_time.is_running(midnight(date(2028, 3, 1)))
    assert _two_plus_one().is_running(midnight(date(2029, 2, 28)))  # not cancelled: renewed by one year


def test_a_late_notice_against_the_renewal_is_refused_with_the_deadline() -> None:
    with pytest.raises(ValueError, match=r"too late.*deadline 2028-01-19.*renews to 2029-03-01"):
        _two_plus_one(cancelled_on=date(2028, 1, 20))


def test_two_plus_one_from_a_leap_day() -> None:
    booking = Booking(
        code="6AM", term=Term.YEARS_2_PLUS_1, start=date(2028, 2, 29), first_registration=date(2028, 2, 29)
    )
    assert booking.renewal_deadline() == date(2030, 2, 28) - timedelta(weeks=6)
    assert booking.end() == date(2031, 2, 28)


def test_an_unlimited_service_stops_six_weeks_after_the_notice_not_at_once() -> None:
    notice = date(2027, 5, 10)
    booking = Booking(code="6AE", term=Term.UNLIMITED, start=BOOKED, cancelled_on=notice)
    assert booking.end() == date(2027, 6, 21)
    assert booking.is_running(midnight(notice) + timedelta(days=1))
    assert booking.status(midnight(date(2027, 6, 20))) is ServiceStatus.EXPIRING
    assert booking.status(midnight(date(2027, 6, 21))) is ServiceStatus.EXPIRED


@pytest.mark.parametrize("term", [Term.YEARS_5, Term.YEAR_1, Term.MONTHS_3])
def test_a_fixed_term_that_does_not_renew_runs_out_and_cannot_be_cancelled(term: Term) -> None:
    with pytest.raises(ValueError, match=r"does not renew and cannot be cancelled: it runs out on .*AGB 7.4"):
        Booking(code="6AE", term=term, start=BOOKED, first_registration=REGISTERED, cancelled_on=date(2027, 1, 1))


@pytest.mark.parametrize("term", [Term.YEARS_5, Term.YEARS_2_PLUS_1, Term.YEAR_1])
def test_on_sale_a_fixed_term_stops_six_weeks_after_the_notice(term: Term) -> None:
    booking = Booking(
        code="6AE", term=term, start=BOOKED, first_registration=REGISTERED, cancelled_on=date(2027, 1, 4), sale=True
    )
    assert booking.end() == date(2027, 2, 15)


def test_on_sale_a_term_ending_within_the_notice_keeps_its_own_end() -> None:
    booking = Booking(code="6AE", term=Term.MONTHS_3, start=BOOKED, cancelled_on=date(2027, 2, 1), sale=True)
    assert booking.end() == date(2027, 2, 23)  # before the notice's 2027-03-15


def test_an_extension_bought_before_the_end_extends_the_end() -> None:
    booking = Booking(
        code="6AE", term=Term.YEAR_1, start=BOOKED, extensions=(Extension(months=6, bought=date(2027, 10, 1)),)
    )
    assert booking.end() == date(2028, 5, 23)


def test_an_extension_bought_after_the_end_starts_at_the_purchase() -> None:
    bought = date(2028, 4, 10)  # the 1y term ended on 2027-11-23
    booking = Booking(code="6AE", term=Term.YEAR_1, start=BOOKED, extensions=(Extension(months=1, bought=bought),))
    assert booking.end() == date(2028, 5, 10)
    assert booking.is_running(midnight(bought))
    assert not booking.is_running(midnight(bought) - timedelta(seconds=1))  # not retroactively


def test_an_extension_bought_on_the_last_day_of_the_term_adds_to_its_end() -> None:
    booking = Booking(
        code="6AE", term=Term.YEAR_1, start=BOOKED, extensions=(Extension(months=1, bought=date(2027, 11, 22)),)
    )
    assert booking.end() == date(2027, 12, 23)


def test_extensions_bought_while_running_add_up_in_any_order() -> None:
    start = date(2027, 1, 31)
    a = (Extension(months=1, bought=date(2027, 2, 1)), Extension(months=12, bought=date(2027, 3, 1)))
    b = (Extension(months=12, bought=date(2027, 2, 1)), Extension(months=1, bought=date(2027, 3, 1)))
    assert (
        Booking(code="6AE", term=Term.MONTHS_3, start=start, extensions=a).end()
        == Booking(code="6AE", term=Term.MONTHS_3, start=start, extensions=b).end()
        == date(2028, 5, 31)
    )
    renewed = _two_plus_one(extensions=(Extension(months=6, bought=date(2027, 1, 1)),))
    assert renewed.end() == date(2029, 9, 1)


@pytest.mark.parametrize(
    ("term", "extensions"),
    [(Term.YEAR_1, (Extension(months=12, bought=BOOKED),)), (Term.UNLIMITED, (Extension(months=12, bought=BOOKED),))],
)
def test_an_unlimited_term_cannot_be_extended(term: Term, extensions: tuple[Extension, ...]) -> None:
    if term is Term.UNLIMITED:
        with pytest.raises(ValueError, match="unlimited term cannot be extended"):
            Booking(code="6AE", term=term, start=BOOKED, extensions=extensions)
    else:
        assert Booking(code="6AE", term=term, start=BOOKED, extensions=extensions).end() == date(2028, 11, 23)


@pytest.mark.parametrize("months", [0, 2, 3, 24, True, -1])
def test_the_store_sells_twelve_six_or_one_months(months: int) -> None:
    with pytest.raises(ValueError, match="the store sells 12, 6 or 1"):
        Extension(months=months, bought=BOOKED)


@settings(max_examples=300, deadline=None)
@given(
    term=st.sampled_from([Term.YEARS_5, Term.YEARS_2_PLUS_1, Term.YEAR_1, Term.MONTHS_3]),
    start=st.dates(date(2020, 1, 1), date(2040, 1, 1)),
    purchases=st.lists(
        st.tuples(st.sampled_from([12, 6, 1]), st.integers(min_value=0, max_value=4000)), min_size=1, max_size=5
    ),
)
def test_a_service_never_ends_in_the_past_of_its_last_purchase(
    term: Term, start: date, purchases: list[tuple[int, int]]
) -> None:
    extensions = tuple(Extension(months=m, bought=start + timedelta(days=d)) for m, d in purchases)
    booking = Booking(code="6AE", term=term, start=start, first_registration=start, extensions=extensions)
    end = booking.end()
    assert end is not None
    last = max(e.bought for e in extensions)
    assert end > last  # every purchase buys time from the day it is made
    assert booking.is_running(midnight(last))
    without = Booking(code="6AE", term=term, start=start, first_registration=start).end()
    assert without is not None
    assert end >= without  # buying never shortens


def test_status_uses_utc_instants() -> None:
    booking = Booking(code="6AE", term=Term.YEAR_1, start=date(2026, 11, 23))
    assert booking.status(datetime(2027, 11, 22, 23, 59, 59, tzinfo=UTC)).value == "expiring"


def test_a_service_on_its_own_term_in_a_booking_keeps_start_and_first_registration() -> None:
    """612 booked "Laufzeit 3 Monate": its Online-Streckenführung lists only "Laufzeit 3 Jahre", so it runs
    2+1 from first registration, which the 3m booking itself does not keep."""
    booking = Booking(code="612", term=Term.MONTHS_3, start=BOOKED, extensions=(Extension(12, date(2027, 1, 5)),))
    own = booking.for_term(Term.YEARS_2_PLUS_1, first_registration=REGISTERED)
    assert (own.start, own.first_end(), own.extensions) == (BOOKED, date(2028, 3, 1), ())  # extensions buy 3m
    assert booking.end() == date(2028, 2, 23)  # 3 months + the 12 bought
    assert booking.for_term(Term.MONTHS_3) is booking
    with pytest.raises(ValueError, match="runs from the vehicle's first registration"):
        booking.for_term(Term.YEARS_5)


def test_a_notice_reaches_a_service_on_its_own_term_as_that_term_allows() -> None:
    noticed = Booking(
        code="6AP", term=Term.YEARS_2_PLUS_1, start=BOOKED, first_registration=REGISTERED, cancelled_on=date(2027, 1, 5)
    )
    assert noticed.for_term(Term.UNLIMITED).end() == date(2027, 2, 16)  # AGB 6.2: six weeks
    on_sale = Booking(code="612", term=Term.MONTHS_3, start=BOOKED, cancelled_on=date(2026, 12, 1), sale=True)
    assert on_sale.for_term(Term.YEARS_2_PLUS_1, first_registration=REGISTERED).end() == date(2027, 1, 12)
    five = Booking(code="6AG", term=Term.YEARS_5, start=BOOKED, first_registration=REGISTERED)
    assert five.for_term(Term.YEARS_2_PLUS_1).renews(), "a 5y booking carries no notice: its 2+1 service renews"
