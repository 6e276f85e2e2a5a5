"""The backend's desired state: operations, versioning, legal eCall, file history and result booking."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from backend_stub.errors import UnknownVehicleError
from backend_stub.provisioning import (
    FileState,
    IssuedFile,
    ProvisioningError,
    ProvisioningIssuer,
)
from backend_stub.provisioning_store import ProvisioningStore
from tcu.clock import ManualClock
from tcu.services.catalogue import Catalogue
from tcu.services.provisioning import ProvisioningFile, verify_file
from tcu.services.terms import Booking, Term
from tests.conftest import OTHER_VIN, VIN

CATALOGUE = Catalogue.load()
TODAY = date(2026, 11, 23)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProvisioningStore]:
    store = ProvisioningStore(tmp_path / "backend.sqlite3", CATALOGUE)
    yield store
    store.close()


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def make_issuer(store: ProvisioningStore, key: SigningKey, clock: ManualClock, **kwargs: object) -> ProvisioningIssuer:
    return ProvisioningIssuer(
        store,
        signing_key=key,
        clock=clock,
        enrolled=lambda vin: vin in (VIN, OTHER_VIN),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def issuer(store: ProvisioningStore, key: SigningKey, clock: ManualClock) -> ProvisioningIssuer:
    return make_issuer(store, key, clock)


def vehicle_accepts(
    issued: IssuedFile, key: SigningKey, clock: ManualClock, *, legal: bool = False
) -> ProvisioningFile:
    """Every check the vehicle makes, with its own code: the backend must never issue what it refuses."""
    return verify_file(
        issued.signed,
        key.verify_key,
        vin=issued.vin,
        now=clock.now(),
        applied=None,
        applied_version=issued.version - 1,
        legal_ecall_equipped=legal,
        catalogue=CATALOGUE,
    ).file


# -- issuing ---------------------------------------------------------------------------------------


def test_booking_issues_version_1_a_complete_signed_file_the_vehicle_accepts(issuer, key, clock) -> None:
    issued = issuer.book(VIN, "6AE", "3y")
    assert (issued.version, issued.state, issued.operation) == (1, FileState.PENDING, "book 6AE 3y from 2026-11-23")
    assert issued.expires - issued.issued == timedelta(days=30)
    file = vehicle_accepts(issued, key, clock)
    assert file.bookings == (Booking(code="6AE", term=Term.YEARS_3, start=TODAY),)
    assert (file.payment_default, file.sim, file.vin) == (False, "active", VIN)


def test_every_change_is_the_next_version_of_the_complete_state(issuer, key, clock) -> None:
    issuer.book(VIN, "6AE", Term.YEARS_3)
    issuer.book(VIN, "6NR", Term.YEAR_1, date(2027, 1, 1))
    issuer.extend(VIN, "6AE", 12)
    last = issuer.suspend(VIN)
    assert last.version == 4
    file = vehicle_accepts(last, key, clock)
    assert [(b.code, b.term, b.extensions) for b in file.bookings] == [
        ("6AE", Term.YEARS_3, (12,)),
        ("6NR", Term.YEAR_1, ()),
    ]
    assert file.payment_default


def test_versions_are_per_vehicle_and_a_refused_change_consumes_none(issuer) -> None:
    assert issuer.book(VIN, "6AE", "3y").version == 1
    assert issuer.book(OTHER_VIN, "6AE", "1y").version == 1
    with pytest.raises(ProvisioningError, match="already booked"):
        issuer.book(VIN, "6AE", "5y")
    assert issuer.suspend(VIN).version == 2


def test_versions_are_never_reused_across_connections(tmp_path: Path, key, clock) -> None:
    """The CLI and the running backend each have a connection; they must never share a version."""
    path = tmp_path / "backend.sqlite3"
    first, second = ProvisioningStore(path, CATALOGUE), ProvisioningStore(path, CATALOGUE)
    try:
        counter = second.changes()
        a = make_issuer(first, key, clock).book(VIN, "6AE", "3y")
        assert second.changes() != counter  # the running backend notices a file another process issued
        b = make_issuer(second, key, clock).suspend(VIN)
        c = make_issuer(first, key, clock).resume(VIN)
        assert [a.version, b.version, c.version] == [1, 2, 3]
        assert [f.state for f in first.files(VIN)] == [FileState.SUPERSEDED, FileState.SUPERSEDED, FileState.PENDING]
    finally:
        first.close()
        second.close()


def test_a_newer_version_supersedes_an_older_pending_one_but_not_a_delivered_one(issuer, store, clock) -> None:
    issuer.book(VIN, "6AE", "3y")
    store.mark_published(VIN, 1, clock.now())
    issuer.book(VIN, "6NR", "1y")
    issuer.suspend(VIN)
    states = [(f.version, f.state, f.reason) for f in store.files(VIN)]
    assert states == [
        (1, FileState.DELIVERED, None),
        (2, FileState.SUPERSEDED, "version 3 issued before this one was published"),
        (3, FileState.PENDING, None),
    ]
    assert store.pending_vins() == [VIN]
    assert store.head(VIN).version == 3  # type: ignore[union-attr]


def test_expiry_is_configurable(store, key, clock) -> None:
    issued = make_issuer(store, key, clock, validity=timedelta(days=7)).book(VIN, "6AE", "3y")
    assert issued.expires == clock.now() + timedelta(days=7)
    with pytest.raises(ValueError, match="positive"):
        make_issuer(store, key, clock, validity=timedelta(0))


def test_unknown_vehicle_service_and_term_are_refused_with_the_reason(issuer) -> None:
    with pytest.raises(UnknownVehicleError, match="not enrolled"):
        issuer.book("WDB00000000000001", "6AE", "3y")
    with pytest.raises(ProvisioningError, match="unknown service code 'XXX'; the catalogue has 6AC, 6AE"):
        issuer.book(VIN, "XXX", "3y")
    with pytest.raises(ProvisioningError, match="unknown term '7y'"):
        issuer.book(VIN, "6AE", "7y")


def test_reissue_keeps_the_desired_state_under_a_new_version(issuer, key, clock) -> None:
    first = issuer.book(VIN, "6AE", "3y")
    clock.advance(31 * 86400)
    again = issuer.reissue(VIN, "expired")
    assert again.version == 2
    assert again.contents.bookings == first.contents.bookings
    vehicle_accepts(again, key, clock)
    with pytest.raises(ProvisioningError, match="no provisioning file"):
        issuer.reissue(OTHER_VIN, "nothing")


# -- operations ------------------------------------------------------------------------------------


def test_book_replaces_an_ended_booking_but_not_a_running_one(issuer, clock) -> None:
    issuer.book(VIN, "6AE", "3m", date(2026, 1, 1))  # ended 2026-04-01
    renewed = issuer.book(VIN, "6AE", "1y")
    assert renewed.contents.bookings == (Booking(code="6AE", term=Term.YEAR_1, start=TODAY),)
    with pytest.raises(ProvisioningError, match=r"already booked \(1y from 2026-11-23, active\); extend it or cancel"):
        issuer.book(VIN, "6AE", "1y", date(2030, 1, 1))


def test_cancel_a_2_plus_1_term_records_the_notice_and_the_terms_decide_the_end(issuer) -> None:
    start = date(2026, 1, 1)  # renewal deadline: 2028-01-01 minus six weeks = 2027-11-20
    issuer.book(VIN, "6AE", "2+1y", start)
    issued = issuer.cancel(VIN, "6AE", on=date(2027, 11, 20))
    [booking] = issued.contents.bookings
    assert booking.cancelled_on == date(2027, 11, 20)
    assert booking.end() == date(2028, 1, 1)
    with pytest.raises(ProvisioningError, match="already has a notice of cancellation dated 2027-11-20"):
        issuer.cancel(VIN, "6AE")
    issuer.book(VIN, "6NR", "2+1y", start)
    late = issuer.cancel(VIN, "6NR", on=date(2027, 11, 21)).contents.booking("6NR")
    assert late is not None
    assert late.end() == date(2029, 1, 1)


def test_cancel_without_date_notices_today(issuer) -> None:
    issuer.book(VIN, "6AE", "2+1y")
    assert issuer.cancel(VIN, "6AE").contents.bookings[0].cancelled_on == TODAY


def test_cancel_other_terms_removes_the_service_and_refuses_a_date(issuer) -> None:
    issuer.book(VIN, "6AE", "3y")
    issuer.book(VIN, "6NR", "1y")
    with pytest.raises(ProvisioningError, match=r"applies to 2\+1 terms only.*cancel it without a date"):
        issuer.cancel(VIN, "6NR", on=date(2027, 1, 1))
    issued = issuer.cancel(VIN, "6NR")
    assert issued.contents.codes == {"6AE"}
    with pytest.raises(ProvisioningError, match="service 6NR is not booked"):
        issuer.cancel(VIN, "6NR")


def test_extend_adds_store_months_to_the_end(issuer) -> None:
    issuer.book(VIN, "6AE", "1y", date(2026, 1, 31))
    issued = issuer.extend(VIN, "6AE", 1)
    assert issued.contents.bookings[0].end() == date(2027, 2, 28)
    with pytest.raises(ProvisioningError, match="sold in 12, 6 or 1 months, not 3"):
        issuer.extend(VIN, "6AE", 3)
    issuer.book(VIN, "6AK", "unlimited")
    with pytest.raises(ProvisioningError, match="an unlimited term cannot be extended"):
        issuer.extend(VIN, "6AK", 12)
    with pytest.raises(ProvisioningError, match="not booked"):
        issuer.extend(VIN, "6NR", 12)


def test_suspend_and_resume_toggle_payment_default_and_refuse_what_changes_nothing(issuer) -> None:
    issuer.book(VIN, "6AE", "3y")
    assert issuer.suspend(VIN).contents.payment_default
    with pytest.raises(ProvisioningError, match="already suspended"):
        issuer.suspend(VIN)
    assert not issuer.resume(VIN).contents.payment_default
    with pytest.raises(ProvisioningError, match="nothing to resume"):
        issuer.resume(VIN)


def test_deactivating_the_sim_and_booking_again_reactivates_it(issuer, key, clock) -> None:
    issuer.book(VIN, "6AE", "3m", date(2026, 1, 1))
    off = issuer.deactivate_sim(VIN)
    assert vehicle_accepts(off, key, clock).sim == "deactivated"
    with pytest.raises(ProvisioningError, match="already deactivated"):
        issuer.deactivate_sim(VIN)
    assert issuer.book(VIN, "6AE", "1y").contents.sim == "active"


# -- legal eCall -----------------------------------------------------------------------------------


def test_every_file_of_a_legal_ecall_vehicle_carries_6af_unlimited(issuer, store, key, clock) -> None:
    assert store.set_legal_ecall(VIN, True)
    files = [issuer.book(VIN, "6AE", "3m"), issuer.suspend(VIN), issuer.cancel(VIN, "6AE")]
    for issued in files:
        legal = vehicle_accepts(issued, key, clock, legal=True).booking("6AF")
        assert legal == Booking(code="6AF", term=Term.UNLIMITED, start=TODAY)
    assert files[-1].contents.codes == {"6AF"}


@pytest.mark.parametrize(
    ("operation", "reason"),
    [
        (lambda i: i.deactivate_sim(VIN), "the SIM of a vehicle with legal eCall cannot be deactivated"),
        (lambda i: i.cancel(VIN, "6AF"), r"legal eCall \(6AF\) cannot be cancelled"),
        (lambda i: i.book(VIN, "6AF", "unlimited"), r"legal eCall \(6AF\) is not booked"),
        (lambda i: i.extend(VIN, "6AF", 12), "an unlimited term cannot be extended"),
    ],
)
def test_what_the_vehicle_would_refuse_is_refused_by_the_backend_too(issuer, store, operation, reason) -> None:
    store.set_legal_ecall(VIN, True)
    issuer.book(VIN, "6AE", "3y")
    with pytest.raises(ProvisioningError, match=reason):
        operation(issuer)
    assert [f.version for f in store.files(VIN)] == [1]


def test_a_vehicle_without_legal_ecall_never_gets_6af(issuer, store, key, clock) -> None:
    assert not store.set_legal_ecall(VIN, None)  # a new vehicle: no
    with pytest.raises(ProvisioningError, match=r"6AF\) is not booked"):
        issuer.book(VIN, "6AF", "unlimited")
    assert "6AF" not in vehicle_accepts(issuer.book(VIN, "6AE", "3y"), key, clock).codes


def test_legal_ecall_equipment_is_kept_unless_said_otherwise(store) -> None:
    assert store.set_legal_ecall(VIN, True)
    assert store.set_legal_ecall(VIN, None)  # re-enrolment without the option keeps it
    assert not store.set_legal_ecall(VIN, False)
    assert not store.legal_ecall(OTHER_VIN)


@settings(max_examples=40, deadline=None)
@given(
    legal=st.booleans(),
    operations=st.lists(
        st.tuples(
            st.sampled_from(["book", "cancel", "extend", "suspend", "resume", "deactivate_sim", "reissue"]),
            st.sampled_from(["6AE", "6AC", "6AF", "6NR"]),
            st.sampled_from(list(Term)),
            st.sampled_from([1, 6, 12]),
            st.integers(min_value=-800, max_value=400),
        ),
        max_size=12,
    ),
)
def test_any_sequence_of_operations_issues_only_files_the_vehicle_accepts(legal, operations) -> None:
    clock = ManualClock(wall=datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    key = SigningKey.generate()
    store = ProvisioningStore(Path(":memory:"), CATALOGUE)
    store.set_legal_ecall(VIN, legal)
    issuer = make_issuer(store, key, clock)
    version = 0
    try:
        for name, code, term, months, offset in operations:
            day = TODAY + timedelta(days=offset)
            calls = {
                "book": lambda: issuer.book(VIN, code, term, day),  # noqa: B023 - called at once
                "cancel": lambda: issuer.cancel(VIN, code, day if term is Term.YEARS_2_PLUS_1 else None),  # noqa: B023
                "extend": lambda: issuer.extend(VIN, code, months),  # noqa: B023
                "suspend": lambda: issuer.suspend(VIN),
                "resume": lambda: issuer.resume(VIN),
                "deactivate_sim": lambda: issuer.deactivate_sim(VIN),
                "reissue": lambda: issuer.reissue(VIN, "test"),
            }
            try:
                issued = calls[name]()
            except ProvisioningError:
                continue
            version += 1
            assert issued.version == version
            vehicle_accepts(issued, key, clock, legal=legal)
            clock.advance(3600)
    finally:
        store.close()
