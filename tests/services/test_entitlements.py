"""Entitlements beyond the combination table (tests/services/test_sim_table.py): deactivation, first file, terms."""

from __future__ import annotations

from datetime import UTC, datetime

from tcu.services.personal import PersonalData
from tcu.telemetry.capabilities import capability_report
from tcu.telemetry.data_policy import DataPolicy
from telematics_wire.catalogue import Catalogue
from telematics_wire.entitlements import derive
from telematics_wire.provisioning import ProvisioningFile
from telematics_wire.sim_state import SimState
from telematics_wire.terms import Term
from tests.conftest import VIN
from tests.services.provisioning_helpers import FIRST_REGISTRATION, booking

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


def test_the_capability_report_names_the_services_that_run_and_the_ones_suspended() -> None:
    file = ProvisioningFile(
        vin=VIN,
        version=3,
        issued=NOW,
        expires=NOW,
        bookings=(booking("6AP"),),
        suspended=frozenset({"6AP"}),
        first_registration=FIRST_REGISTRATION,
    )
    e = derive(file, legal_ecall_equipped=True, now=NOW)
    policy = DataPolicy(
        catalogue=Catalogue.load(), entitlements=lambda: e, personal=PersonalData, require_services=True
    )
    report = capability_report(entitlements=e, policy=policy, available_signals=(), interval_s=5.0)
    # 6AP alone brings no base service: eCall-only, so nothing runs; its paid services are suspended.
    assert (report["sim"], report["running"], report["suspended"]) == ("telematics_deactivated", [], ["6AP"])
    assert report["services_running"] == {}
    assert report["services_suspended"] == {"6AP": ["Lademanagement", "Remote 3D View"]}


def test_a_package_with_the_base_services_keeps_the_sim_without_6ae_or_6ac() -> None:
    """The reviewer's case: a car with only 6U2 booked was fully deactivated, without intelligent call."""
    file = ProvisioningFile(
        vin=VIN, version=1, issued=NOW, expires=NOW, bookings=(booking("6U2"),), first_registration=FIRST_REGISTRATION
    )
    e = derive(file, legal_ecall_equipped=False, now=NOW)
    assert (e.sim, e.intelligent_ecall, e.base_services) == (
        SimState.ACTIVE,
        True,
        {"Teleservices", "Intelligenter Notruf"},
    )
