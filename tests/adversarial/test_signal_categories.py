"""Every signal the agent knows has an explicit data category, and a signal nobody classified is personal.

Before: a path no prefix matched fell under the bare "Vehicle" prefix, i.e. vehicle status data, which
retention keeps for ever — the steering angle, the gear, the engine speed and the seat belts among them.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from backend_stub.retention import PersonalValues
from tcu.services.personal import PersonalData
from tcu.telemetry.capabilities import capability_report
from tcu.telemetry.data_policy import DataPolicy
from telematics_wire.catalogue import UNCLASSIFIED, Catalogue, Category
from telematics_wire.entitlements import Entitlements
from telematics_wire.sim_state import SimState

CATALOGUE = Catalogue.load()
ROOT = "Vehicle"


def _vss_signals() -> list[str]:
    text = resources.files("tcu.vehicle").joinpath("vss_signals.toml").read_text(encoding="utf-8")
    return sorted(tomllib.loads(text)["signals"])


def _mapped_paths() -> list[str]:
    """The paths the shipped CAN and OBD mappings write (comments included: they are the examples people copy)."""
    mapping = Path(str(resources.files("tcu.vehicle").joinpath("mapping")))
    found = {
        m for f in mapping.glob("*.toml") for m in re.findall(r'=\s*"(Vehicle(?:\.[A-Za-z0-9]+)+)"', f.read_text())
    }
    return sorted(found - {"Vehicle.Path"})  # can.toml's placeholder in the syntax comment


def _prefix(path: str) -> str | None:
    return next((p for p, _ in CATALOGUE.prefixes if path == p or path.startswith(p + ".")), None)


@pytest.mark.parametrize("path", _vss_signals() + _mapped_paths())
def test_every_known_signal_matches_an_explicit_prefix(path: str) -> None:
    prefix = _prefix(path)
    assert prefix is not None, f"{path}: no prefix in catalogue.toml [categories]"
    assert prefix != ROOT, f"{path}: only the bare root matches"


def test_there_is_no_catch_all_prefix() -> None:
    assert ROOT not in dict(CATALOGUE.prefixes)


@pytest.mark.parametrize(
    "path",
    [
        "Vehicle.Chassis.SteeringWheel.Angle",
        "Vehicle.Powertrain.Transmission.CurrentGear",
        "Vehicle.Powertrain.CombustionEngine.Speed",
        "Vehicle.Powertrain.CombustionEngine.IsRunning",
        "Vehicle.OBD.ThrottlePosition",
        "Vehicle.OBD.EngineLoad",
        "Vehicle.LowVoltageSystemState",
        "Vehicle.Safety.CrashDetected",
    ],
)
def test_driving_behaviour_is_position_and_movement_data(path: str) -> None:
    assert CATALOGUE.category_of(path) is Category.POSITION
    assert PersonalValues(CATALOGUE).is_personal(path)


@pytest.mark.parametrize(
    "path", ["Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted", "Vehicle.Cabin.Seat.Row1.PassengerSide.IsBelted"]
)
def test_seat_belts_describe_the_occupants_not_the_car(path: str) -> None:
    assert CATALOGUE.category_of(path) is Category.SENSORS
    assert not CATALOGUE.category_of(path).technical


@pytest.mark.parametrize(
    "path",
    [
        "Vehicle.VehicleIdentification.VIN",
        "Vehicle.Powertrain.FuelSystem.RelativeLevel",
        "Vehicle.Powertrain.Range",
        "Vehicle.IsBrokenDown",
        "Vehicle.Chassis.ParkingBrake.IsEngaged",
        "Vehicle.Powertrain.CombustionEngine.EOT",
        "Vehicle.OBD.DTCList",
    ],
)
def test_the_car_s_own_condition_stays_technical(path: str) -> None:
    assert CATALOGUE.category_of(path).technical


@pytest.mark.parametrize("path", ["Vehicle.No.Such.Signal", "Vehicle", "Vehicle.Private.Decel", "Vehicle.OBDX"])
def test_an_unclassified_path_is_personal(path: str) -> None:
    assert CATALOGUE.category_of(path) is UNCLASSIFIED
    assert not UNCLASSIFIED.technical
    assert PersonalValues(CATALOGUE).is_personal(path)


def test_no_service_needs_the_unclassified_category() -> None:
    """So a production car (require_services on) collects an unclassified path for no service."""
    assert all(UNCLASSIFIED not in entry.categories for entry in CATALOGUE.services.values())


def test_the_capability_report_lists_an_unclassified_path_under_sensors() -> None:
    entitlements = Entitlements(
        legal_ecall=False,
        sim=SimState.ACTIVE,
        running=frozenset(),
        suspended=frozenset(),
        statuses={},
        version=1,
    )
    policy = DataPolicy(
        catalogue=CATALOGUE, entitlements=lambda: entitlements, personal=PersonalData, require_services=False
    )
    report = capability_report(
        entitlements=entitlements, policy=policy, available_signals=["Vehicle.No.Such.Signal"], interval_s=1.0
    )
    assert report["categories"]["sensors"]["signals"] == ["Vehicle.No.Such.Signal"]
    assert report["categories"]["vehicle_status"]["signals"] == []
