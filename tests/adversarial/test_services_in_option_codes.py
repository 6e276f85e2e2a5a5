"""Any booking the catalogue offers, any codes in payment default, any day: the services inside the codes
behave as the terms say (AGB 1.3, 3.2, 5.5 c, 6.1), and the file means the same after the wire."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from telematics_wire.catalogue import BASE_SERVICES, INTELLIGENT_ECALL_SERVICE, Brand, Catalogue, VehicleFit
from telematics_wire.entitlements import derive
from telematics_wire.provisioning import ProvisioningFile, check_fit, encode_payload, parse_payload
from telematics_wire.sim_state import SimState
from telematics_wire.terms import Booking, Term
from tests.conftest import VIN

CATALOGUE = Catalogue.load()
REGISTERED = date(2026, 11, 1)
ISSUED = datetime(2026, 11, 23, tzinfo=UTC)


@st.composite
def files(draw: st.DrawFn) -> tuple[Brand, bool, ProvisioningFile]:
    brand = draw(st.sampled_from(list(Brand)))
    codes = sorted(c for c, e in CATALOGUE.services.items() if brand in e.brands and c != "6AF")
    chosen = draw(st.lists(st.sampled_from(codes), unique=True, max_size=6))
    bookings = []
    for code in chosen:
        term = draw(st.sampled_from(CATALOGUE.services[code].terms_for(brand)))
        start = REGISTERED + timedelta(days=draw(st.integers(0, 400)))
        bookings.append(Booking(code=code, term=term, start=start, first_registration=REGISTERED))
    legal = draw(st.booleans())
    if legal:
        bookings.append(Booking(code="6AF", term=Term.UNLIMITED, start=REGISTERED))
    suspended = frozenset(draw(st.lists(st.sampled_from(chosen), unique=True))) if chosen else frozenset()
    file = ProvisioningFile(
        vin=VIN,
        version=1,
        issued=ISSUED,
        expires=ISSUED + timedelta(days=30),
        bookings=tuple(bookings),
        suspended=suspended,
        first_registration=REGISTERED,
    )
    return brand, legal, file


@settings(max_examples=300, deadline=None)
@given(files(), st.integers(0, 8 * 365))
def test_the_services_inside_the_codes_follow_the_terms(case: tuple[Brand, bool, ProvisioningFile], day: int) -> None:
    brand, legal, file = case
    fit = VehicleFit(brand=brand, first_registration=REGISTERED)
    catalogue = CATALOGUE.for_vehicle(fit)
    check_fit(file, CATALOGUE, fit)  # every generated booking is one the terms offer
    now = ISSUED + timedelta(days=day)
    e = derive(file, legal_ecall_equipped=legal, now=now, catalogue=catalogue)

    for code, names in {**e.services_running, **e.services_suspended}.items():
        assert names <= {s.name for s in CATALOGUE.services[code].services_for(brand)}
    for code, names in e.services_suspended.items():
        assert code in file.suspended, "only the codes the backend names are suspended"
        booking = file.booking(code)
        assert booking is not None
        terms = dict((s.name, t) for s, t in CATALOGUE.services[code].included_terms(brand, booking.term))
        assert all(terms[name] is not Term.UNLIMITED for name in names), "never an unlimited (free) service"
    assert "6AF" not in e.running | e.suspended
    # The SIM follows the base services, wherever they come from (AGB 6.1).
    if e.base_services:
        assert e.sim is SimState.ACTIVE
    if e.sim is SimState.ACTIVE:
        assert e.base_services, "an active SIM on a provisioned car needs a base service"
    if not legal:
        assert e.sim is not SimState.TELEMATICS_DEACTIVATED
    assert e.intelligent_ecall is (e.sim is SimState.ACTIVE and INTELLIGENT_ECALL_SERVICE in e.base_services)
    assert e.base_services <= BASE_SERVICES
    # The same file after the wire: the same entitlements.
    again = parse_payload(encode_payload(file), catalogue, vin=VIN)
    assert again == file
    assert derive(again, legal_ecall_equipped=legal, now=now, catalogue=catalogue) == e
