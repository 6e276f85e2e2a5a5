"""Issue 12 item 9: the simulated drive produces the status, maintenance and environment data of the terms."""

from __future__ import annotations

import pytest

from tcu.sources.simulated import sample_signals
from tcu.vehicle.drive_cycle import SECONDS_PER_DAY, DriveCycle, OilLevel, oil_level
from tcu.vehicle.vss_catalogue import INTEGER_RANGES, vss_spec
from telematics_wire.catalogue import Catalogue, Category

CATALOGUE = Catalogue.load()


def test_condition_based_service_counts_down_with_the_odometer_and_the_calendar() -> None:
    cycle = DriveCycle(distance_to_service_km=10.0, time_to_service_s=2 * SECONDS_PER_DAY)
    start, later = cycle.at(0.0), cycle.at(3600.0)
    driven = later.odometer_km - start.odometer_km
    assert driven > 20  # about 27 km in an hour of the urban cycle
    assert later.distance_to_service_km == pytest.approx(10.0 - driven, abs=0.1)
    assert later.time_to_service_s == start.time_to_service_s - 3600
    assert not start.service_due
    assert later.service_due  # overdue by distance: negative, as VSS defines it


def test_the_service_date_comes_closer_while_parked_the_distance_does_not() -> None:
    cycle = DriveCycle(parked=((100.0, 100_000.0),))
    a, b = cycle.at(200.0), cycle.at(90_000.0)
    assert a.distance_to_service_km == b.distance_to_service_km
    assert a.time_to_service_s - b.time_to_service_s == 89_800


def test_oil_level_falls_slowly_and_brake_pads_wear_with_distance() -> None:
    cycle = DriveCycle(start_oil_pct=30.0, oil_pct_per_1000km=2000.0, pad_wear_pct_per_1000km=(1000.0, 500.0))
    start, later = cycle.at(0.0), cycle.at(600.0)  # about 6 km
    assert start.oil_level is OilLevel.NORMAL
    assert later.oil_level_pct < start.oil_level_pct
    assert later.oil_level is OilLevel.LOW
    assert later.pad_wear_front_pct > start.pad_wear_front_pct
    assert later.pad_wear_rear_pct > start.pad_wear_rear_pct
    assert cycle.at(10**6).pad_wear_front_pct == 100  # worn, never beyond


@pytest.mark.parametrize(
    ("percent", "level"),
    [
        (0.0, "CRITICALLY_LOW"),
        (9.9, "CRITICALLY_LOW"),
        (10.0, "LOW"),
        (24.9, "LOW"),
        (25.0, "NORMAL"),
        (110.0, "NORMAL"),
        (111.0, "HIGH"),
        (126.0, "CRITICALLY_HIGH"),
    ],
)
def test_oil_level_thresholds(percent: float, level: str) -> None:
    assert oil_level(percent).value == level


def test_rain_windows_wet_the_sensor_and_cool_the_air() -> None:
    cycle = DriveCycle(rain=((10.0, 20.0),), rain_pct=70)
    dry, wet = cycle.at(5.0), cycle.at(15.0)
    assert (dry.rain_pct, wet.rain_pct) == (0, 70)
    assert wet.ambient_c == dry.ambient_c - 3.0
    with pytest.raises(ValueError, match="rain windows"):
        DriveCycle(rain=((20.0, 10.0),))
    with pytest.raises(ValueError, match="rain intensity"):
        DriveCycle(rain_pct=101)


@pytest.mark.parametrize("elapsed", [0.0, 45.0, 3600.0, 10**7])
def test_every_simulated_signal_is_a_vss_signal_of_its_datatype(elapsed: float) -> None:
    cycle = DriveCycle(distance_to_service_km=1.0, time_to_service_s=100.0, rain=((0.0, 10**8),))
    for path, value in sample_signals(cycle.at(elapsed)).items():
        spec = vss_spec(path)
        assert spec is not None, f"{path} is not in tcu/vehicle/vss_signals.toml"
        if spec.datatype == "boolean":
            assert isinstance(value, bool), path
        elif spec.datatype == "string":
            assert isinstance(value, str), path
            assert not spec.allowed or value in spec.allowed, path
        elif spec.datatype in INTEGER_RANGES:
            low, high = INTEGER_RANGES[spec.datatype]
            # The older signals (rpm, coolant, fuel level) go out as floats; the maintenance ones are integers.
            assert isinstance(value, int | float), path
            assert not isinstance(value, bool), path
            assert isinstance(value, int) or not path.startswith(("Vehicle.Service", "Vehicle.Chassis", "Vehicle.Body"))
            assert low <= value <= high, path
        else:
            assert isinstance(value, float | int), path
            assert not isinstance(value, bool), path
        if spec.minimum is not None and spec.maximum is not None and not isinstance(value, str):
            assert spec.minimum <= float(value) <= spec.maximum, path


def test_the_simulated_drive_covers_status_position_maintenance_and_environment() -> None:
    categories = {CATALOGUE.category_of(path) for path in sample_signals(DriveCycle().at(0.0))}
    assert {Category.VEHICLE_STATUS, Category.POSITION, Category.MAINTENANCE, Category.ENVIRONMENT} <= categories
