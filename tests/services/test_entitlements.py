"""Entitlements beyond the combination table (tests/services/test_sim_table.py): deactivation, first file, terms."""

from __future__ import annotations

from datetime import UTC, datetime

from tcu.services.entitlements import derive
from tcu.services.provisioning import ProvisioningFile
from tcu.services.sim import SimState
from tcu.services.terms import Term
from tests.conftest import VIN
from tests.services.provisioning_helpers import booking

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def test_explicit_sim_deactivation_applies_only_without_legal_ecall() -> None:
    file = ProvisioningFile(
        vin=VIN, version=1, issued=NOW, expires=NOW, bookings=(booking("6AE", Term.UNLIMITED),), sim="deactivated"
    )
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
        bookings=(booking("6AE", Term.MONTHS_3), booking("6AM", Term.YEAR_1)),
    )
    assert derive(file, legal_ecall_equipped=False, now=NOW).running == {"6AE", "6AM"}
    later = datetime(2027, 2, 1, tzinfo=UTC)  # 6AE's three months ended: the SIM goes with the base service
    assert derive(file, legal_ecall_equipped=False, now=later).sim is SimState.FULLY_DEACTIVATED
