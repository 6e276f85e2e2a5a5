"""The capability service answers at request time from what the backend knows: the entitlements of the
file the car applied (terms ending by the clock), the SIM, the privacy part of the car's report and the
signals the car has delivered — never the report's own verdict of what it transmits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend_stub.cardata.capability import PRIVACY_BLOCKED, Capability, capabilities, privacy_blocked
from backend_stub.cardata.catalogue import load_cardata_catalogue
from tcu.services.personal import PersonalData
from tcu.telemetry.capabilities import capability_report
from tcu.telemetry.data_policy import DataPolicy
from telematics_wire.catalogue import Catalogue, Category
from telematics_wire.entitlements import derive
from tests.backend_stub.cardata.cardata_world import START, CardataWorld, Snapshot, open_world
from tests.conftest import VIN

DOOR_SIGNAL = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"
LATITUDE_SIGNAL = "Vehicle.CurrentLocation.Latitude"
DOOR = "vehicle.cabin.door.row1.driver.isOpen"
LATITUDE = "vehicle.cabin.infotainment.navigation.currentLocation.latitude"
MILEAGE = "vehicle.vehicle.travelledDistance"
TYRE = "vehicle.chassis.axle.row1.wheel.left.tire.pressure"
ECALL = "vehicle.safety.emergencyCall.lastCallTime"


@pytest.fixture
def world(tmp_path: Path, blank_cardata_database: Snapshot) -> Iterator[CardataWorld]:
    world = open_world(tmp_path, snapshot=blank_cardata_database)
    world.enroll(VIN)
    world.send(VIN, {DOOR_SIGNAL: False, LATITUDE_SIGNAL: 48.1, "Vehicle.TraveledDistance": 1200.5})
    yield world
    world.close()


def _car_report(world: CardataWorld, *, blocked: Category | None = None, require_services: bool = False) -> None:
    """The car's own capability report (tcu.telemetry), made under its privacy settings."""
    personal = PersonalData() if blocked is None else PersonalData().with_consent(blocked, False)
    entitlements = derive(None, legal_ecall_equipped=False, now=world.now())
    policy = DataPolicy(
        catalogue=Catalogue.load(),
        entitlements=lambda: entitlements,
        personal=lambda: personal,
        require_services=require_services,
    )
    signals = (DOOR_SIGNAL, LATITUDE_SIGNAL, "Vehicle.TraveledDistance")
    world.report(
        VIN, capability_report(entitlements=entitlements, policy=policy, available_signals=signals, interval_s=5.0)
    )


def _by_key(world: CardataWorld) -> dict[str, Capability]:
    found = capabilities(
        VIN, now=world.now(), catalogue=load_cardata_catalogue(), provisioning=world.provisioning, records=world.records
    )
    return {capability.key: capability for capability in found}


def test_the_privacy_reason_read_is_the_cars_own_wording() -> None:
    entitlements = derive(None, legal_ecall_equipped=False, now=START)
    policy = DataPolicy(
        catalogue=Catalogue.load(),
        entitlements=lambda: entitlements,
        personal=lambda: PersonalData().with_consent(Category.POSITION, False),
        require_services=False,
    )
    assert policy.verdict(Category.POSITION).reason == PRIVACY_BLOCKED


def test_a_bench_car_without_provisioning_offers_what_it_delivered(world: CardataWorld) -> None:
    found = _by_key(world)
    assert found[DOOR].available
    assert found[DOOR].min_interval_s == 1.0
    assert found[LATITUDE].available
    assert not found[TYRE].available
    assert "has not delivered Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure" in found[TYRE].reason
    assert not found[ECALL].available  # no emergency call of any kind on this vehicle
    world.provisioning.set_legal_ecall(VIN, True)
    assert _by_key(world)[ECALL].available


def test_the_customers_privacy_setting_from_the_report_blocks_its_category(world: CardataWorld) -> None:
    _car_report(world, blocked=Category.POSITION)
    found = _by_key(world)
    assert not found[LATITUDE].available
    assert "blocked" in found[LATITUDE].reason
    assert found[DOOR].available  # vehicle status is allowed
    assert found[MILEAGE].available


def test_the_reports_verdict_is_not_taken(world: CardataWorld) -> None:
    # The car says it transmits nothing (its own service gate, no services), but the backend has
    # applied no file for it: the backend's own knowledge decides.
    _car_report(world, require_services=True)
    found = _by_key(world)
    assert found[DOOR].available
    assert found[LATITUDE].available


def test_running_services_decide_once_the_car_applied_a_file(world: CardataWorld) -> None:
    file = world.issuer.book(VIN, "6AE")  # Teleservices: vehicle status and maintenance only
    assert _by_key(world)[LATITUDE].available  # issued, not yet applied: not in force in the car
    world.apply(VIN, file.contents.version)
    found = _by_key(world)
    assert found[DOOR].available
    assert not found[LATITUDE].available
    assert "no running service uses" in found[LATITUDE].reason


def test_a_term_that_ends_ends_the_capability_without_a_new_report(world: CardataWorld) -> None:
    world.provisioning.record_build(VIN, first_registration=world.now().date(), today=world.now().date())
    world.issuer.book(VIN, "6AE")
    file = world.issuer.book(VIN, "6AM", "2+1y", world.now().date())  # 3 years with its renewal
    world.apply(VIN, file.contents.version)
    assert _by_key(world)[LATITUDE].available
    world.clock.advance(timedelta(days=4 * 366).total_seconds())
    found = _by_key(world)
    assert not found[LATITUDE].available
    assert found[DOOR].available


def test_an_inactive_sim_makes_nothing_available_but_the_emergency_call(world: CardataWorld) -> None:
    world.provisioning.set_legal_ecall(VIN, True)
    world.issuer.book(VIN, "6AE")
    file = world.issuer.deactivate_sim(VIN)
    world.apply(VIN, file.contents.version)
    found = _by_key(world)
    assert not found[DOOR].available
    assert "SIM" in found[DOOR].reason
    assert found[ECALL].available  # eCall records go up whatever the SIM


def test_a_sim_the_car_reports_inactive_carries_nothing(world: CardataWorld) -> None:
    world.report(VIN, {"type": "capabilities", "sim": "fully_deactivated", "categories": {}})
    found = _by_key(world)
    assert not found[DOOR].available
    assert "reports its SIM fully_deactivated" in found[DOOR].reason


@pytest.mark.parametrize(
    "report",
    [
        None,
        {},
        {"categories": "nope"},
        {"categories": {"position": "x", "sensors": {"reason": 7}, "nonsense": {"reason": PRIVACY_BLOCKED}}},
        {"categories": {"position": {"reason": PRIVACY_BLOCKED, "signals": [1, None, {"x": 1}]}}},
    ],
)
def test_a_malformed_report_blocks_no_more_than_it_says(report: dict[str, object] | None) -> None:
    blocked = privacy_blocked(report)
    assert blocked <= {Category.POSITION}


def test_a_malformed_report_stored_for_the_vehicle_does_not_break_the_service(world: CardataWorld) -> None:
    world.report(VIN, {"sim": 12, "categories": {"position": {"reason": PRIVACY_BLOCKED, "signals": [None, 5]}}})
    found = _by_key(world)
    assert found[DOOR].available
    assert not found[LATITUDE].available
