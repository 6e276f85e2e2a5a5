"""The vehicle's mode as the car reports it and a measure order names its allowed states."""

from __future__ import annotations

from enum import StrEnum


class VehicleMode(StrEnum):
    PARKED = "parked"  # ignition off, nobody inside
    LIVING = "living"  # ignition on / occupants inside, not driving
    DRIVING = "driving"
