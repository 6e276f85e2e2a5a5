"""A deterministic simulated drive: the one vehicle model behind the simulated source and every
virtual device in `hil/`, so that OBD, CAN and GNSS views of one run agree with each other.

`DriveCycle.at(t)` is a pure function of seconds since the start of the drive: an urban cycle of
stop, accelerate, cruise, brake, repeated along a closed route of waypoints.

Besides the drive itself it models the data the terms' privacy part B names: status data (mileage,
battery voltage), maintenance data as BMW's Condition Based Service reports it (distance and time to
the next service counting down with the odometer and the calendar, the oil level slowly falling, brake
pad wear growing with distance) and environment data (outside temperature, rain in given windows).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from tcu.vehicle.geo import bearing_deg, distance_m
from telematics_wire.vehicle_mode import VehicleMode

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


SECONDS_PER_DAY = 86_400.0
_INT32_MAX = 0x7FFF_FFFF


class OilLevel(StrEnum):
    """VSS `EngineOilLevel` (VSS 4.x: a string enum, not a number)."""

    CRITICALLY_LOW = "CRITICALLY_LOW"
    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    CRITICALLY_HIGH = "CRITICALLY_HIGH"


def oil_level(percent: float) -> OilLevel:
    """The VSS level of an oil level given as percent of the dipstick range (100: at the max mark)."""
    if percent > 110.0:
        return OilLevel.CRITICALLY_HIGH if percent > 125.0 else OilLevel.HIGH
    if percent < 25.0:
        return OilLevel.CRITICALLY_LOW if percent < 10.0 else OilLevel.LOW
    return OilLevel.NORMAL


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
    # Condition Based Service: negative once overdue.
    distance_to_service_km: float
    time_to_service_s: int
    oil_level_pct: float  # of the dipstick range; VSS carries only `oil_level`
    oil_level: OilLevel
    pad_wear_front_pct: int  # 0 new … 100 worn, both wheels of an axle alike
    pad_wear_rear_pct: int
    rain_pct: int  # 0 dry … 100 covered

    @property
    def service_due(self) -> bool:
        return self.distance_to_service_km <= 0 or self.time_to_service_s <= 0


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
    # Condition Based Service at the start of the drive; the service is due when either reaches zero.
    distance_to_service_km: float = 8_000.0
    time_to_service_s: float = 200 * SECONDS_PER_DAY
    start_oil_pct: float = 90.0
    oil_pct_per_1000km: float = 8.0  # an engine using roughly 0.3 l per 1,000 km
    start_pad_wear_pct: tuple[float, float] = (35.0, 20.0)  # front, rear
    pad_wear_pct_per_1000km: tuple[float, float] = (2.0, 1.0)
    ambient_c: float = 18.0
    # (start, end) seconds of rain, as for `parked`: the sensor reads `rain_pct`, the air cools by 3 °C.
    rain: tuple[tuple[float, float], ...] = ()
    rain_pct: int = 60
    _legs: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.route) < 2:
            raise ValueError("a route needs at least two waypoints")
        if any(end <= start for start, end in self.parked) or list(self.parked) != sorted(self.parked):
            raise ValueError(f"parked windows must be ordered (start, end) pairs with end > start: {self.parked}")
        if any(end <= start for start, end in self.rain) or list(self.rain) != sorted(self.rain):
            raise ValueError(f"rain windows must be ordered (start, end) pairs with end > start: {self.rain}")
        if not 0 <= self.rain_pct <= 100:
            raise ValueError(f"rain intensity {self.rain_pct} is not a percentage 0..100")
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

    def _raining(self, elapsed_s: float) -> bool:
        return any(start <= elapsed_s < end for start, end in self.rain)

    def _driving(self, drive_s: float, elapsed_s: float) -> DriveSample:
        distance_m, speed_ms = self._distance_m(drive_s)
        speed_kmh = speed_ms * 3.6
        lat, lon, heading = self._position(distance_m)
        used_l = distance_m / 1000 * self.fuel_l_per_100km / 100
        fuel = max(self.start_fuel_pct - used_l / self.tank_l * 100, 0.0)
        # Idle at 800 rpm, ~35 rpm per km/h in a mid gear.
        rpm = 800.0 + speed_kmh * 35.0
        warmup = min(drive_s / 600.0, 1.0)
        km = distance_m / 1000
        raining = self._raining(elapsed_s)
        oil_pct = max(self.start_oil_pct - km * self.oil_pct_per_1000km / 1000, 0.0)
        front, rear = (
            int(min(start + km * rate / 1000, 100.0))
            for start, rate in zip(self.start_pad_wear_pct, self.pad_wear_pct_per_1000km, strict=True)
        )
        # The service date comes closer with the calendar, parked or not: elapsed, not driven, time.
        time_to_service = self.time_to_service_s - max(elapsed_s, 0.0)
        return DriveSample(
            elapsed_s=elapsed_s,
            speed_kmh=round(speed_kmh, 2),
            rpm=round(rpm, 1),
            odometer_km=round(self.start_odometer_km + distance_m / 1000, 3),
            fuel_level_pct=round(fuel, 2),
            coolant_c=round(20.0 + 70.0 * warmup, 1),
            ambient_c=self.ambient_c - 3.0 if raining else self.ambient_c,
            battery_v=14.2 if speed_kmh > 0 or elapsed_s > 0 else 12.6,
            latitude=round(lat, 7),
            longitude=round(lon, 7),
            heading_deg=round(heading, 1),
            mode=VehicleMode.DRIVING if speed_kmh > 0 else VehicleMode.LIVING,
            ignition_on=True,
            distance_to_service_km=round(self.distance_to_service_km - km, 1),
            time_to_service_s=int(max(min(time_to_service, _INT32_MAX), -_INT32_MAX)),
            oil_level_pct=round(oil_pct, 2),
            oil_level=oil_level(oil_pct),
            pad_wear_front_pct=front,
            pad_wear_rear_pct=rear,
            rain_pct=self.rain_pct if raining else 0,
        )
