"""The vehicle identification number, as both sides check it."""

from __future__ import annotations

import re

from telematics_wire.errors import VinError

VIN_PATTERN = re.compile(r"[0-9A-HJ-NPR-Z]{17}")  # ISO 3779: no I, O, Q


def validate_vin(vin: str, *, where: str = "vin") -> str:
    if not VIN_PATTERN.fullmatch(vin):
        raise VinError(f"{where}: {vin!r} is not a VIN: expected 17 characters from 0-9 and A-Z without I, O, Q")
    return vin
