"""The last three GNSS positions and the direction of travel — what an eCall MSD carries, and no more.

Regulation (EU) 2017/78 Art. 5 allows the eCall system to keep at most the last three locations, in
memory, continuously overwritten. `GnssTrack` is that memory: a fixed window of three, nothing written
to disk, nothing older kept. The MSD (EN 15722) encodes the newest position plus two deltas
(`recentVehicleLocationN1`, `N2`, each limited to about ±1.5 km), so older points are only worth
keeping when they show where the vehicle came from: a point is kept as history only once the vehicle
has moved `min_spacing_m` away from the previous one, and at a standstill the newest point is
refreshed in place instead of pushing the trajectory out of the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

# Shared with the drive-cycle model rather than written again (spherical Earth, metres and degrees).
from tcu.vehicle.geo import bearing_deg, distance_m

TRACK_LENGTH = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class GnssPosition:
    """One position fix, time-stamped in UTC by the receiver."""

    timestamp: datetime
    latitude: float
    longitude: float
    quality: int = 1  # GGA fix quality; 0 never makes a position
    hdop: float | None = None
    # When the agent read it, on its monotonic clock: how old the fix is, whatever the wall clock did since.
    received: float | None = None

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError("a GNSS position needs a timezone-aware UTC timestamp")
        if not (-90.0 <= self.latitude <= 90.0 and -180.0 <= self.longitude <= 180.0):
            raise ValueError(f"position {self.latitude}, {self.longitude} is off the globe")


class GnssTrack:
    """Newest-first window of at most three positions, plus the direction of travel."""

    def __init__(self, *, min_spacing_m: float = 10.0, min_course_speed_kmh: float = 3.0) -> None:
        if min_spacing_m < 0 or min_course_speed_kmh < 0:
            raise ValueError("track spacing and course speed threshold must not be negative")
        self._min_spacing_m = min_spacing_m
        self._min_course_speed_kmh = min_course_speed_kmh
        self._positions: list[GnssPosition] = []
        self._course_deg: float | None = None

    @property
    def positions(self) -> tuple[GnssPosition, ...]:
        """Newest first; the MSD's current location, N1 and N2."""
        return tuple(self._positions)

    @property
    def latest(self) -> GnssPosition | None:
        return self._positions[0] if self._positions else None

    @property
    def direction_deg(self) -> float | None:
        """Direction of travel, clockwise from true north; None while unknown.

        The receiver's course over ground when it was last moving fast enough for the course to
        mean something; otherwise the bearing from the previous kept position to the newest.
        """
        if self._course_deg is not None:
            return self._course_deg
        if len(self._positions) >= 2:
            newest, previous = self._positions[0], self._positions[1]
            a, b = (previous.latitude, previous.longitude), (newest.latitude, newest.longitude)
            if distance_m(a, b) >= max(self._min_spacing_m, 1.0):
                return round(bearing_deg(a, b), 1)
        return None

    def add(self, position: GnssPosition) -> None:
        """Take a new fix; older timestamps than the newest kept are ignored (replays, receiver resets)."""
        if not self._positions:
            self._positions.append(position)
            return
        newest = self._positions[0]
        if position.timestamp < newest.timestamp:
            return
        if position.timestamp == newest.timestamp:
            self._positions[0] = position  # the same epoch again (GGA after RMC)
            return
        if len(self._positions) == 1 or self._moved(newest, self._positions[1]):
            self._positions.insert(0, position)  # the newest becomes history
            del self._positions[TRACK_LENGTH:]
        else:
            self._positions[0] = position  # barely moved: refresh in place, keep the trajectory

    def update_course(self, course_deg: float | None, speed_kmh: float | None) -> bool:
        """Take the course over ground; ignored when missing or at walking pace. True if taken."""
        if course_deg is None or speed_kmh is None or speed_kmh < self._min_course_speed_kmh:
            return False
        if not math.isfinite(course_deg):
            return False
        self._course_deg = course_deg % 360.0
        return True

    def clear(self) -> None:
        """Forget everything (end of an eCall, privacy reset)."""
        self._positions.clear()
        self._course_deg = None

    def _moved(self, newest: GnssPosition, previous: GnssPosition) -> bool:
        a, b = (previous.latitude, previous.longitude), (newest.latitude, newest.longitude)
        return distance_m(a, b) >= self._min_spacing_m
