"""encode_signals: each reading goes out with its own time, whether readings share one stamp or not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tcu.telemetry.snapshots import encode_signals
from tcu.vehicle.state import Quality, Signal

T0 = datetime(2026, 11, 30, 6, 0, 0, 123000, tzinfo=UTC)
MS_T0 = 1_796_018_400_123


def test_readings_of_one_update_and_of_others_keep_their_own_milliseconds() -> None:
    later = T0 + timedelta(milliseconds=1500)
    signals = {
        path: Signal(path=path, value=value, timestamp=stamp, source="test", quality=quality)
        for path, value, stamp, quality in [
            ("Vehicle.Speed", 50.0, T0, Quality.GOOD),
            ("Vehicle.TraveledDistance", 1000.5, T0, Quality.GOOD),  # the same stamp object
            ("Vehicle.Mode", "DRIVING", later, Quality.STALE),
            ("Vehicle.OBD.DTCList", ("P0300",), T0 + timedelta(0), Quality.GOOD),  # an equal stamp, another object
            ("Vehicle.Exterior.AirTemperature", 7.5, T0, Quality.GOOD),  # back to the first stamp
        ]
    }
    assert encode_signals(signals) == {
        "Vehicle.Speed": {"v": 50.0, "t": MS_T0},
        "Vehicle.TraveledDistance": {"v": 1000.5, "t": MS_T0},
        "Vehicle.Mode": {"v": "DRIVING", "t": MS_T0 + 1500, "q": "stale"},
        "Vehicle.OBD.DTCList": {"v": ["P0300"], "t": MS_T0},
        "Vehicle.Exterior.AirTemperature": {"v": 7.5, "t": MS_T0},
    }
