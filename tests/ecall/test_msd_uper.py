"""The written-out UPER codec (telematics_wire/msd_uper.py) against asn1tools on the same modules.

asn1tools is the oracle: every value of the ASN.1 types (not only those the `Msd` model accepts)
encodes to the same bits and decodes to the same dict, and any bytes either decode to what asn1tools
decodes or are refused where asn1tools refuses them too.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import asn1tools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telematics_wire import msd_uper
from telematics_wire.errors import MsdError
from telematics_wire.msd import compilable_module_text
from telematics_wire.msd_model import VIN_ALPHABET

# MSD_UPER_EXAMPLES=5000 (and --timeout 900) for a long run after changing the codec.
EXAMPLES = int(os.environ.get("MSD_UPER_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The member names written again on purpose: the oracle's input must not come from the codec under test.
PROPULSION = (
    "gasolineTankPresent",
    "dieselTankPresent",
    "compressedNaturalGas",
    "liquidPropaneGas",
    "electricEnergyStorage",
    "hydrogenStorage",
    "otherStorage",
)
PASSENGERS = {2: "numberOfPassengers", 3: "numberOfOccupants"}


@functools.cache
def spec(version: int) -> Any:
    return asn1tools.compile_string(compilable_module_text(version), "uper", numeric_enums=True)


def oracle(call: Any, *args: object) -> Any:
    """What asn1tools returns, or None where it raises (anything: it has more than one way to refuse)."""
    try:
        return call(*args)
    except Exception:  # any refusal by the oracle counts as a refusal
        return None


def ours(call: Any, *args: object) -> Any:
    """What msd_uper returns, or None where it refuses; only MsdError may escape it."""
    try:
        return call(*args)
    except MsdError:
        return None


def delta() -> st.SearchStrategy[dict[str, int]]:
    return st.fixed_dictionaries({"latitudeDelta": st.integers(-512, 511), "longitudeDelta": st.integers(-512, 511)})


@st.composite
def messages(draw: st.DrawFn, version: int) -> dict[str, Any]:
    """Any MSDMessage value of `version`'s module, not only what the Msd model would build."""
    vin_part = lambda size: st.text(VIN_ALPHABET, min_size=size, max_size=size)  # noqa: E731
    int32 = st.integers(-(2**31), 2**31 - 1)
    structure: dict[str, Any] = {
        "messageIdentifier": draw(st.integers(0, 255)),
        "control": {
            "automaticActivation": draw(st.booleans()),
            "testCall": draw(st.booleans()),
            "positionCanBeTrusted": draw(st.booleans()),
            "vehicleType": draw(st.integers(1, 13 if version == 2 else 23)),
        },
        "vehicleIdentificationNumber": {
            "isowmi": draw(vin_part(3)),
            "isovds": draw(vin_part(6)),
            "isovisModelyear": draw(vin_part(1)),
            "isovisSeqPlant": draw(vin_part(7)),
        },
        "vehiclePropulsionStorageType": draw(
            st.dictionaries(st.sampled_from(PROPULSION), st.booleans(), max_size=len(PROPULSION))
        ),
        "timestamp": draw(st.integers(0, 2**32 - 1)),
        "vehicleLocation": {"positionLatitude": draw(int32), "positionLongitude": draw(int32)},
        # v3 declares 0..179 | 255; the bits are 8 either way, and 180..254 must go through alike.
        "vehicleDirection": draw(st.integers(0, 255)),
    }
    for name in ("recentVehicleLocationN1", "recentVehicleLocationN2"):
        if version == 3 or draw(st.booleans()):
            structure[name] = draw(delta())
    if draw(st.booleans()):
        structure[PASSENGERS[version]] = draw(st.integers(0, 255))
    message: dict[str, Any] = {"msdStructure": structure}
    if draw(st.booleans()):
        message["optionalAdditionalData"] = {
            "oid": draw(st.binary(max_size=20)),
            "data": draw(st.one_of(st.binary(max_size=20), st.binary(min_size=120, max_size=200))),
        }
    return message


versioned_messages = st.sampled_from([2, 3]).flatmap(lambda v: st.tuples(st.just(v), messages(v)))


@FUZZ
@given(versioned_messages)
def test_every_value_encodes_and_decodes_as_asn1tools_does(case: tuple[int, dict[str, Any]]) -> None:
    version, message = case
    expected = bytes(spec(version).encode("MSDMessage", message))
    assert msd_uper.encode_msd_message(version, message) == expected
    assert msd_uper.decode_msd_message(version, expected) == spec(version).decode("MSDMessage", expected)
    outer = bytes(spec(version).encode("ECallMessage", {"msdVersion": version, "msd": expected}))
    assert msd_uper.encode_ecall_message(version, expected) == outer
    assert msd_uper.decode_ecall_message(outer) == (version, expected)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 16_385, 32_768, 49_153, 65_536, 70_000])
