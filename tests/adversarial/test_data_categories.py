"""Issue 12 item 9: the data categories as the terms' privacy part B names them, and consent files
written before the rename."""

from __future__ import annotations

import logging
from pathlib import Path

import cbor2
import pytest

from tcu.services.personal import DriverProfile, PersonalStore
from telematics_wire.catalogue import Catalogue, Category

CATALOGUE = Catalogue.load()

# Privacy part B: each category with the examples the terms give, as VSS paths.
PART_B = {
    Category.VEHICLE_STATUS: (
        "Vehicle.TraveledDistance",  # Laufleistung
        "Vehicle.LowVoltageBattery.CurrentVoltage",  # Batteriespannung
        "Vehicle.OBD.ControlModuleVoltage",
        "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen",  # Tür- und Klappenstatus
        "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked",
        "Vehicle.Body.Trunk.Rear.IsOpen",
        "Vehicle.Body.Hood.IsOpen",
    ),
    Category.POSITION: (
        "Vehicle.CurrentLocation.Latitude",  # Position
        "Vehicle.CurrentLocation.Heading",
        "Vehicle.Speed",  # Geschwindigkeit
        "Vehicle.Acceleration.Longitudinal",
    ),
    Category.MAINTENANCE: (
        "Vehicle.Service.DistanceToService",  # Fälligkeit nächster Service
        "Vehicle.Service.TimeToService",
        "Vehicle.Service.IsServiceDue",
        "Vehicle.Powertrain.CombustionEngine.EngineOilLevel",  # Ölstand
        "Vehicle.Chassis.Axle.Row1.Wheel.Left.Brake.PadWear",  # Bremsenverschleiß
        "Vehicle.Chassis.Axle.Row2.Wheel.Right.Brake.PadWear",
        "Vehicle.OBD.DTCList",
    ),
    Category.TRAFFIC: ("Vehicle.Traffic.SpeedLimit",),
    Category.ENVIRONMENT: (
        "Vehicle.Exterior.AirTemperature",  # Temperatur
        "Vehicle.Body.Raindetection.Intensity",  # Regen
    ),
    Category.USER_PROFILE: ("Vehicle.Driver.Identifier.Subject", "Vehicle.Cabin.Infotainment.Media.Volume"),
    Category.SENSORS: ("Vehicle.ADAS.ObstacleDetection.IsWarning",),
}


@pytest.mark.parametrize(("category", "path"), [(c, p) for c, paths in PART_B.items() for p in paths])
def test_each_signal_is_in_the_category_the_terms_name(category: Category, path: str) -> None:
    assert CATALOGUE.category_of(path) is category


def test_mileage_is_status_data_not_maintenance() -> None:
    assert CATALOGUE.category_of("Vehicle.TraveledDistance") is Category.VEHICLE_STATUS


def test_the_seven_categories_of_part_b_with_their_names_in_the_terms() -> None:
    assert [c.label for c in Category] == [
        "Fahrzeug Statusdaten",
        "Positions- und Bewegungsdaten",
        "Fahrzeug Wartungsdaten",
        "Dynamische Verkehrsinformationen",
        "Umwelt Informationen",
        "Nutzerprofil",
        "Sensorinformationen",
    ]


def test_technical_data_is_status_and_maintenance_data() -> None:
    """Part D: the technical vehicle data (kept for the vehicle's life) are status and maintenance data."""
    assert {c for c in Category if c.technical} == {Category.VEHICLE_STATUS, Category.MAINTENANCE}


def test_every_service_names_only_known_categories() -> None:
    raw = Catalogue.load().services
    assert raw, "the catalogue lists services"
    for service in raw.values():
        assert all(isinstance(c, Category) for c in service.categories)


def _old_consent_file(path: Path, consents: dict[str, bool]) -> None:
    """A personal data file as the agent wrote it before issue 12."""
    path.write_bytes(
        cbor2.dumps(
            {
                "profiles": [{"name": "Anna", "seat": 4, "mirror": 2, "climate_c": 20.5, "radio": ["BR24"]}],
                "consents": consents,
                "accounts": ["anna@example.org"],
            },
            canonical=True,
        )
    )


def test_a_consent_file_with_the_old_driver_profile_category_still_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "personal.cbor"
    _old_consent_file(
        path,
        {"vehicle_status": True, "position": False, "maintenance": True, "environment": True, "driver_profile": False},
    )
    with caplog.at_level(logging.INFO):
        data = PersonalStore(path).load()
    # The profiles and accounts survive (an unreadable file would have wiped them) ...
    assert data.profiles == (
        DriverProfile(name="Anna", seat_position=4, mirror_position=2, climate_c=20.5, radio_presets=("BR24",)),
    )
    assert data.paired_accounts == ("anna@example.org",)
    # ... the blocked driver profile is now the blocked user profile, the rest as stored or default.
    assert not data.allows(Category.USER_PROFILE)
    assert not data.allows(Category.POSITION)
    assert data.allows(Category.TRAFFIC)
    assert data.allows(Category.SENSORS)
    assert "'driver_profile' is now 'user_profile'" in caplog.text


def test_an_unknown_category_in_a_consent_file_is_ignored_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "personal.cbor"
    _old_consent_file(path, {"position": False, "telepathy": False, "": True})
    data = PersonalStore(path).load()
    assert not data.allows(Category.POSITION)
    assert data.profiles  # not "unreadable, starting with defaults"
    assert "'telepathy' is not one of" in caplog.text
    assert "unreadable" not in caplog.text


@pytest.mark.parametrize("name", [1, True, None, b"position", 2**64])
def test_a_category_name_that_is_not_text_is_ignored(name: object) -> None:
    assert Category.from_stored(name) is None
