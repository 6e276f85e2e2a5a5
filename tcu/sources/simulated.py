"""A simulated vehicle as a signal source: the drive cycle written straight into the vehicle state.

For a laptop or CI run with no adapter and no virtual serial devices. `hil/` drives its virtual ELM327,
SLCAN and NMEA devices from the same `DriveCycle`, so both paths show the same car.
"""

from __future__ import annotations

from tcu.clock import Clock
from tcu.shared_tick import every
from tcu.vehicle.drive_cycle import DriveCycle, DriveSample
from tcu.vehicle.state import Signal, VehicleState
from telematics_wire.signal_values import SignalValue

SOURCE = "simulation"
BRAKES = "Vehicle.Chassis.Axle"


def sample_signals(sample: DriveSample) -> dict[str, SignalValue]:
    """The VSS view of one drive-cycle sample."""
    return {
        "Vehicle.Speed": sample.speed_kmh,
        "Vehicle.Powertrain.CombustionEngine.Speed": sample.rpm,
        "Vehicle.TraveledDistance": sample.odometer_km,
        "Vehicle.Powertrain.FuelSystem.RelativeLevel": sample.fuel_level_pct,
        "Vehicle.Powertrain.CombustionEngine.ECT": sample.coolant_c,
        "Vehicle.Exterior.AirTemperature": sample.ambient_c,
        "Vehicle.LowVoltageBattery.CurrentVoltage": sample.battery_v,
        "Vehicle.CurrentLocation.Latitude": sample.latitude,
        "Vehicle.CurrentLocation.Longitude": sample.longitude,
        "Vehicle.CurrentLocation.Heading": sample.heading_deg,
        "Vehicle.Mode": sample.mode.value,
        # Maintenance data (Condition Based Service).
        "Vehicle.Service.DistanceToService": sample.distance_to_service_km,
        "Vehicle.Service.TimeToService": sample.time_to_service_s,
        "Vehicle.Service.IsServiceDue": sample.service_due,
        "Vehicle.Powertrain.CombustionEngine.EngineOilLevel": sample.oil_level.value,
        **{f"{BRAKES}.Row1.Wheel.{side}.Brake.PadWear": sample.pad_wear_front_pct for side in ("Left", "Right")},
        **{f"{BRAKES}.Row2.Wheel.{side}.Brake.PadWear": sample.pad_wear_rear_pct for side in ("Left", "Right")},
        # Environment data.
        "Vehicle.Body.Raindetection.Intensity": sample.rain_pct,
    }


class SimulatedVehicle:
    def __init__(
        self,
        *,
        state: VehicleState,
        clock: Clock,
        cycle: DriveCycle | None = None,
        update_interval_s: float = 0.5,
        speedup: float = 1.0,
    ) -> None:
        self._state = state
        self._clock = clock
        self._cycle = cycle or DriveCycle()
        self._interval_s = update_interval_s
        self._speedup = speedup
        self._start = clock.monotonic()

    def update(self) -> None:
        now, monotonic = self._clock.now(), self._clock.monotonic()
        sample = self._cycle.at((monotonic - self._start) * self._speedup)
        update = self._state.update
        for path, value in sample_signals(sample).items():
            update(Signal(path=path, value=value, timestamp=now, source=SOURCE, monotonic=monotonic))

    async def run(self) -> None:
        self.update()
        await every(self._interval_s, self.update)  # on the loop's shared tick, like the other agents' drives
