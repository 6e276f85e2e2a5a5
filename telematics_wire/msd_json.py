"""JSON <-> Msd, for people and tools: `tcu ecall msd --json FILE` and `tcu ecall decode HEX`.

The JSON keeps the MSD's units so that it maps one to one onto an MSD::

    {"message_identifier": 1, "automatic_activation": true, "test_call": false,
     "position_can_be_trusted": true, "vehicle_type": "M1", "vin": "ECALLEXAMPLE02023",
     "propulsion": ["gasoline"], "timestamp": "2023-09-11T06:48:31Z",
     "latitude_mas": 81044974, "longitude_mas": 410169092, "direction": 0,
     "recent_n1": {"latitude": -512, "longitude": -512}, "recent_n2": null,
     "number_of_passengers": 2, "additional_data": {"oid": "1.4.2", "data": "0a0b"}}

`direction` is in 2° steps and deltas in 100 mas units; null means unknown/absent. Written by hand,
`latitude_deg`/`longitude_deg` and `direction_deg` may replace `latitude_mas`/`longitude_mas` and
`direction`. `message_identifier` defaults to 1, `propulsion` to [] (unknown), the rest to null; the
vehicle and call flags are required, so that no file turns into a real emergency by omission.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from telematics_wire.errors import MsdError
from telematics_wire.msd_model import (
    AdditionalData,
    LocationDelta,
    Msd,
    Propulsion,
    VehicleType,
    degrees_to_mas,
    heading_to_direction,
    shown,
)

_REQUIRED = ("automatic_activation", "test_call", "position_can_be_trusted", "vehicle_type", "vin")
_OPTIONAL = (
    "message_identifier",
    "propulsion",
    "timestamp",
    "latitude_mas",
    "longitude_mas",
    "latitude_deg",
    "longitude_deg",
    "direction",
    "direction_deg",
    "recent_n1",
    "recent_n2",
    "number_of_passengers",
    "additional_data",
)
_PROPULSION_NAMES = {flag.name.lower(): flag for flag in Propulsion if flag.name}
_VEHICLE_TYPE_NAMES = tuple(t.value for t in VehicleType)
_MAX_OID_ARC_DIGITS = 19  # arcs are at most 2**63 - 1; int() of thousands of digits raises ValueError


def msd_to_json(msd: Msd) -> dict[str, Any]:
    """A JSON-ready dict (str/int/bool/None/list/dict only) of `msd`."""
    extra = msd.additional_data
    return {
        "message_identifier": msd.message_identifier,
        "automatic_activation": msd.automatic_activation,
        "test_call": msd.test_call,
        "position_can_be_trusted": msd.position_can_be_trusted,
        "vehicle_type": msd.vehicle_type.value,
        "vin": msd.vin,
        "propulsion": [name for name, flag in _PROPULSION_NAMES.items() if flag in msd.propulsion],
        "timestamp": None if msd.timestamp is None else msd.timestamp.isoformat().replace("+00:00", "Z"),
        "latitude_mas": msd.latitude_mas,
        "longitude_mas": msd.longitude_mas,
        "direction": msd.direction,
        "recent_n1": _delta_to_json(msd.recent_n1),
        "recent_n2": _delta_to_json(msd.recent_n2),
        "number_of_passengers": msd.number_of_passengers,
        "additional_data": None if extra is None else {"oid": extra.dotted_oid, "data": extra.data.hex()},
    }


def msd_from_json(obj: object) -> Msd:
    """The Msd described by a parsed JSON object; MsdError names the first key that is wrong."""
    if not isinstance(obj, Mapping):
        raise MsdError(f"an MSD in JSON is an object, got {type(obj).__name__}")
    unknown = sorted(map(shown, set(obj) - set(_REQUIRED) - set(_OPTIONAL)))  # keys of any type: sort their text
    if unknown:
        raise MsdError(f"unknown key(s) {', '.join(unknown)}; known keys: {', '.join(_REQUIRED + _OPTIONAL)}")
    missing = [key for key in _REQUIRED if key not in obj]
    if missing:
        raise MsdError(f"missing required key(s): {', '.join(missing)}")
    name = obj["vehicle_type"]
    if not isinstance(name, str) or name not in _VEHICLE_TYPE_NAMES:
        raise MsdError(f"vehicle_type {shown(name)} is not one of {', '.join(_VEHICLE_TYPE_NAMES)}")
    vehicle_type = VehicleType(name)
    return Msd(
        message_identifier=obj.get("message_identifier", 1),
        automatic_activation=obj["automatic_activation"],
        test_call=obj["test_call"],
        position_can_be_trusted=obj["position_can_be_trusted"],
        vehicle_type=vehicle_type,
        vin=obj["vin"],
        propulsion=_propulsion(obj.get("propulsion", [])),
        timestamp=_timestamp(obj.get("timestamp")),
        latitude_mas=_coordinate(obj, "latitude", 90.0),
        longitude_mas=_coordinate(obj, "longitude", 180.0),
        direction=_direction(obj),
        recent_n1=_delta(obj.get("recent_n1"), "recent_n1"),
        recent_n2=_delta(obj.get("recent_n2"), "recent_n2"),
        number_of_passengers=obj.get("number_of_passengers"),
        additional_data=_additional_data(obj.get("additional_data")),
    )


def _delta_to_json(delta: LocationDelta | None) -> dict[str, int] | None:
    return None if delta is None else {"latitude": delta.latitude, "longitude": delta.longitude}


def _propulsion(value: object) -> Propulsion:
    if not isinstance(value, list):
        raise MsdError(f"propulsion must be a list of {', '.join(_PROPULSION_NAMES)}, got {shown(value)}")
    flags = Propulsion(0)
    for name in value:
        if not isinstance(name, str) or name not in _PROPULSION_NAMES:  # a list or dict is not even hashable
            raise MsdError(f"propulsion {shown(name)} is not one of {', '.join(_PROPULSION_NAMES)}")
        flags |= _PROPULSION_NAMES[name]
    return flags


def _timestamp(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MsdError(f"timestamp must be an ISO 8601 string such as 2024-05-01T10:00:00Z, got {shown(value)}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise MsdError(f"timestamp {shown(value)} is not ISO 8601 (e.g. 2024-05-01T10:00:00Z)") from None


def _coordinate(obj: Mapping[str, Any], axis: str, limit: float) -> int | None:
    mas, deg = obj.get(f"{axis}_mas"), obj.get(f"{axis}_deg")
    if mas is not None and deg is not None:
        raise MsdError(f"give {axis}_mas or {axis}_deg, not both")
    if deg is None:
        return mas  # type and range are checked by Msd
    return degrees_to_mas(_degrees(deg, f"{axis}_deg"), limit_degrees=limit)


def _direction(obj: Mapping[str, Any]) -> int | None:
    steps, deg = obj.get("direction"), obj.get("direction_deg")
    if steps is not None and deg is not None:
        raise MsdError("give direction (2° steps) or direction_deg, not both")
    if deg is None:
        return steps
    heading = _degrees(deg, "direction_deg")
    if not math.isfinite(heading):  # heading_to_direction reads NaN as unknown; a file saying so means null
        raise MsdError(f"direction_deg must be a finite number or null, got {heading}")
    return heading_to_direction(heading)


def _degrees(value: object, key: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise MsdError(f"{key} must be a number, got {shown(value)}")
    try:
        return float(value)
    except OverflowError:  # an int beyond any float
        raise MsdError(f"{key} {shown(value, 20)} is not a number of degrees") from None


def _delta(value: object, key: str) -> LocationDelta | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"latitude", "longitude"}:
        raise MsdError(f'{key} must be null or {{"latitude": n, "longitude": n}} in 100 mas units, got {shown(value)}')
    return LocationDelta(latitude=value["latitude"], longitude=value["longitude"])


def _additional_data(value: object) -> AdditionalData | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"oid", "data"}:
        raise MsdError(f'additional_data must be null or {{"oid": "1.4.2", "data": "<hex>"}}, got {shown(value)}')
    oid, data = value["oid"], value["data"]
    if not isinstance(oid, str) or not all(arc.isdigit() and arc.isascii() for arc in oid.split(".")):
        raise MsdError(f"additional_data oid must be dotted decimal such as '1.4.2', got {shown(oid)}")
    for arc in oid.split("."):
        if len(arc) > _MAX_OID_ARC_DIGITS:
            raise MsdError(f"additional_data oid arc {arc[:20]}... has {len(arc)} digits; an arc is at most 2**63-1")
    if not isinstance(data, str):
        raise MsdError(f"additional_data data must be a hex string, got {shown(data)}")
    try:
        raw = bytes.fromhex(data)
    except ValueError:
        raise MsdError(f"additional_data data {shown(data)} is not hex") from None
    return AdditionalData(oid=tuple(int(arc) for arc in oid.split(".")), data=raw)
