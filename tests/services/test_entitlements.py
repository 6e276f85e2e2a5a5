"""The SIM and eCall rules over every combination of equipment, services and payment state."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from tcu.services.entitlements import derive
from tcu.services.provisioning import ProvisioningFile
from tcu.services.sim import SimState
from tcu.services.terms import Term
from tests.conftest import VIN
from tests.services.provisioning_helpers import booking

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
COMBINATIONS = list(itertools.product([False, True], repeat=5))  # legal, 6AE, 6AC, 6NR, payment default


def _file(legal: bool, teleservices: bool, intelligent: bool, navigation: bool, payment_default: bool):  # type: ignore[no-untyped-def]
    codes = [c for c, on in (("6AE", teleservices), ("6AC", intelligent), ("6NR", navigation)) if on]
    bookings = [booking(c) for c in codes] + ([booking("6AF", Term.UNLIMITED)] if legal else [])
    return ProvisioningFile(
        vin=VIN, version=1, issued=NOW, expires=NOW, bookings=tuple(bookings), payment_default=payment_default
    )


@pytest.mark.parametrize(("legal", "tele", "intelligent", "nav", "default"), COMBINATIONS)
def test_rules_hold_for_every_combination(legal: bool, tele: bool, intelligent: bool, nav: bool, default: bool) -> None:
    e = derive(_file(legal, tele, intelligent, nav, default), legal_ecall_equipped=legal, now=NOW)
    # Legal eCall works whatever the contract says, and its SIM is never deactivated.
    assert e.legal_ecall is legal
    if legal:
        assert e.sim is not SimState.FULLY_DEACTIVATED
    # Payment default suspends every booked service, the manufacturer's emergency call included.
    if default:
        assert e.running == frozenset()
        assert not e.intelligent_ecall
        assert e.suspended == {c for c, on in (("6AE", tele), ("6AC", intelligent), ("6NR", nav)) if on}
        assert e.sim is SimState.TELEMATICS_DEACTIVATED
    # With a base service running the SIM is active and everything booked runs.
    elif tele or intelligent:
        assert e.sim is SimState.ACTIVE
        assert e.running == {c for c, on in (("6AE", tele), ("6AC", intelligent), ("6NR", nav)) if on}
        assert e.intelligent_ecall is intelligent
    # Without base services: eCall-only on a legal-eCall vehicle, otherwise the SIM is off.
    else:
        assert e.sim is (SimState.TELEMATICS_DEACTIVATED if legal else SimState.FULLY_DEACTIVATED)
        assert e.running == frozenset()
        assert not e.intelligent_ecall


def test_explicit_sim_deactivation_applies_only_without_legal_ecall() -> None:
    file = ProvisioningFile(vin=VIN, version=1, issued=NOW, expires=NOW, bookings=(booking("6AE"),), sim="deactivated")
    assert derive(file, legal_ecall_equipped=False, now=NOW).sim is SimState.FULLY_DEACTIVATED
    assert derive(file, legal_ecall_equipped=False, now=NOW).running == frozenset()


def test_a_vehicle_never_provisioned_keeps_its_sim_to_receive_its_first_file() -> None:
    e = derive(None, legal_ecall_equipped=True, now=NOW)
    assert (e.sim, e.legal_ecall, e.running, e.version) == (SimState.ACTIVE, True, frozenset(), 0)


def test_an_expired_term_stops_its_service() -> None:
    file = ProvisioningFile(
        vin=VIN,
        version=1,
        issued=NOW,
        expires=NOW,
        bookings=(booking("6AE", Term.MONTHS_3), booking("6NR", Term.YEARS_3)),
    )
    assert derive(file, legal_ecall_equipped=False, now=NOW).running == {"6AE", "6NR"}
    later = datetime(2027, 2, 1, tzinfo=UTC)  # 6AE's three months ended: the SIM goes with the base service
    assert derive(file, legal_ecall_equipped=False, now=later).sim is SimState.FULLY_DEACTIVATED
