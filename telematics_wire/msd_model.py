"""Value types of the eCall Minimum Set of Data (EN 15722), validated on construction.

The types keep the MSD's own units so that a decoded MSD re-encodes bit for bit: positions in
milliarcseconds (mas, 1° = 3 600 000 mas), direction in 2° steps, recent locations as deltas in
100 mas units. `msd_from_fixes` builds one from degrees and the last GNSS fixes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Flag, StrEnum, auto
from typing import Final

from telematics_wire.errors import MsdError

MAS_PER_DEGREE = 3_600_000
LATITUDE_LIMIT_MAS = 324_000_000  # ±90°
LONGITUDE_LIMIT_MAS = 648_000_000  # ±180°
POSITION_UNKNOWN = 2_147_483_647  # wire value of an unknown latitude/longitude
DIRECTION_UNKNOWN = 255  # wire value of an unknown direction
DELTA_UNIT_MAS = 100
DELTA_MIN, DELTA_MAX = -512, 511
TIMESTAMP_MAX = 2**32 - 1  # seconds since 1970; 0 on the wire means unknown
VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"  # ISO 3779 without I, O, Q; index = 6-bit code
MAX_RECENT_FIXES = 3  # Implementing Reg. (EU) 2017/78 Art. 5: at most the last three locations


class VehicleType(StrEnum):
    """Vehicle category; declaration order is the ASN.1 numbering (M1 = 1 … OTHER = 23).

    Version 2 knows M1 … L7E only. UNKNOWN stands for a category this codec does not know (an
    extension value from a newer MSD version) and cannot be encoded.
    """

    M1 = "M1"
    M2 = "M2"
    M3 = "M3"
    N1 = "N1"
    N2 = "N2"
    N3 = "N3"
    L1E = "L1e"
    L2E = "L2e"
    L3E = "L3e"
    L4E = "L4e"
    L5E = "L5e"
    L6E = "L6e"
    L7E = "L7e"
    O = "O"  # trailers  # noqa: E741 - the UNECE category's own name
    R = "R"
    S = "S"
    T = "T"
    G = "G"
    SA = "SA"
    SB = "SB"
    SC = "SC"
    SD = "SD"
    OTHER = "other"
    UNKNOWN = "unknown"


class Propulsion(Flag):
    """Energy storage present in the vehicle; no flag at all means unknown."""

    GASOLINE = auto()
    DIESEL = auto()
    CNG = auto()
    LPG = auto()
    ELECTRIC = auto()
    HYDROGEN = auto()
    OTHER = auto()


UNKNOWN_PROPULSION: Final = Propulsion(0)


def shown(value: object, limit: int = 60) -> str:
    """`repr(value)` cut for an error message; never raises, whatever the value.

    repr() of an int past 4,300 digits raises ValueError and of a deeply nested list RecursionError:
    formatting the rejection of hostile input must not be what fails.
    """
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_int(name: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass; True as a message identifier is a bug, not a 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise MsdError(f"{name} must be an integer, got {shown(value)}")
    if not low <= value <= high:
        raise MsdError(f"{name} must be within {low}..{high}, got {shown(value)}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise MsdError(f"{name} must be true or false, got {shown(value)}")


def check_vin(vin: object) -> str:
    """Return the VIN if the MSD can carry it, else raise MsdError naming what is wrong."""
    if not isinstance(vin, str):
        raise MsdError(f"VIN must be a string, got {shown(vin)}")
    if len(vin) != 17:
        raise MsdError(f"VIN must have 17 characters, {shown(vin)} has {len(vin)}")
    bad = sorted({c for c in vin if c not in VIN_ALPHABET})
    if bad:
        raise MsdError(
            f"VIN {vin!r} contains {''.join(bad)!r}: only upper-case A-Z without I, O, Q and 0-9 are allowed "
            "(ISO 3779; I, O and Q would be confused with 1 and 0)"
        )
    return vin


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationDelta:
    """A recent location relative to a reference, in 100 mas units (+ north/east)."""

    latitude: int
    longitude: int

    def __post_init__(self) -> None:
        _check_int("latitude delta", self.latitude, DELTA_MIN, DELTA_MAX)
        _check_int("longitude delta", self.longitude, DELTA_MIN, DELTA_MAX)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdditionalData:
    """Optional additional data: a relative OID naming its format (e.g. (1, 4, 2)) and the bytes."""

    oid: tuple[int, ...]
    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.oid, tuple) or not self.oid:
            raise MsdError(f"additional data OID must be a non-empty tuple of integers, got {shown(self.oid)}")
        for arc in self.oid:
            _check_int("additional data OID arc", arc, 0, 2**63 - 1)
        if not isinstance(self.data, bytes):
            raise MsdError(f"additional data must be bytes, got {type(self.data).__name__}")

    @property
    def dotted_oid(self) -> str:
        return ".".join(str(arc) for arc in self.oid)


@dataclass(frozen=True, slots=True, kw_only=True)
class Msd:
    """One Minimum Set of Data; None means "unknown" or "absent" for the optional fields.

    `timestamp` must be timezone-aware; it is stored in UTC and truncated to the whole second the MSD
    carries, so that an MSD equals its own decoded encoding.
    """

    message_identifier: int = 1  # 1 for the first MSD of a session, +1 per retransmission
    automatic_activation: bool
    test_call: bool
    position_can_be_trusted: bool  # >= 95 % confidence of being within ±150 m
    vehicle_type: VehicleType
    vin: str
    propulsion: Propulsion = UNKNOWN_PROPULSION
    timestamp: datetime | None = None
    latitude_mas: int | None = None
    longitude_mas: int | None = None
    direction: int | None = None  # 2° steps clockwise from north, 0..179
    recent_n1: LocationDelta | None = None  # relative to the current position
    recent_n2: LocationDelta | None = None  # relative to N1
    number_of_passengers: int | None = None
    additional_data: AdditionalData | None = None

    def __post_init__(self) -> None:
        _check_int("message identifier", self.message_identifier, 0, 255)
        _check_bool("automatic_activation", self.automatic_activation)
        _check_bool("test_call", self.test_call)
        _check_bool("position_can_be_trusted", self.position_can_be_trusted)
        if not isinstance(self.vehicle_type, VehicleType):
            raise MsdError(f"vehicle_type must be a VehicleType, got {shown(self.vehicle_type)}")
        check_vin(self.vin)
        if not isinstance(self.propulsion, Propulsion):
            raise MsdError(f"propulsion must be a Propulsion flag set, got {shown(self.propulsion)}")
        if self.timestamp is not None:
            object.__setattr__(self, "timestamp", _normalise_timestamp(self.timestamp))
        if self.latitude_mas is not None:
            _check_int("latitude (mas)", self.latitude_mas, -LATITUDE_LIMIT_MAS, LATITUDE_LIMIT_MAS)
        if self.longitude_mas is not None:
            _check_int("longitude (mas)", self.longitude_mas, -LONGITUDE_LIMIT_MAS, LONGITUDE_LIMIT_MAS)
        if self.direction is not None:
            _check_int("direction (2° steps; None when unknown)", self.direction, 0, 179)
        for name in ("recent_n1", "recent_n2"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, LocationDelta):
                raise MsdError(f"{name} must be a LocationDelta or None, got {shown(value)}")
        if self.number_of_passengers is not None:
            _check_int("number of passengers", self.number_of_passengers, 0, 255)
        if self.additional_data is not None and not isinstance(self.additional_data, AdditionalData):
            raise MsdError(f"additional_data must be AdditionalData or None, got {shown(self.additional_data)}")

    @property
    def latitude_deg(self) -> float | None:
        return None if self.latitude_mas is None else self.latitude_mas / MAS_PER_DEGREE

    @property
    def longitude_deg(self) -> float | None:
        return None if self.longitude_mas is None else self.longitude_mas / MAS_PER_DEGREE


def _normalise_timestamp(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise MsdError(f"timestamp must be a datetime or None, got {shown(value)}")
    if value.utcoffset() is None:
        raise MsdError(f"timestamp {value.isoformat()} has no time zone; give it in UTC")
    try:
        utc = value.astimezone(UTC).replace(microsecond=0)
    except OverflowError:  # 0001-01-01T00:00+01:00 and 9999-12-31T23:59-01:00 have no UTC datetime
        raise MsdError(_outside(value)) from None
    seconds = int(utc.timestamp())
    if not 1 <= seconds <= TIMESTAMP_MAX:
        # 0 is the wire's "unknown": use None for that.
        raise MsdError(_outside(value))
    return utc


def _outside(value: datetime) -> str:
    # Built only when refusing: every decoded MSD passes through _normalise_timestamp.
    return f"timestamp {value.isoformat()!r} is outside 1970-01-01T00:00:01Z..2106-02-07T06:28:15Z"


def degrees_to_mas(degrees: float, *, limit_degrees: float) -> int:
    """Degrees → milliarcseconds, rounded; refuses NaN and values beyond ±limit_degrees."""
    if not math.isfinite(degrees) or abs(degrees) > limit_degrees:
        raise MsdError(f"{degrees} is not a coordinate within ±{limit_degrees}°")
    return round(degrees * MAS_PER_DEGREE)


def heading_to_direction(heading_deg: float | None) -> int | None:
    """Heading in degrees (any turn) → MSD 2° steps, nearest step; None/NaN → None (unknown)."""
    if heading_deg is None or not math.isfinite(heading_deg):
        return None
    return math.floor((heading_deg % 360.0) / 2.0 + 0.5) % 180


def _delta_units(difference_mas: int) -> int:
    units = (difference_mas + DELTA_UNIT_MAS // 2) // DELTA_UNIT_MAS  # nearest unit, a half rounds up
    return max(DELTA_MIN, min(DELTA_MAX, units))


def _wrap_longitude(mas: int) -> int:
    """Bring a longitude or longitude difference into [-180°, 180°): the short way round."""
    return (mas + LONGITUDE_LIMIT_MAS) % (2 * LONGITUDE_LIMIT_MAS) - LONGITUDE_LIMIT_MAS


def locate(
    fixes: Sequence[tuple[float, float]],
) -> tuple[int | None, int | None, LocationDelta | None, LocationDelta | None]:
    """(latitude_mas, longitude_mas, recent_n1, recent_n2) from up to three (lat, lon) fixes, newest first.

    A missing fix leaves its delta out (N2 needs N1). Each delta is taken from the position the PSAP
    will reconstruct for the previous point (current + N1), not from the raw fix, so rounding to 100 mas
    and clamping to -512..511 (about ±1.5 km) never accumulate from N1 into N2. Longitude differences
    go the short way across the antimeridian.
    """
    if len(fixes) > MAX_RECENT_FIXES:
        raise MsdError(f"give the current fix and at most two earlier ones, not {len(fixes)} fixes")
    points = [(degrees_to_mas(lat, limit_degrees=90.0), degrees_to_mas(lon, limit_degrees=180.0)) for lat, lon in fixes]
    if not points:
        return None, None, None, None
    deltas: list[LocationDelta] = []
    ref_lat, ref_lon = points[0]
    for lat, lon in points[1:]:
        delta = LocationDelta(
            latitude=_delta_units(lat - ref_lat), longitude=_delta_units(_wrap_longitude(lon - ref_lon))
        )
        deltas.append(delta)
        ref_lat += delta.latitude * DELTA_UNIT_MAS
        ref_lon = _wrap_longitude(ref_lon + delta.longitude * DELTA_UNIT_MAS)
    n1 = deltas[0] if deltas else None
    n2 = deltas[1] if len(deltas) > 1 else None
    return points[0][0], points[0][1], n1, n2


def msd_from_fixes(
    fixes: Sequence[tuple[float, float]],
    *,
    heading_deg: float | None,
    automatic_activation: bool,
    test_call: bool,
    position_can_be_trusted: bool,
    vehicle_type: VehicleType,
    vin: str,
    message_identifier: int = 1,
    propulsion: Propulsion = UNKNOWN_PROPULSION,
    timestamp: datetime | None = None,
    number_of_passengers: int | None = None,
    additional_data: AdditionalData | None = None,
) -> Msd:
    """Build an MSD from the recent (lat, lon) fixes in degrees, newest first (see `locate`)."""
    latitude_mas, longitude_mas, n1, n2 = locate(fixes)
    return Msd(
        message_identifier=message_identifier,
        automatic_activation=automatic_activation,
        test_call=test_call,
        position_can_be_trusted=position_can_be_trusted,
        vehicle_type=vehicle_type,
        vin=vin,
        propulsion=propulsion,
        timestamp=timestamp,
        latitude_mas=latitude_mas,
        longitude_mas=longitude_mas,
        direction=heading_to_direction(heading_deg),
        recent_n1=n1,
        recent_n2=n2,
        number_of_passengers=number_of_passengers,
        additional_data=additional_data,
    )
