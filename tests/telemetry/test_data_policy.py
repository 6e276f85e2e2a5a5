from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tcu.clock import ManualClock
from tcu.config import QueueConfig
from tcu.services.personal import PersonalData
from tcu.telemetry.capabilities import capability_report
from tcu.telemetry.data_policy import DataPolicy
from tcu.telemetry.snapshots import SnapshotTelemetry
from tcu.uplink.outbox import Outbox
from tcu.vehicle.state import Signal, VehicleState
from telematics_wire.catalogue import Catalogue, Category
from telematics_wire.entitlements import derive
from telematics_wire.provisioning import ProvisioningFile
from tests.conftest import VIN
from tests.services.provisioning_helpers import FIRST_REGISTRATION, booking

CATALOGUE = Catalogue.load()
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
SIGNALS = {
    "Vehicle.Speed": 50.0,
    "Vehicle.CurrentLocation.Latitude": 48.1,
    "Vehicle.TraveledDistance": 12345.6,
    "Vehicle.Exterior.AirTemperature": 18.0,
    "Vehicle.LowVoltageBattery.CurrentVoltage": 14.1,
}


def _policy(personal: PersonalData, codes: tuple[str, ...] | None, require_services: bool) -> DataPolicy:
    file = (
        None
        if codes is None
        else ProvisioningFile(
            vin=VIN,
            version=1,
            issued=NOW,
            expires=NOW,
            bookings=tuple(booking(c) for c in codes),
            first_registration=FIRST_REGISTRATION,
        )
    )
    entitlements = derive(file, legal_ecall_equipped=False, now=NOW)
    return DataPolicy(
        catalogue=CATALOGUE,
        entitlements=lambda: entitlements,
        personal=lambda: personal,
        require_services=require_services,
    )


def test_categories_of_signals() -> None:
    assert CATALOGUE.category_of("Vehicle.CurrentLocation.Latitude") is Category.POSITION
    assert CATALOGUE.category_of("Vehicle.TraveledDistance") is Category.VEHICLE_STATUS  # Laufleistung
    assert CATALOGUE.category_of("Vehicle.Exterior.AirTemperature") is Category.ENVIRONMENT
    assert CATALOGUE.category_of("Vehicle.LowVoltageBattery.CurrentVoltage") is Category.VEHICLE_STATUS
    # prefix on path segments: not Vehicle.Speed's; unclassified, so personal (catalogue.UNCLASSIFIED)
    assert CATALOGUE.category_of("Vehicle.SpeedLimit") is Category.SENSORS


async def test_blocked_category_is_never_collected(tmp_path: Path, vehicle_box, clock: ManualClock) -> None:
    from telematics_wire.envelope import seal_record  # noqa: PLC0415

    state = VehicleState()
    for path, value in SIGNALS.items():
        state.update(Signal(path=path, value=value, timestamp=NOW, source="test"))
    policy = _policy(PersonalData().with_consent(Category.POSITION, False), None, require_services=False)
    async with Outbox(
        tmp_path / "q.sqlite3",
        sealer=lambda s, r, e: seal_record(vehicle_box, VIN, s, r, epoch=e),
        clock=clock,
        config=QueueConfig(),
        max_envelope_bytes=65536,
    ) as outbox:
        record = await SnapshotTelemetry(
            state=state, outbox=outbox, clock=clock, interval_s=1, on_queued=lambda: None, select=policy.allowed_paths
        ).take()
    assert record is not None
    assert set(record.body["signals"]) == set(SIGNALS) - {"Vehicle.Speed", "Vehicle.CurrentLocation.Latitude"}


def test_with_services_required_only_running_services_categories_go() -> None:
    policy = _policy(PersonalData(), ("6AE",), require_services=True)  # Teleservices: status + maintenance
    assert policy.allows("Vehicle.TraveledDistance")
    assert policy.allows("Vehicle.LowVoltageBattery.CurrentVoltage")
    assert not policy.allows("Vehicle.CurrentLocation.Latitude")
    assert policy.verdict(Category.POSITION).reason == "no running service uses this category"
    assert not _policy(PersonalData(), (), require_services=True).allows("Vehicle.TraveledDistance")


def test_capability_report_lists_categories_with_reasons() -> None:
    codes = ("6AE", "6AM")
    policy = _policy(PersonalData().with_consent(Category.ENVIRONMENT, False), codes, require_services=True)
    entitlements = derive(
        ProvisioningFile(
            vin=VIN,
            version=4,
            issued=NOW,
            expires=NOW,
            bookings=tuple(booking(c) for c in codes),
            first_registration=FIRST_REGISTRATION,
        ),
        legal_ecall_equipped=True,
        now=NOW,
    )
    report = capability_report(entitlements=entitlements, policy=policy, available_signals=SIGNALS, interval_s=5.0)
    assert report["provisioning_version"] == 4
    assert report["legal_ecall"] is True
    assert report["running"] == ["6AE", "6AM"]
    categories = report["categories"]
    assert categories["position"]["transmitted"] is True
    assert categories["position"]["interval_s"] == 5.0
    assert categories["position"]["signals"] == ["Vehicle.CurrentLocation.Latitude", "Vehicle.Speed"]
    assert categories["environment"] == {
        "transmitted": False,
        "reason": "blocked by the customer's privacy setting",
        "signals": ["Vehicle.Exterior.AirTemperature"],
        "interval_s": None,
    }
    assert categories["user_profile"]["reason"] == "no such signals on this vehicle"