def test_long_octet_strings_are_framed_as_asn1tools_frames_them(size: int) -> None:
    """Lengths of 16,384 bytes and more go in fragments; an MSD that long is refused, but by its size."""
    message = {
        "msdStructure": {
            **spec(2).decode("MSDMessage", msd_uper.encode_msd_message(2, MINIMAL))["msdStructure"],
        },
        "optionalAdditionalData": {"oid": b"\x01", "data": bytes(range(256)) * (size // 256) + bytes(size % 256)},
    }
    assert msd_uper.encode_msd_message(2, message) == bytes(spec(2).encode("MSDMessage", message))
    inner = b"\xaa" * size
    expected = bytes(spec(3).encode("ECallMessage", {"msdVersion": 3, "msd": inner}))
    assert msd_uper.encode_ecall_message(3, inner) == expected


MINIMAL: dict[str, Any] = {
    "msdStructure": {
        "messageIdentifier": 1,
        "control": {"automaticActivation": True, "testCall": False, "positionCanBeTrusted": True, "vehicleType": 1},
        "vehicleIdentificationNumber": {
            "isowmi": "ZFA",
            "isovds": "312000",
            "isovisModelyear": "8",
            "isovisSeqPlant": "1234567",
        },
        "vehiclePropulsionStorageType": {},
        "timestamp": 0,
        "vehicleLocation": {"positionLatitude": 0, "positionLongitude": 0},
        "vehicleDirection": 255,
    }
}


@st.composite
def mutated_inner(draw: st.DrawFn) -> tuple[int, bytes]:
    """A valid MSDMessage with bits flipped (extension bits among them), cut, or with bytes inserted."""
    version, message = draw(versioned_messages)
    data = bytearray(spec(version).encode("MSDMessage", message))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1)) if data else 0
        action = draw(st.sampled_from(["flip", "flip", "cut", "insert"]))
        if action == "flip" and data:
            data[at] ^= 0x80 >> draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
    return version, bytes(data)


@FUZZ
@given(
    st.one_of(
        st.tuples(st.sampled_from([2, 3]), st.binary(max_size=140)),
        # The extension bits set: MSDMessage, MSDStructure, then whatever follows.
        st.tuples(st.sampled_from([2, 3]), st.binary(min_size=1, max_size=60).map(lambda b: bytes([b[0] | 0xA0]) + b)),
        mutated_inner(),
    )
)
def test_any_bytes_decode_as_asn1tools_decodes_them_or_are_refused_by_both(case: tuple[int, bytes]) -> None:
    version, data = case
    assert ours(msd_uper.decode_msd_message, version, data) == oracle(spec(version).decode, "MSDMessage", data)
    expected = oracle(spec(version).decode, "ECallMessage", data)
    assert ours(msd_uper.decode_ecall_message, data) == (
        None if expected is None else (expected["msdVersion"], bytes(expected["msd"]))
    )


def test_skipped_extension_additions_and_an_unknown_vehicle_type() -> None:
    # MINIMAL with vehicleType as extension index 5 and an MSDStructure extension addition of 2 octets.
    bits = "".join(f"{octet:08b}" for octet in msd_uper.encode_msd_message(2, MINIMAL))
    used = 1 + 1 + 1 + 3 + 8 + 3 + 1 + 4 + 17 * 6 + 8 + 32 + 64 + 8
    # Bits: 0-1 MSDMessage preamble, 2 MSDStructure's extension bit, 3-5 presence, 6-13 identifier, 14-16
    # flags, 17 vehicleType's extension bit, 18-21 its root index; then one addition present, 2 octets long.
    extension = "0" + "000000" + "1" + "00000010" + "1" * 16
    bits = bits[:2] + "1" + bits[3:17] + "1" + "0000101" + bits[22:used] + extension
    bits += "0" * (-len(bits) % 8)
    data = int(bits, 2).to_bytes(len(bits) // 8, "big")
    decoded = msd_uper.decode_msd_message(2, data)
    assert decoded == spec(2).decode("MSDMessage", data)
    assert decoded["msdStructure"]["control"]["vehicleType"] is None
    assert decoded["msdStructure"]["timestamp"] == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"messageIdentifier": 256}, "messageIdentifier 256 does not fit its 8-bit field"),
        ({"vehicleDirection": -1}, "vehicleDirection -1 does not fit"),
        ({"timestamp": 2**32}, "timestamp 4294967296 does not fit its 32-bit field"),
        ({"vehicleLocation": {"positionLatitude": 2**31, "positionLongitude": 0}}, "positionLatitude"),
        ({"recentVehicleLocationN1": {"latitudeDelta": 512, "longitudeDelta": 0}}, "latitudeDelta"),
        ({"control": {**MINIMAL["msdStructure"]["control"], "vehicleType": 14}}, "vehicleType 14 is not one of 1..13"),
        (
            {
                "vehicleIdentificationNumber": {
                    **MINIMAL["msdStructure"]["vehicleIdentificationNumber"],
                    "isowmi": "WMI",
                }
            },
            "'I' is not a VIN character",
        ),
        (
            {
                "vehicleIdentificationNumber": {
                    **MINIMAL["msdStructure"]["vehicleIdentificationNumber"],
                    "isovds": "VDS",
                }
            },
            "must have 6 characters",
        ),
    ],
)
def test_values_that_do_not_fit_their_field_are_refused_not_truncated(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(MsdError, match=reason):
        msd_uper.encode_msd_message(2, {"msdStructure": {**MINIMAL["msdStructure"], **change}})


def test_version_3_requires_the_recent_locations() -> None:
    with pytest.raises(MsdError, match="recentVehicleLocationN1 is mandatory in version 3"):
        msd_uper.encode_msd_message(3, MINIMAL)
