"""A deterministic simulated drive: the one vehicle model behind the simulated source and every
virtual device in `hil/`, so that OBD, CAN and GNSS views of one run agree with each other.

`DriveCycle.at(t)` is a pure function of seconds since the start of the drive: an urban cycle of
stop, accelerate, cruise, brake, repeated along a closed route of waypoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from tcu.vehicle.geo import bearing_deg, distance_m

# A closed loop through Munich (lat, lon); long enough that one lap takes several cycles.
DEFAULT_ROUTE: tuple[tuple[float, float], ...] = (
    (48.137154, 11.576124),
    (48.144870, 11.558290),
    (48.158960, 11.570820),
    (48.173560, 11.591730),
    (48.164150, 11.607400),
    (48.150300, 11.602100),
    (48.137154, 11.576124),
)


class VehicleMode(StrEnum):
    PARKED = "parked"  # ignition off, nobody inside
    LIVING = "living"  # ignition on / occupants inside, not driving
    DRIVING = "driving"


@dataclass(frozen=True, slots=True, kw_only=True)
class DriveSample:
    elapsed_s: float
    speed_kmh: float
    rpm: float
    odometer_km: float
    fuel_level_pct: float
    coolant_c: float
    ambient_c: float
    battery_v: float
    latitude: float
    longitude: float
    heading_deg: float
    mode: VehicleMode
    ignition_on: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DriveCycle:
    """Parameters of the simulated drive; `at()` is pure and cheap."""

    route: tuple[tuple[float, float], ...] = DEFAULT_ROUTE
    start_odometer_km: float = 12_345.0
    start_fuel_pct: float = 80.0
    cruise_kmh: float = 50.0
    stop_s: float = 10.0
    accelerate_s: float = 10.0
    cruise_s: float = 40.0
    brake_s: float = 8.0
    fuel_l_per_100km: float = 7.0
    tank_l: float = 50.0
    # (start, end) seconds where the car is parked: standing where it stopped, ignition off; the
    # drive resumes afterwards where it left off. Scenarios know their timeline, so this stays pure.
    parked: tuple[tuple[float, float], ...] = ()
    _legs: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.route) < 2:
            raise ValueError("a route needs at least two waypoints")
        if any(end <= start for start, end in self.parked) or list(self.parked) != sorted(self.parked):
            raise ValueError(f"parked windows must be ordered (start, end) pairs with end > start: {self.parked}")
        legs = tuple(distance_m(a, b) for a, b in zip(self.route, self.route[1:], strict=False))
        object.__setattr__(self, "_legs", legs)

    @property
    def period_s(self) -> float:
        return self.stop_s + self.accelerate_s + self.cruise_s + self.brake_s

    def _distance_m(self, t: float) -> tuple[float, float]:
        """Distance driven until t and speed at t, integrating the trapezoidal speed profile."""
        v = self.cruise_kmh / 3.6
        per_cycle = v * (self.accelerate_s / 2 + self.cruise_s + self.brake_s / 2)
        cycles, phase = divmod(max(t, 0.0), self.period_s)
        distance = cycles * per_cycle
        if phase < self.stop_s:
            return distance, 0.0
        phase -= self.stop_s
        if phase < self.accelerate_s:
            speed = v * phase / self.accelerate_s
            return distance + speed * phase / 2, speed
        distance += v * self.accelerate_s / 2
        phase -= self.accelerate_s
        if phase < self.cruise_s:
            return distance + v * phase, v
        distance += v * self.cruise_s
        phase -= self.cruise_s
        speed = v * (1 - phase / self.brake_s)
        return distance + (v + speed) * phase / 2, speed

    def _position(self, distance_m: float) -> tuple[float, float, float]:
        distance_m %= sum(self._legs)
        for (a, b), leg in zip(zip(self.route, self.route[1:], strict=False), self._legs, strict=True):
            if distance_m <= leg:
                f = distance_m / leg if leg else 0.0
                return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, bearing_deg(a, b)
            distance_m -= leg
        last = self.route[-1]
        return last[0], last[1], bearing_deg(self.route[-2], last)

    def _drive_time(self, elapsed_s: float) -> tuple[float, bool]:
        """Seconds actually driven by `elapsed_s`, and whether the car is parked then."""
        parked_s = 0.0
        for start, end in self.parked:
            if elapsed_s < start:
                break
            if elapsed_s < end:
                return start - parked_s, True
            parked_s += end - start
        return elapsed_s - parked_s, False

    def at(self, elapsed_s: float) -> DriveSample:
        drive_s, is_parked = self._drive_time(elapsed_s)
        sample = self._driving(drive_s, elapsed_s)
        if not is_parked:
            return sample
        return replace(sample, speed_kmh=0.0, rpm=0.0, battery_v=12.6, mode=VehicleMode.PARKED, ignition_on=False)

    def _driving(self, drive_s: float, elapsed_s: float) -> DriveSample:
        distance_m, speed_ms = self._distance_m(drive_s)
        speed_kmh = speed_ms * 3.6
        lat, lon, heading = self._position(distance_m)
        used_l = distance_m / 1000 * self.fuel_l_per_100km / 100
        fuel = max(self.start_fuel_pct - used_l / self.tank_l * 100, 0.0)
        # Idle at 800 rpm, ~35 rpm per km/h in a mid gear.
        rpm = 800.0 + speed_kmh * 35.0
        warmup = min(drive_s / 600.0, 1.0)
        return DriveSample(
            elapsed_s=elapsed_s,
            speed_kmh=round(speed_kmh, 2),
            rpm=round(rpm, 1),
            odometer_km=round(self.start_odometer_km + distance_m / 1000, 3),
            fuel_level_pct=round(fuel, 2),
            coolant_c=round(20.0 + 70.0 * warmup, 1),
            ambient_c=18.0,
            battery_v=14.2 if speed_kmh > 0 or elapsed_s > 0 else 12.6,
            latitude=round(lat, 7),
            longitude=round(lon, 7),
            heading_deg=round(heading, 1),
            mode=VehicleMode.DRIVING if speed_kmh > 0 else VehicleMode.LIVING,
            ignition_on=True,
        )
