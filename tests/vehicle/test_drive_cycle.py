from __future__ import annotations

import pytest

from tcu.vehicle.drive_cycle import DriveCycle
from tcu.vehicle.geo import distance_m
from telematics_wire.vehicle_mode import VehicleMode


def test_the_cycle_stops_accelerates_cruises_and_brakes() -> None:
    cycle = DriveCycle()
    assert cycle.at(5).speed_kmh == 0.0
    assert cycle.at(5).mode is VehicleMode.LIVING
    assert cycle.at(15).speed_kmh == 25.0
    assert cycle.at(40).speed_kmh == 50.0
    assert cycle.at(40).mode is VehicleMode.DRIVING
    assert cycle.at(40 + cycle.period_s).speed_kmh == 50.0


def test_odometer_and_position_follow_the_distance_driven() -> None:
    cycle = DriveCycle()
    a, b = cycle.at(30), cycle.at(40)  # ten seconds at 50 km/h
    assert b.odometer_km - a.odometer_km == pytest.approx(0.1389, abs=1e-3)
    moved = distance_m((a.latitude, a.longitude), (b.latitude, b.longitude))
    assert moved == pytest.approx(138.9, abs=2.0)


def test_a_parked_window_stands_still_then_resumes_where_it_left_off() -> None:
    cycle = DriveCycle(parked=((30.0, 90.0),))
    before, parked, after = cycle.at(29.99), cycle.at(60.0), cycle.at(95.0)
    assert (parked.mode, parked.ignition_on, parked.speed_kmh, parked.rpm) == (VehicleMode.PARKED, False, 0.0, 0.0)
    assert parked.odometer_km == pytest.approx(before.odometer_km, abs=1e-3)
    assert after.odometer_km == pytest.approx(DriveCycle().at(35.0).odometer_km)  # 60 s parked, then 5 s on
    assert after.mode is VehicleMode.DRIVING


@pytest.mark.parametrize("parked", [((10.0, 5.0),), ((50.0, 60.0), (10.0, 20.0))])
def test_malformed_parked_windows_are_refused(parked: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ValueError, match="parked windows"):
        DriveCycle(parked=parked)
