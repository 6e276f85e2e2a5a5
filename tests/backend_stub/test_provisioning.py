"""The backend's desired state: operations, versioning, legal eCall, file history and result booking."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from backend_stub.errors import ProvisioningError, UnknownVehicleError
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_history import FileState, IssuedFile
from backend_stub.provisioning_store import ProvisioningStore
from tcu.clock import ManualClock
from telematics_wire.catalogue import Brand, Catalogue, VehicleFit
from telematics_wire.provisioning import ProvisioningFile, verify_file
from telematics_wire.terms import Booking, Extension, ServiceStatus, Term, midnight
from tests.conftest import OTHER_VIN, VIN

CATALOGUE = Catalogue.load()
TODAY = date(2026, 11, 23)
REGISTERED = date(2026, 3, 1)  # first registration: 5y and 2+1y terms run from here
STORE = "STORE-CONNECTED"  # "Connected Package (Store)": BMW, Laufzeit 1 Jahr


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProvisioningStore]:
    store = ProvisioningStore(tmp_path / "backend.sqlite3", CATALOGUE)
    for vin in (VIN, OTHER_VIN):
        store.record_build(vin, first_registration=REGISTERED, today=TODAY)
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
    issued: IssuedFile,
    key: SigningKey,
    clock: ManualClock,
    *,
    legal: bool = False,
    fit: VehicleFit = VehicleFit(first_registration=REGISTERED),  # noqa: B008 - frozen
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
        catalogue=CATALOGUE.for_vehicle(fit),
    ).file


# -- issuing ---------------------------------------------------------------------------------------


def test_booking_issues_version_1_a_complete_signed_file_the_vehicle_accepts(issuer, key, clock) -> None:
    issued = issuer.book(VIN, "6AE")  # the catalogue offers Teleservices unlimited only
    assert (issued.version, issued.state, issued.operation) == (
        1,
        FileState.PENDING,
        "book 6AE unlimited from 2026-11-23",
    )
    assert issued.expires - issued.issued == timedelta(days=30)
    file = vehicle_accepts(issued, key, clock)
    assert file.bookings == (Booking(code="6AE", term=Term.UNLIMITED, start=TODAY),)
    assert (file.suspended, file.sim, file.vin, file.first_registration) == (frozenset(), "active", VIN, REGISTERED)


def test_every_change_is_the_next_version_of_the_complete_state(issuer, key, clock) -> None:
    issuer.book(VIN, "6AE", Term.UNLIMITED)
    issuer.book(VIN, STORE, Term.YEAR_1, date(2027, 1, 1))
    issuer.extend(VIN, STORE, 12)
    last = issuer.suspend(VIN)
    assert last.version == 4
    file = vehicle_accepts(last, key, clock)
    assert [(b.code, b.term, b.extensions) for b in file.bookings] == [
        ("6AE", Term.UNLIMITED, ()),
        (STORE, Term.YEAR_1, (Extension(months=12, bought=TODAY),)),
    ]
    assert file.suspended == {STORE}


def test_versions_are_per_vehicle_and_a_refused_change_consumes_none(issuer) -> None:
    assert issuer.book(VIN, "6AE").version == 1
    assert issuer.book(OTHER_VIN, STORE, "1y").version == 1
    with pytest.raises(ProvisioningError, match="already booked"):
        issuer.book(VIN, "6AE", "unlimited")
    assert issuer.book(VIN, STORE, "1y").version == 2


def test_versions_are_never_reused_across_connections(tmp_path: Path, key, clock) -> None:
    """The CLI and the running backend each have a connection; they must never share a version."""
    path = tmp_path / "backend.sqlite3"
    first, second = ProvisioningStore(path, CATALOGUE), ProvisioningStore(path, CATALOGUE)
    try:
        counter = second.changes()
        a = make_issuer(first, key, clock).book(VIN, STORE, "1y")
        assert second.changes() != counter  # the running backend notices a file another process issued
        b = make_issuer(second, key, clock).suspend(VIN)
        c = make_issuer(first, key, clock).resume(VIN)
        assert [a.version, b.version, c.version] == [1, 2, 3]
        assert [f.state for f in first.files(VIN)] == [FileState.SUPERSEDED, FileState.SUPERSEDED, FileState.PENDING]
    finally:
        first.close()
        second.close()


def test_a_newer_version_supersedes_an_older_pending_one_but_not_a_delivered_one(issuer, store, clock) -> None:
    issuer.book(VIN, "6AE")
    store.mark_published(VIN, 1, clock.now())
    issuer.book(VIN, STORE, "1y")
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
    issued = make_issuer(store, key, clock, validity=timedelta(days=7)).book(VIN, "6AE")
    assert issued.expires == clock.now() + timedelta(days=7)
    with pytest.raises(ValueError, match="positive"):
        make_issuer(store, key, clock, validity=timedelta(0))


def test_unknown_vehicle_service_and_term_are_refused_with_the_reason(issuer) -> None:
    with pytest.raises(UnknownVehicleError, match="not enrolled"):
        issuer.book("WDB00000000000001", "6AE", "unlimited")
    with pytest.raises(ProvisioningError, match="unknown service code 'XXX'; the catalogue has 322, 612, 6AC, 6AE"):
        issuer.book(VIN, "XXX", "unlimited")
    with pytest.raises(ProvisioningError, match="unknown term '7y'"):
        issuer.book(VIN, "6AE", "7y")
    with pytest.raises(ProvisioningError, match=r"unknown term '3y' \('Laufzeit 3 Jahre' is the 2\+1 rule: 2\+1y\)"):
        issuer.book(VIN, "6AM", "3y")


def test_reissue_keeps_the_desired_state_under_a_new_version(issuer, key, clock) -> None:
    first = issuer.book(VIN, "6AE")
    clock.advance(31 * 86400)
    again = issuer.reissue(VIN, "expired")
    assert again.version == 2
    assert again.contents.bookings == first.contents.bookings
    vehicle_accepts(again, key, clock)
    with pytest.raises(ProvisioningError, match="no provisioning file"):
        issuer.reissue(OTHER_VIN, "nothing")


# -- the catalogue, the equipment, the first registration -------------------------------------------


@pytest.mark.parametrize(
    ("code", "term", "reason"),
    [
        ("6AE", "2+1y", r"service 6AE \(Teleservices\) is offered for BMW with the term\(s\) unlimited .*, not 2\+1y"),
        ("6AM", "1y", r"6AM \(Real Time Traffic Information\) is offered for BMW with the term\(s\) 2\+1y"),
        ("7GG", "unlimited", r"service 7GG \(Connected Media\) is not offered for BMW"),
        ("612", None, r"give a term; the catalogue offers for BMW: 2\+1y \(Laufzeit 3 Jahre\), 3m \(Laufzeit 3 M"),
        ("6AG", "2+1y", r"offered for BMW with the term\(s\) 5y \(Laufzeit 5 Jahre\), 2\+1y"),  # Lademanagement
    ],
)
def test_a_booking_uses_a_term_the_catalogue_offers_for_the_code_and_brand(issuer, store, code, term, reason) -> None:
    if code == "6AG":  # on a MINI, eDrive Services are "Laufzeit 3 Jahre" and Lademanagement is not offered
        store.record_build(VIN, brand=Brand.MINI, today=TODAY)
        assert issuer.book(VIN, code, term).contents.bookings[0].term is Term.YEARS_2_PLUS_1
        with pytest.raises(ProvisioningError, match=r"offered for MINI with the term\(s\) 2\+1y .*, not 5y"):
            issuer.book(VIN, code, "5y")
        return
    with pytest.raises(ProvisioningError, match=reason):
        issuer.book(VIN, code, term)
    assert store.files(VIN) == []


def test_a_code_the_vehicle_is_not_built_with_is_refused_at_booking(issuer, store, key, clock) -> None:
    record = store.record_build(VIN, equipment=frozenset({"6AE", "6AC", "6AM"}), today=TODAY)
    assert record.equipment == {"6AE", "6AC", "6AM"}
    with pytest.raises(
        ProvisioningError, match=r"not built with option code 6AP \(Lademanagement\); its equipment: 6AC, 6AE, 6AM"
    ):
        issuer.book(VIN, "6AP", "2+1y")
    fit = VehicleFit(equipment=record.equipment, first_registration=REGISTERED)
    assert vehicle_accepts(issuer.book(VIN, "6AM"), key, clock, fit=fit).codes == {"6AM"}
    assert vehicle_accepts(issuer.book(VIN, STORE), key, clock, fit=fit).codes == {"6AM", STORE}  # no option code


def test_equipment_the_catalogue_does_not_offer_is_refused_at_enrolment(store) -> None:
    with pytest.raises(ValueError, match="'6NR' is not an option code of the catalogue"):
        store.record_build(VIN, equipment=frozenset({"6NR"}), today=TODAY)
    with pytest.raises(ValueError, match=r"option code 7GG .* is not offered for BMW"):
        store.record_build(VIN, equipment=frozenset({"7GG"}), today=TODAY)
    with pytest.raises(ValueError, match=r"6AF .* legal-eCall flag"):
        store.record_build(VIN, equipment=frozenset({"6AF"}), today=TODAY)
    assert store.vehicle(VIN).equipment is None  # nothing recorded


def test_registration_terms_run_from_the_first_registration(issuer, key, clock) -> None:
    issued = issuer.book(VIN, "6AM", "2+1y")  # "Laufzeit 3 Jahre", booked months after registration
    booking = vehicle_accepts(issued, key, clock).booking("6AM")
    assert booking is not None
    assert (booking.start, booking.first_registration, booking.renewal_deadline(), booking.end()) == (
        TODAY,
        REGISTERED,
        date(2028, 1, 19),
        date(2029, 3, 1),
    )


def test_a_registration_term_needs_a_recorded_first_registration_and_must_not_have_ended(issuer, store) -> None:
    store._db.execute("UPDATE provisioning_vehicles SET first_registration=NULL WHERE vin=?", (VIN,))  # before issue 12
    with pytest.raises(ProvisioningError, match=r"first registration, which is not recorded .*--first-registration"):
        issuer.book(VIN, "6AM", "2+1y")
    store.record_build(VIN, first_registration=date(2020, 5, 1), today=TODAY)
    with pytest.raises(
        ProvisioningError, match=r"would have ended on 2023-05-01 already .*first registration on 2020-05-01"
    ):
        issuer.book(VIN, "6AM", "2+1y")
    assert issuer.book(VIN, STORE, "1y").version == 1  # a store package runs from its booking


def test_a_new_vehicle_is_first_registered_the_day_it_is_enrolled_and_re_enrolment_keeps_it(store) -> None:
    new = "WBA00000000000009"
    assert store.record_build(new, today=TODAY).first_registration == TODAY
    assert store.record_build(new, brand=Brand.BMW_I, today=date(2027, 1, 1)).first_registration == TODAY
    assert store.vehicle(new).brand is Brand.BMW_I


# -- operations ------------------------------------------------------------------------------------


def test_book_replaces_an_ended_booking_but_not_a_running_one(issuer, clock) -> None:
    issuer.book(VIN, "612", "3m")  # ends 2027-02-23
    with pytest.raises(ProvisioningError, match=r"already booked \(3m from 2026-11-23, active\); extend it or cancel"):
        issuer.book(VIN, "612", "3m", date(2030, 1, 1))
    clock.advance(100 * 86400)  # 2027-03-03
    renewed = issuer.book(VIN, "612", "3m")
    assert renewed.contents.bookings == (Booking(code="612", term=Term.MONTHS_3, start=date(2027, 3, 3)),)


def test_a_booking_that_would_have_ended_already_is_refused(issuer) -> None:
    with pytest.raises(ProvisioningError, match=r"from 2026-01-01 would have ended on 2026-04-01 already"):
        issuer.book(VIN, "612", "3m", date(2026, 1, 1))


def test_an_unlimited_service_stops_six_weeks_after_the_notice(issuer, key, clock) -> None:
    issuer.book(VIN, "6AE")
    issued = issuer.cancel(VIN, "6AE", on=date(2027, 5, 10))
    assert issued.operation == "cancel 6AE on 2027-05-10"
    booking = vehicle_accepts(issued, key, clock).booking("6AE")
    assert booking is not None  # still in the file: it runs until the notice period is over
    assert booking.cancelled_on == date(2027, 5, 10)
    assert booking.end() == date(2027, 6, 21)
    assert booking.is_running(midnight(date(2027, 6, 20)))
    assert booking.status(midnight(date(2027, 6, 21))) is ServiceStatus.EXPIRED
    with pytest.raises(ProvisioningError, match="already has a notice of cancellation dated 2027-05-10"):
        issuer.cancel(VIN, "6AE")


def test_a_2_plus_1_term_noticed_by_its_deadline_does_not_renew(issuer) -> None:
    issuer.book(VIN, "6AM", "2+1y")  # two years from 2026-03-01: deadline 2028-01-19
    [booking] = issuer.cancel(VIN, "6AM", on=date(2028, 1, 19)).contents.bookings  # the deadline day is in time
    assert (booking.cancelled_on, booking.end()) == (date(2028, 1, 19), date(2028, 3, 1))


def test_a_late_notice_against_a_2_plus_1_renewal_is_refused_with_the_reason(issuer, store) -> None:
    issuer.book(VIN, "6AM", "2+1y")
    with pytest.raises(
        ProvisioningError, match=r"notice on 2028-01-20 is too late .*deadline 2028-01-19.*renews to 2029-03-01.*--sale"
    ):
        issuer.cancel(VIN, "6AM", on=date(2028, 1, 20))
    assert [f.version for f in store.files(VIN)] == [1]


@pytest.mark.parametrize(("code", "term"), [(STORE, "1y"), ("612", "3m"), ("6AG", "5y")])
def test_a_fixed_term_that_does_not_renew_runs_out_and_is_cancelled_only_on_sale(
    issuer, key, clock, code, term
) -> None:
    issuer.book(VIN, code, term)
    with pytest.raises(
        ProvisioningError, match=r"does not renew and cannot be cancelled: it runs out on .*--sale \(AGB 7.4\)"
    ):
        issuer.cancel(VIN, code, on=date(2026, 12, 1))
    issued = issuer.cancel(VIN, code, on=date(2026, 12, 1), sale=True)
    assert issued.operation == f"cancel {code} on 2026-12-01 (sale of the vehicle)"
    booking = vehicle_accepts(issued, key, clock).booking(code)
    assert booking is not None
    assert (booking.sale, booking.end()) == (True, min(date(2027, 1, 12), date(2027, 2, 23)))


def test_legal_ecall_can_never_be_cancelled_even_on_a_vehicle_recorded_without_it(issuer) -> None:
    issuer.book(VIN, "6AE")
    with pytest.raises(ProvisioningError, match=r"legal eCall \(6AF\) cannot be cancelled"):
        issuer.cancel(VIN, "6AF", sale=True)


def test_cancelling_the_contract_gives_notice_to_what_can_be_noticed(issuer, key, clock) -> None:
    issuer.book(VIN, "6AE")
    issuer.book(VIN, "6AM", "2+1y")
    issuer.book(VIN, STORE, "1y")
    issued = issuer.cancel_contract(VIN, on=date(2027, 2, 1))
    file = vehicle_accepts(issued, key, clock)
    ends = {b.code: (b.cancelled_on, b.end()) for b in file.bookings}
    assert ends == {
        "6AE": (date(2027, 2, 1), date(2027, 3, 15)),  # unlimited: six weeks' notice
        "6AM": (date(2027, 2, 1), date(2028, 3, 1)),  # in time: no renewal
        STORE: (None, date(2027, 11, 23)),  # runs out
    }
    with pytest.raises(ProvisioningError, match="no unlimited service and no 2\\+1 term still in time"):
        issuer.cancel_contract(VIN, on=date(2027, 2, 2))


def test_an_extension_bought_before_the_end_extends_it(issuer) -> None:
    issuer.book(VIN, STORE, "1y", date(2026, 1, 31))  # ends 2027-01-31
    issued = issuer.extend(VIN, STORE, 1)
    assert issued.operation == f"extend {STORE} by 1 months bought on 2026-11-23"
    assert issued.contents.bookings[0].end() == date(2027, 2, 28)
    with pytest.raises(ProvisioningError, match="sold in 12, 6 or 1 months, not 3"):
        issuer.extend(VIN, STORE, 3)
    issuer.book(VIN, "6AE", "unlimited")
    with pytest.raises(ProvisioningError, match="an unlimited term cannot be extended"):
        issuer.extend(VIN, "6AE", 12)
    with pytest.raises(ProvisioningError, match="not booked"):
        issuer.extend(VIN, "6AM", 12)


def test_an_extension_bought_after_the_end_starts_at_the_purchase(issuer, key, clock) -> None:
    issuer.book(VIN, "612", "3m", date(2026, 9, 1))  # ran out on 2026-12-01
    clock.advance(90 * 86400)  # 2027-02-21
    issued = issuer.extend(VIN, "612", 6)
    booking = vehicle_accepts(issued, key, clock).booking("612")
    assert booking is not None
    assert booking.end() == date(2027, 8, 21)  # not 2027-06-01: it would have ended in the past
    assert booking.status(clock.now()) is ServiceStatus.ACTIVE
    assert booking.status(midnight(date(2027, 1, 10))) is ServiceStatus.EXPIRED  # not retroactively


def test_a_noticed_service_cannot_be_extended(issuer) -> None:
    issuer.book(VIN, "6AM", "2+1y")
    issuer.cancel(VIN, "6AM")
    with pytest.raises(ProvisioningError, match="has a notice of cancellation dated 2026-11-23: it cannot be extended"):
        issuer.extend(VIN, "6AM", 12)


def test_suspend_and_resume_toggle_payment_default_and_refuse_what_changes_nothing(issuer) -> None:
    issuer.book(VIN, "6AE")
    issuer.book(VIN, STORE, "1y")
    assert issuer.suspend(VIN).contents.suspended == {STORE}
    with pytest.raises(ProvisioningError, match="already suspended"):
        issuer.suspend(VIN)
    assert not issuer.resume(VIN).contents.suspended
    with pytest.raises(ProvisioningError, match="nothing to resume"):
        issuer.resume(VIN)


def test_suspend_names_codes_and_without_them_takes_every_paid_booked_code(issuer) -> None:
    """Payment default is per invoiced code (AGB 5.5 c "die betroffenen Dienste"): free unlimited codes,
    codes not booked and legal eCall are refused with the reason; without codes every paid one."""
    for code, term in (("6AE", "unlimited"), ("6AC", "unlimited"), ("6AM", "2+1y"), (STORE, "1y")):
        issuer.book(VIN, code, term)
    assert issuer.suspend(VIN, ["6AM"]).operation == "suspend 6AM (payment default)"
    for codes, reason in (
        (["6AE"], "6AE cannot be suspended: service 6AE has no fixed-term service"),
        (["6AC"], "6AC cannot be suspended: service 6AC has no fixed-term service"),
        (["6AP"], "6AP cannot be suspended: service '6AP' is not booked"),
        (["6AF"], r"6AF cannot be suspended: legal eCall \(6AF\)"),
        (["6AM"], "already suspended for payment default: 6AM"),
        ([], "name at least one option code"),
    ):
        with pytest.raises(ProvisioningError, match=reason):
            issuer.suspend(VIN, codes)
    assert issuer.suspend(VIN).contents.suspended == {"6AM", STORE}
    assert issuer.resume(VIN, [STORE]).contents.suspended == {"6AM"}
    with pytest.raises(ProvisioningError, match="not suspended: 6AE"):
        issuer.resume(VIN, ["6AE"])
    assert not issuer.resume(VIN).contents.suspended


def test_a_new_booking_replacing_an_ended_one_does_not_inherit_its_suspension(issuer, clock) -> None:
    issuer.book(VIN, "612", "3m")  # BMW Assist, Laufzeit 3 Monate
    issuer.suspend(VIN, ["612"])
    clock.advance(120 * 86400)
    with pytest.raises(ProvisioningError, match="612 ended on"):
        issuer.suspend(VIN, ["612"])
    assert not issuer.book(VIN, "612", "3m").contents.suspended


def test_deactivating_the_sim_and_booking_again_reactivates_it(issuer, key, clock) -> None:
    issuer.book(VIN, "6AE")
    off = issuer.deactivate_sim(VIN)
    assert vehicle_accepts(off, key, clock).sim == "deactivated"
    with pytest.raises(ProvisioningError, match="already deactivated"):
        issuer.deactivate_sim(VIN)
    assert issuer.book(VIN, STORE, "1y").contents.sim == "active"


# -- legal eCall -----------------------------------------------------------------------------------


def test_the_dealer_deactivation_of_a_legal_ecall_vehicle_ends_the_base_services_and_keeps_the_sim(
    issuer, store, key, clock
) -> None:
    """ "Wie kann ich die Dienste deaktivieren": with the legal eCall only 6AE and 6AC are deactivated;
    the SIM and the legal eCall stay."""
    store.set_legal_ecall(VIN, True)
    issuer.book(VIN, "6AE")
    issuer.book(VIN, "6AC")
    issuer.book(VIN, STORE, "1y")
    off = vehicle_accepts(issuer.deactivate_sim(VIN), key, clock, legal=True)
    assert off.codes == {"6AF", STORE}
    assert off.sim == "active"  # the file keeps the SIM; with no base service the car derives eCall-only
    with pytest.raises(ProvisioningError, match="eCall-only already"):
        issuer.deactivate_sim(VIN)


def test_every_file_of_a_legal_ecall_vehicle_carries_6af_unlimited(issuer, store, key, clock) -> None:
    assert store.set_legal_ecall(VIN, True)
    files = [issuer.book(VIN, STORE, "1y"), issuer.suspend(VIN), issuer.cancel(VIN, STORE, sale=True)]
    for issued in files:
        legal = vehicle_accepts(issued, key, clock, legal=True).booking("6AF")
        assert legal == Booking(code="6AF", term=Term.UNLIMITED, start=TODAY)
    assert files[-1].contents.codes == {"6AF", STORE}
    assert files[1].contents.suspended == {STORE}, "legal eCall is never suspended"


@pytest.mark.parametrize(
    ("operation", "reason"),
    [
        (lambda i: i.cancel(VIN, "6AF"), r"legal eCall \(6AF\) cannot be cancelled"),
        (lambda i: i.book(VIN, "6AF", "unlimited"), r"legal eCall \(6AF\) is not booked"),
        (lambda i: i.extend(VIN, "6AF", 12), "an unlimited term cannot be extended"),
    ],
)
def test_what_the_vehicle_would_refuse_is_refused_by_the_backend_too(issuer, store, operation, reason) -> None:
    store.set_legal_ecall(VIN, True)
    issuer.book(VIN, "6AE")
    with pytest.raises(ProvisioningError, match=reason):
        operation(issuer)
    assert [f.version for f in store.files(VIN)] == [1]


def test_a_vehicle_without_legal_ecall_never_gets_6af(issuer, store, key, clock) -> None:
    assert not store.set_legal_ecall(VIN, None)  # a new vehicle: no
    with pytest.raises(ProvisioningError, match=r"6AF\) is not booked"):
        issuer.book(VIN, "6AF", "unlimited")
    assert "6AF" not in vehicle_accepts(issuer.book(VIN, "6AE"), key, clock).codes


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
            st.sampled_from(
                [
                    "book",
                    "cancel",
                    "sale",
                    "contract",
                    "extend",
                    "suspend",
                    "suspend_code",
                    "resume",
                    "resume_code",
                    "end_unpaid",
                    "deactivate_sim",
                    "reissue",
                ]
            ),
            st.sampled_from(["6AE", "6AC", "6AF", "6AM", "612", "6AG", STORE]),
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
    store.record_build(VIN, first_registration=REGISTERED, today=TODAY)
    issuer = make_issuer(store, key, clock)
    version = 0
    try:
        for name, code, term, months, offset in operations:
            day = TODAY + timedelta(days=offset)
            calls = {
                "book": lambda: issuer.book(VIN, code, term, day),  # noqa: B023 - called at once
                "cancel": lambda: issuer.cancel(VIN, code, day),  # noqa: B023
                "sale": lambda: issuer.cancel(VIN, code, day, sale=True),  # noqa: B023
                "contract": lambda: issuer.cancel_contract(VIN, day),  # noqa: B023
                "extend": lambda: issuer.extend(VIN, code, months, day),  # noqa: B023
                "suspend": lambda: issuer.suspend(VIN),
                "suspend_code": lambda: issuer.suspend(VIN, [code]),  # noqa: B023
                "resume": lambda: issuer.resume(VIN),
                "resume_code": lambda: issuer.resume(VIN, [code]),  # noqa: B023
                "end_unpaid": lambda: issuer.end_unpaid(VIN, [code], why="test"),  # noqa: B023
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
