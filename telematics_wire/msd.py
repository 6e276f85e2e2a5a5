"""eCall Minimum Set of Data codec (EN 15722, ASN.1 unaligned PER), sans-I/O: `Msd` <-> bytes.

Versions 2 (EN 15722:2015) and 3 (EN 15722:2020) are supported; both wrap the MSD as
`ECallMessage ::= SEQUENCE { msdVersion INTEGER(0..255), msd OCTET STRING (CONTAINING MSDMessage) }`, so
byte 0 tells the version before anything else is decoded. An encoded MSD is at most 140 bytes.

ASN.1 modules. `asn1/msd_v2.asn` and `asn1/msd_v3.asn` are kept as published. The bits are written and
read by `msd_uper`, the unaligned PER of these two modules written out by hand, because asn1tools costs
the agent ~38 MB and ~0.4 s to import, a compile per version, and 4x the time per MSD; asn1tools stays
the oracle its tests compare it with, over the modules with two substitutions (`compilable_module_text`),
both of which leave every bit on the wire unchanged:

- `oid RELATIVE-OID` becomes `oid OCTET STRING` holding the BER content octets of the relative OID,
  because asn1tools cannot compile RELATIVE-OID and PER frames both as a length plus those octets;
  `_relative_oid_to_ber`/`_relative_oid_from_ber` do the arc arithmetic.
- the seven propulsion flags `BOOLEAN DEFAULT FALSE` become `BOOLEAN OPTIONAL`. Both are a presence bit
  plus, when present, a value bit, but only OPTIONAL lets us choose which flags are present (asn1tools
  silently drops members equal to their DEFAULT) and lets the decoder take both forms below.

Propulsion flags: the two forms. Encoders disagree on `BOOLEAN DEFAULT FALSE` members equal to FALSE:
some send all seven flags explicitly, others omit the FALSE ones (up to 7 bits, often a byte, shorter).
`decode` accepts both. `encode` omits them by default, because X.691 (clause 10.2, BASIC-PER included)
requires a DEFAULT component of a simple type such as BOOLEAN to be absent when it equals its default;
it is also what asn1c, asn1tools and Legato's own encoder produce. The field devices whose MSDs are
published (Qualcomm TelAF sample, Sierra Wireless QMI test, a T-E-C device log: see tests/data/msd) send
the explicit form instead; `MsdCodec(explicit_propulsion_defaults=True)` reproduces them bit for bit and
gives the PSAP stub's tests MSDs in that form.

Version differences handled here: v3 renames numberOfPassengers to numberOfOccupants, adds vehicle
categories O … other (a v2 MSD cannot carry them: encode refuses), restricts the direction to 0..179|255
(same 8 bits) and makes N1/N2 mandatory: a v3 MSD built without recent locations carries 0/0 deltas.

Decoding accepts trailing zero bytes (in-band modems pad the MSD to 140 bytes) and refuses anything
else after the message (bits after the last field inside the inner octet string are not checked).
A vehicle category newer than the decoder becomes VehicleType.UNKNOWN.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

from telematics_wire import msd_uper
from telematics_wire.errors import MsdError
from telematics_wire.msd_json import msd_from_json, msd_to_json
from telematics_wire.msd_model import (
    DIRECTION_UNKNOWN,
    POSITION_UNKNOWN,
    AdditionalData,
    LocationDelta,
    Msd,
    Propulsion,
    VehicleType,
    heading_to_direction,
    locate,
    msd_from_fixes,
)

__all__ = [
    "MAX_MSD_BYTES",
    "AdditionalData",
    "LocationDelta",
    "Msd",
    "MsdCodec",
    "MsdError",
    "Propulsion",
    "VehicleType",
    "decode",
    "default_codec",
    "encode",
    "heading_to_direction",
    "locate",
    "msd_from_fixes",
    "msd_from_json",
    "msd_to_json",
]

MAX_MSD_BYTES: Final = 140
SUPPORTED_VERSIONS: Final = (2, 3)

_VEHICLE_TYPES: Final = tuple(t for t in VehicleType if t is not VehicleType.UNKNOWN)  # ASN.1 value - 1
_V2_VEHICLE_TYPES: Final = 13  # M1 … L7e
_PROPULSION_FIELDS: Final = (
    ("gasolineTankPresent", Propulsion.GASOLINE),
    ("dieselTankPresent", Propulsion.DIESEL),
    ("compressedNaturalGas", Propulsion.CNG),
    ("liquidPropaneGas", Propulsion.LPG),
    ("electricEnergyStorage", Propulsion.ELECTRIC),
    ("hydrogenStorage", Propulsion.HYDROGEN),
    ("otherStorage", Propulsion.OTHER),
)
_PASSENGERS_FIELD: Final = {2: "numberOfPassengers", 3: "numberOfOccupants"}
_NO_MOVEMENT: Final = {"latitudeDelta": 0, "longitudeDelta": 0}
# (pattern, replacement, occurrences each module must have): a changed module fails loudly.
_SUBSTITUTIONS: Final = (
    (re.compile(r"\boid(\s+)RELATIVE-OID\b"), r"oid\1OCTET STRING", 1),
    (re.compile(r"\bBOOLEAN\s+DEFAULT\s+FALSE\b"), "BOOLEAN OPTIONAL", len(_PROPULSION_FIELDS)),
)


def compilable_module_text(version: int) -> str:
    """The packaged ASN.1 module of `version` with the wire-neutral substitutions described above."""
    text = resources.files(__package__).joinpath("asn1", f"msd_v{version}.asn").read_text(encoding="utf-8")
    for pattern, replacement, expected in _SUBSTITUTIONS:
        text, count = pattern.subn(replacement, text)
        if count != expected:
            raise MsdError(
                f"msd_v{version}.asn: expected {expected} occurrence(s) of {pattern.pattern!r}, found {count}; "
                "the module changed, review the substitutions in tcu/ecall/msd.py"
            )
    return text


def _relative_oid_to_ber(arcs: tuple[int, ...]) -> bytes:
    out = bytearray()
    for arc in arcs:
        # Base 128, most significant group first, bit 8 set on all but the last octet (X.690 8.20).
        rest, chunk = arc >> 7, [arc & 0x7F]
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def _relative_oid_from_ber(content: bytes) -> tuple[int, ...]:
    if not content:
        raise MsdError("additional data OID is empty")
    if content[-1] & 0x80:
        raise MsdError(f"additional data OID {content.hex()} is truncated (last octet has bit 8 set)")
    arcs: list[int] = []
    arc = 0
    start = True
    for octet in content:
        if start and octet == 0x80:
            raise MsdError(f"additional data OID {content.hex()} is not minimally encoded (0x80 lead octet)")
        arc = (arc << 7) | (octet & 0x7F)
        start = not octet & 0x80
        if start:
            arcs.append(arc)
            arc = 0
    return tuple(arcs)


class MsdCodec:
    """Encodes and decodes MSDs. Nothing is compiled: the first MSD costs what every other one does."""

    def __init__(self, *, explicit_propulsion_defaults: bool = False) -> None:
        self._explicit = explicit_propulsion_defaults

    def encode(self, msd: Msd, version: int = 2) -> bytes:
        """UPER-encoded ECallMessage of `msd` as MSD `version` (2 or 3), at most 140 bytes."""
        if not isinstance(msd, Msd):
            raise MsdError(f"expected an Msd to encode, got {type(msd).__name__}")
        _check_version(version)
        try:
            inner = msd_uper.encode_msd_message(version, self._to_asn1(msd, version))
        except MsdError as exc:
            raise MsdError(f"cannot encode the MSD as version {version}: {exc}") from exc
        outer = msd_uper.encode_ecall_message(version, inner)
        if len(outer) > MAX_MSD_BYTES:
            raise MsdError(
                f"the MSD encodes to {len(outer)} bytes, the limit is {MAX_MSD_BYTES}: "
                f"shorten the additional data by {len(outer) - MAX_MSD_BYTES} byte(s)"
            )
        return outer

    def decode(self, data: bytes) -> Msd:
        """The MSD in `data` (version 2 or 3, either propulsion form, optional zero padding)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MsdError(f"an MSD is bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise MsdError("an empty message is not an MSD")
        if len(data) > MAX_MSD_BYTES:
            raise MsdError(f"{len(data)} bytes is longer than any MSD ({MAX_MSD_BYTES} at most)")
        version = data[0]
        if version not in SUPPORTED_VERSIONS:
            raise MsdError(
                f"MSD version {version} (first byte 0x{version:02X}) is not supported; versions 2 and 3 are"
                + (" (version 1 MSDs have no version byte and cannot be told apart)" if version < 2 else "")
            )
        try:
            _, inner = msd_uper.decode_ecall_message(data)
            value = msd_uper.decode_msd_message(version, inner)
        except MsdError as exc:
            raise MsdError(f"not a valid version {version} MSD (corrupt or truncated?): {exc}") from exc
        # UPER offers no decode_with_length: version byte + length determinant (1 or 2 bytes) + inner.
        used = 1 + (1 if len(inner) < 128 else 2) + len(inner)
        if data[used:].strip(b"\x00"):
            raise MsdError(f"{len(data) - used} unexpected non-zero byte(s) after the MSD: {data[used:].hex()}")
        try:
            return _from_asn1(value, version)
        except MsdError as exc:
            raise MsdError(f"the version {version} MSD decodes but is not valid: {exc}") from exc

    def _to_asn1(self, msd: Msd, version: int) -> dict[str, Any]:
        if msd.vehicle_type is VehicleType.UNKNOWN:
            raise MsdError("vehicle type 'unknown' cannot be encoded: choose the vehicle's category")
        type_number = _VEHICLE_TYPES.index(msd.vehicle_type) + 1
        if version == 2 and type_number > _V2_VEHICLE_TYPES:
            raise MsdError(f"vehicle type {msd.vehicle_type.value} exists from MSD version 3 on: encode as version 3")
        structure: dict[str, Any] = {
            "messageIdentifier": msd.message_identifier,
            "control": {
                "automaticActivation": msd.automatic_activation,
                "testCall": msd.test_call,
                "positionCanBeTrusted": msd.position_can_be_trusted,
                "vehicleType": type_number,
            },
            "vehicleIdentificationNumber": {
                "isowmi": msd.vin[0:3],
                "isovds": msd.vin[3:9],
                "isovisModelyear": msd.vin[9:10],
                "isovisSeqPlant": msd.vin[10:17],
            },
            "vehiclePropulsionStorageType": _storage(msd.propulsion, explicit=self._explicit),
            "timestamp": 0 if msd.timestamp is None else int(msd.timestamp.timestamp()),
            "vehicleLocation": {
                "positionLatitude": POSITION_UNKNOWN if msd.latitude_mas is None else msd.latitude_mas,
                "positionLongitude": POSITION_UNKNOWN if msd.longitude_mas is None else msd.longitude_mas,
            },
            "vehicleDirection": DIRECTION_UNKNOWN if msd.direction is None else msd.direction,
        }
        for name, delta in (("recentVehicleLocationN1", msd.recent_n1), ("recentVehicleLocationN2", msd.recent_n2)):
            if delta is not None:
                structure[name] = {"latitudeDelta": delta.latitude, "longitudeDelta": delta.longitude}
            elif version == 3:
                structure[name] = _NO_MOVEMENT  # mandatory in v3
        if msd.number_of_passengers is not None:
            structure[_PASSENGERS_FIELD[version]] = msd.number_of_passengers
        message: dict[str, Any] = {"msdStructure": structure}
        if msd.additional_data is not None:
            message["optionalAdditionalData"] = {
                "oid": _relative_oid_to_ber(msd.additional_data.oid),
                "data": msd.additional_data.data,
            }
        return message


def _check_version(version: object) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise MsdError(f"MSD version {version!r} is not supported; use 2 (EN 15722:2015) or 3 (EN 15722:2020)")


def _from_asn1(value: dict[str, Any], version: int) -> Msd:
    structure = value["msdStructure"]
    control = structure["control"]
    vin = structure["vehicleIdentificationNumber"]
    storage = structure["vehiclePropulsionStorageType"]
    location = structure["vehicleLocation"]
    type_number = control["vehicleType"]  # None for an extension value this module does not know
    # Bits summed as ints, one Propulsion made: Flag's own | and `in` cost a microsecond or more each.
    propulsion = Propulsion(sum(flag.value for name, flag in _PROPULSION_FIELDS if storage.get(name, False)))
    latitude, longitude = location["positionLatitude"], location["positionLongitude"]
    direction = structure["vehicleDirection"]
    extra = value.get("optionalAdditionalData")
    return Msd(
        message_identifier=structure["messageIdentifier"],
        automatic_activation=control["automaticActivation"],
        test_call=control["testCall"],
        position_can_be_trusted=control["positionCanBeTrusted"],
        vehicle_type=VehicleType.UNKNOWN if type_number is None else _VEHICLE_TYPES[type_number - 1],
        vin=vin["isowmi"] + vin["isovds"] + vin["isovisModelyear"] + vin["isovisSeqPlant"],
        propulsion=propulsion,
        timestamp=None if structure["timestamp"] == 0 else datetime.fromtimestamp(structure["timestamp"], UTC),
        latitude_mas=None if latitude == POSITION_UNKNOWN else latitude,
        longitude_mas=None if longitude == POSITION_UNKNOWN else longitude,
        direction=None if direction == DIRECTION_UNKNOWN else direction,
        recent_n1=_delta(structure.get("recentVehicleLocationN1")),
        recent_n2=_delta(structure.get("recentVehicleLocationN2")),
        number_of_passengers=structure.get(_PASSENGERS_FIELD[version]),
        additional_data=None
        if extra is None
        else AdditionalData(oid=_relative_oid_from_ber(extra["oid"]), data=bytes(extra["data"])),
    )


def _storage(propulsion: Propulsion, *, explicit: bool) -> dict[str, bool]:
    present = propulsion.value
    return {name: bool(present & flag.value) for name, flag in _PROPULSION_FIELDS if explicit or present & flag.value}


def _delta(value: dict[str, int] | None) -> LocationDelta | None:
    return None if value is None else LocationDelta(latitude=value["latitudeDelta"], longitude=value["longitudeDelta"])


@functools.cache
def default_codec() -> MsdCodec:
    """The process-wide codec behind `encode`/`decode` (omits FALSE propulsion flags)."""
    return MsdCodec()


def encode(msd: Msd, version: int = 2) -> bytes:
    """Encode `msd` as MSD `version` with the default codec; see `MsdCodec.encode`."""
    return default_codec().encode(msd, version)


def decode(data: bytes) -> Msd:
    """Decode a version 2 or 3 MSD with the default codec; see `MsdCodec.decode`."""
    return default_codec().decode(data)
