"""Unaligned PER (X.691) of the EN 15722 ECallMessage, versions 2 and 3, written out for these two modules.

Why not asn1tools at run time: importing it costs the agent ~38 MB of RSS and ~0.4 s (it builds every
codec's 65,536-entry BMPString table and imports prompt_toolkit for its shell), compiling a module
~0.1-0.25 s, and a round trip through its generic codec ~4x what this file takes. The layout below
is the packaged modules' (`asn1/msd_v2.asn`, `asn1/msd_v3.asn`, with the two wire-neutral
substitutions described in `msd.py`). asn1tools remains the oracle: tests/ecall/test_msd_uper.py
compares every function here with asn1tools on the same modules, bit for bit, over the whole value
space and over random and mutated bytes.

The values are the dicts asn1tools takes and gives (`numeric_enums=True`): an unknown vehicle type
from a newer version decodes as None; extension additions, which neither module defines, are skipped
as asn1tools skips them. Decoding refuses what asn1tools refuses, with the reason, and a length of
16,384 bytes or more (fragmented), which no MSD of at most 140 bytes can hold. The encoder checks that
each value fits its field rather than writing wrong bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from telematics_wire.errors import MsdError

VERSIONS: Final = (2, 3)
_VEHICLE_TYPES: Final = {2: 13, 3: 23}  # root values of VehicleType, numbered 1..n
_VEHICLE_TYPE_BITS: Final = {2: 4, 3: 5}  # bits of the root index 0..n-1
_PASSENGERS: Final = {2: "numberOfPassengers", 3: "numberOfOccupants"}
_PROPULSION: Final = (
    "gasolineTankPresent",
    "dieselTankPresent",
    "compressedNaturalGas",
    "liquidPropaneGas",
    "electricEnergyStorage",
    "hydrogenStorage",
    "otherStorage",
)
_VIN_PARTS: Final = (("isowmi", 3), ("isovds", 6), ("isovisModelyear", 1), ("isovisSeqPlant", 7))
# PrintableString FROM("A".."H"|"J".."N"|"P"|"R".."Z"|"0".."9"): 33 characters, so each travels as its
# 6-bit index in the sorted alphabet (X.691 30.5.4: the codes themselves would need 7 bits).
_VIN_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
_VIN_INDEX: Final = {character: index for index, character in enumerate(_VIN_ALPHABET)}
_INT32_OFFSET: Final = 2**31  # INTEGER(-2147483648..2147483647) travels as value + 2**31 in 32 bits
_DELTA_OFFSET: Final = 512  # INTEGER(-512..511): value + 512 in 10 bits
_FRAGMENT: Final = 16_384  # X.691 11.9.3.8: lengths from here on are sent in fragments


class _Writer:
    """Bits appended to one integer, most significant first."""

    __slots__ = ("bits", "value")

    def __init__(self) -> None:
        self.value = 0
        self.bits = 0

    def put(self, value: int, width: int, what: str) -> None:
        if not 0 <= value < 1 << width:
            raise MsdError(f"{what} {value} does not fit its {width}-bit field")
        self.value = (self.value << width) | value
        self.bits += width

    def octets(self, data: bytes, what: str) -> None:
        """An unconstrained OCTET STRING: length determinant, then the octets (fragmented past 16 KiB)."""
        if not isinstance(data, bytes | bytearray):
            raise MsdError(f"{what} must be bytes, got {type(data).__name__}")
        offset = 0
        while True:
            rest = len(data) - offset
            if rest < 128:
                self.put(rest, 8, what)
            elif rest < _FRAGMENT:
                self.put(0x8000 | rest, 16, what)
            else:
                multiple = min(rest // _FRAGMENT, 4)
                self.put(0xC0 | multiple, 8, what)
                rest = multiple * _FRAGMENT
            self.value = (self.value << 8 * rest) | int.from_bytes(data[offset : offset + rest], "big")
            self.bits += 8 * rest
            offset += rest
            if rest < _FRAGMENT:
                return

    def complete(self) -> bytes:
        """The bits padded with zeros to whole octets (a complete encoding, X.691 11.1)."""
        padding = -self.bits % 8
        return (self.value << padding).to_bytes((self.bits + padding) // 8, "big")


class _Reader:
    """Bits read from the front of `data`; running out names what was being read."""

    __slots__ = ("position", "total", "value")

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.total = 8 * len(data)
        self.position = 0

    def take(self, width: int, what: str) -> int:
        end = self.position + width
        if end > self.total:
            raise MsdError(f"the message ends at bit {self.total} while reading {what} (bits {self.position}..{end})")
        self.position = end
        return (self.value >> (self.total - end)) & ((1 << width) - 1)

    def length(self, what: str) -> int:
        first = self.take(8, what)
        if first < 0x80:
            return first
        if first < 0xC0:
            return ((first & 0x3F) << 8) | self.take(8, what)
        raise MsdError(f"{what} has a fragmented length (16,384 bytes or more): not an MSD")

    def octets(self, what: str) -> bytes:
        count = self.length(what)
        return self.take(8 * count, what).to_bytes(count, "big")

    def skip_extensions(self, what: str) -> None:
        """Extension additions after a root (X.691 19.7/19.8): none is known here, each is skipped."""
        if not self.take(1, what):
            count = self.take(6, what) + 1
        elif not self.take(1, what):
            count = self.take(7, what)  # asn1tools reads a one-octet length so: 0..127
        else:
            raise MsdError(f"{what}: an extension bitmap longer than 127 bits is not supported")
        present = self.take(count, what)
        for _ in range(present.bit_count()):
            self.take(8 * self.length(what), what)


def _check_version(version: int) -> None:
    if version not in VERSIONS:
        raise MsdError(f"MSD version {version!r} is not supported; use 2 (EN 15722:2015) or 3 (EN 15722:2020)")


def encode_ecall_message(version: int, inner: bytes) -> bytes:
    """`ECallMessage ::= SEQUENCE { msdVersion INTEGER(0..255), msd OCTET STRING }` around `inner`."""
    writer = _Writer()
    writer.put(version, 8, "msdVersion")
    writer.octets(inner, "msd")
    return writer.complete()


def decode_ecall_message(data: bytes) -> tuple[int, bytes]:
    """(msdVersion, the inner MSDMessage octets) of an ECallMessage; bytes after it are not looked at."""
    reader = _Reader(data)
    version = reader.take(8, "msdVersion")
    return version, reader.octets("msd")


def encode_msd_message(version: int, message: Mapping[str, Any]) -> bytes:
    """The complete UPER encoding of an `MSDMessage` dict (as asn1tools takes it) of `version`."""
    _check_version(version)
    writer = _Writer()
    put = writer.put
    structure = message["msdStructure"]
    has_extra = "optionalAdditionalData" in message
    put(0, 1, "MSDMessage extension bit")
    put(has_extra, 1, "optionalAdditionalData presence")
    put(0, 1, "MSDStructure extension bit")
    optional = ["recentVehicleLocationN1", "recentVehicleLocationN2"] if version == 2 else []
    optional.append(_PASSENGERS[version])
    for name in optional:
        put(name in structure, 1, f"{name} presence")
    put(structure["messageIdentifier"], 8, "messageIdentifier")
    _put_control(writer, version, structure["control"])
    _put_vin(writer, structure["vehicleIdentificationNumber"])
    _put_propulsion(writer, structure["vehiclePropulsionStorageType"])
    put(structure["timestamp"], 32, "timestamp")
    location = structure["vehicleLocation"]
    put(location["positionLatitude"] + _INT32_OFFSET, 32, "positionLatitude + 2**31")
    put(location["positionLongitude"] + _INT32_OFFSET, 32, "positionLongitude + 2**31")
    put(structure["vehicleDirection"], 8, "vehicleDirection")
    for name in ("recentVehicleLocationN1", "recentVehicleLocationN2"):
        if name in structure:
            delta = structure[name]
            put(delta["latitudeDelta"] + _DELTA_OFFSET, 10, f"{name}.latitudeDelta + 512")
            put(delta["longitudeDelta"] + _DELTA_OFFSET, 10, f"{name}.longitudeDelta + 512")
        elif version == 3:
            raise MsdError(f"{name} is mandatory in version 3")
    if _PASSENGERS[version] in structure:
        put(structure[_PASSENGERS[version]], 8, _PASSENGERS[version])
    if has_extra:
        extra = message["optionalAdditionalData"]
        writer.octets(extra["oid"], "optionalAdditionalData.oid")
        writer.octets(extra["data"], "optionalAdditionalData.data")
    return writer.complete()


def _put_control(writer: _Writer, version: int, control: Mapping[str, Any]) -> None:
    writer.put(control["automaticActivation"], 1, "automaticActivation")
    writer.put(control["testCall"], 1, "testCall")
    writer.put(control["positionCanBeTrusted"], 1, "positionCanBeTrusted")
    writer.put(0, 1, "vehicleType extension bit")
    vehicle_type = control["vehicleType"]
    if vehicle_type not in range(1, _VEHICLE_TYPES[version] + 1):
        raise MsdError(f"vehicleType {vehicle_type!r} is not one of 1..{_VEHICLE_TYPES[version]}")
    writer.put(vehicle_type - 1, _VEHICLE_TYPE_BITS[version], "vehicleType - 1")


def _put_vin(writer: _Writer, vin: Mapping[str, str]) -> None:
    for part, size in _VIN_PARTS:
        text = vin[part]
        if len(text) != size:
            raise MsdError(f"{part} {text!r} must have {size} characters")
        code = 0
        for character in text:
            index = _VIN_INDEX.get(character)
            if index is None:
                raise MsdError(f"{part} {text!r}: {character!r} is not a VIN character")
            code = (code << 6) | index
        writer.put(code, 6 * size, part)


def _put_propulsion(writer: _Writer, storage: Mapping[str, bool]) -> None:
    writer.put(0, 1, "vehiclePropulsionStorageType extension bit")
    for name in _PROPULSION:
        writer.put(name in storage, 1, f"{name} presence")
    for name in _PROPULSION:
        if name in storage:
            writer.put(storage[name], 1, name)


def decode_msd_message(version: int, inner: bytes) -> dict[str, Any]:
    """The `MSDMessage` dict (as asn1tools gives it) in `inner`; bits after it are not looked at."""
    _check_version(version)
    reader = _Reader(inner)
    take = reader.take
    message_extended = take(1, "MSDMessage extension bit")
    has_extra = take(1, "optionalAdditionalData presence")
    structure_extended = take(1, "MSDStructure extension bit")
    optional = ["recentVehicleLocationN1", "recentVehicleLocationN2"] if version == 2 else []
    optional.append(_PASSENGERS[version])
    present = {name for name in optional if take(1, f"{name} presence")}
    structure: dict[str, Any] = {
        "messageIdentifier": take(8, "messageIdentifier"),
        "control": _take_control(reader, version),
        "vehicleIdentificationNumber": _take_vin(reader),
        "vehiclePropulsionStorageType": _take_propulsion(reader),
    }
    structure["timestamp"] = take(32, "timestamp")
    structure["vehicleLocation"] = {
        "positionLatitude": take(32, "positionLatitude") - _INT32_OFFSET,
        "positionLongitude": take(32, "positionLongitude") - _INT32_OFFSET,
    }
    structure["vehicleDirection"] = take(8, "vehicleDirection")
    for name in ("recentVehicleLocationN1", "recentVehicleLocationN2"):
        if version == 3 or name in present:
            structure[name] = {
                "latitudeDelta": take(10, f"{name}.latitudeDelta") - _DELTA_OFFSET,
                "longitudeDelta": take(10, f"{name}.longitudeDelta") - _DELTA_OFFSET,
            }
    if _PASSENGERS[version] in present:
        structure[_PASSENGERS[version]] = take(8, _PASSENGERS[version])
    if structure_extended:
        reader.skip_extensions("MSDStructure extensions")
    message: dict[str, Any] = {"msdStructure": structure}
    if has_extra:
        message["optionalAdditionalData"] = {
            "oid": reader.octets("optionalAdditionalData.oid"),
            "data": reader.octets("optionalAdditionalData.data"),
        }
    if message_extended:
        reader.skip_extensions("MSDMessage extensions")
    return message


def _take_control(reader: _Reader, version: int) -> dict[str, Any]:
    control: dict[str, Any] = {
        "automaticActivation": bool(reader.take(1, "automaticActivation")),
        "testCall": bool(reader.take(1, "testCall")),
        "positionCanBeTrusted": bool(reader.take(1, "positionCanBeTrusted")),
    }
    if reader.take(1, "vehicleType extension bit"):
        # A category added after this version: its index (a normally small number) is read and dropped.
        if reader.take(1, "vehicleType extension index"):
            reader.take(8 * reader.length("vehicleType extension index"), "vehicleType extension index")
        else:
            reader.take(6, "vehicleType extension index")
        control["vehicleType"] = None
    else:
        index = reader.take(_VEHICLE_TYPE_BITS[version], "vehicleType")
        if index >= _VEHICLE_TYPES[version]:
            raise MsdError(f"vehicle type index {index} is not one of 0..{_VEHICLE_TYPES[version] - 1}")
        control["vehicleType"] = index + 1
    return control


def _take_vin(reader: _Reader) -> dict[str, str]:
    vin: dict[str, str] = {}
    for part, size in _VIN_PARTS:
        code = reader.take(6 * size, part)
        characters = []
        for shift in range(6 * (size - 1), -1, -6):
            index = (code >> shift) & 0x3F
            if index >= len(_VIN_ALPHABET):
                raise MsdError(f"{part}: character index {index} is outside the 33-character VIN alphabet")
            characters.append(_VIN_ALPHABET[index])
        vin[part] = "".join(characters)
    return vin


def _take_propulsion(reader: _Reader) -> dict[str, bool]:
    extended = reader.take(1, "vehiclePropulsionStorageType extension bit")
    flags = [name for name in _PROPULSION if reader.take(1, f"{name} presence")]
    storage = {name: bool(reader.take(1, name)) for name in flags}
    if extended:
        reader.skip_extensions("vehiclePropulsionStorageType extensions")
    return storage
