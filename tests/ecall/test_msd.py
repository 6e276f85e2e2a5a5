"""MSD codec: golden vectors, round-trips over the value space, limits, both propulsion forms, garbage."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import operator
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asn1tools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcu.ecall.msd_cli import decode_command, msd_command
from telematics_wire.errors import MsdError
from telematics_wire.msd import (
    MAX_MSD_BYTES,
    AdditionalData,
    LocationDelta,
    Msd,
    MsdCodec,
    Propulsion,
    VehicleType,
    decode,
    default_codec,
    encode,
    heading_to_direction,
    locate,
    msd_from_fixes,
    msd_from_json,
    msd_to_json,
)
from telematics_wire.msd import compilable_module_text as module_text
from telematics_wire.msd_model import VIN_ALPHABET

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "data" / "msd" / "vectors.json").read_text(encoding="utf-8")
)
PUBLISHED = [v for v in VECTORS if v["origin"] == "published"]
EXPLICIT = MsdCodec(explicit_propulsion_defaults=True)
CODECS = {"omitted": default_codec(), "explicit": EXPLICIT}
SLOW = settings(deadline=None, max_examples=150)

BASE = Msd(
    automatic_activation=True,
    test_call=False,
    position_can_be_trusted=True,
    vehicle_type=VehicleType.M1,
    vin="WM9VDSVDSYA123456",
    propulsion=Propulsion.GASOLINE,
    timestamp=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    latitude_mas=174_600_000,
    longitude_mas=41_400_000,
    direction=45,
)


@functools.cache
def raw_spec(version: int, *, standard_defaults: bool = False) -> Any:
    """asn1tools on the packaged module; `standard_defaults` keeps BOOLEAN DEFAULT FALSE as published."""
    text = module_text(version)
    if standard_defaults:
        text = text.replace("BOOLEAN OPTIONAL", "BOOLEAN DEFAULT FALSE")
    return asn1tools.compile_string(text, "uper", numeric_enums=True)


def wrap(version: int, inner: bytes) -> bytes:
    return bytes(raw_spec(version).encode("ECallMessage", {"msdVersion": version, "msd": inner}))


# --- strategies ------------------------------------------------------------------------------------------


def deltas() -> st.SearchStrategy[LocationDelta | None]:
    unit = st.integers(-512, 511)
    return st.none() | st.builds(LocationDelta, latitude=unit, longitude=unit)


def msds(version: int) -> st.SearchStrategy[Msd]:
    known = [t for t in VehicleType if t is not VehicleType.UNKNOWN]
    flags = list(Propulsion)
    return st.builds(
        Msd,
        message_identifier=st.integers(0, 255),
        automatic_activation=st.booleans(),
        test_call=st.booleans(),
        position_can_be_trusted=st.booleans(),
        vehicle_type=st.sampled_from(known[:13] if version == 2 else known),
        vin=st.text(alphabet=VIN_ALPHABET, min_size=17, max_size=17),
        propulsion=st.lists(st.sampled_from(flags), unique=True).map(
            lambda chosen: functools.reduce(operator.or_, chosen, Propulsion(0))
        ),
        timestamp=st.none() | st.integers(1, 2**32 - 1).map(lambda s: datetime.fromtimestamp(s, UTC)),
        latitude_mas=st.none() | st.integers(-324_000_000, 324_000_000),
        longitude_mas=st.none() | st.integers(-648_000_000, 648_000_000),
        direction=st.none() | st.integers(0, 179),
        recent_n1=deltas(),
        recent_n2=deltas(),
        number_of_passengers=st.none() | st.integers(0, 255),
        additional_data=st.none()
        | st.builds(
            AdditionalData,
            oid=st.lists(st.integers(0, 2**40), min_size=1, max_size=4).map(tuple),
            data=st.binary(max_size=40),
        ),
    )


def as_v3(msd: Msd) -> Msd:
    """What a v3 decoder returns: N1/N2 are mandatory there and carry 0/0 when the MSD had none."""
    still = LocationDelta(latitude=0, longitude=0)
    return dataclasses.replace(msd, recent_n1=msd.recent_n1 or still, recent_n2=msd.recent_n2 or still)


# --- golden vectors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vector_decodes_to_the_published_values(vector: dict[str, Any]) -> None:
    assert decode(bytes.fromhex(vector["hex"])) == msd_from_json(vector["msd"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vector_reencodes_bit_for_bit(vector: dict[str, Any]) -> None:
    codec = CODECS[vector["propulsion_form"]]
    assert codec.encode(msd_from_json(vector["msd"]), vector["version"]).hex().upper() == vector["hex"]


@pytest.mark.parametrize("vector", PUBLISHED, ids=[v["name"] for v in PUBLISHED])
def test_default_encoder_writes_the_omitted_form_of_published_vectors(vector: dict[str, Any]) -> None:
    msd = decode(bytes.fromhex(vector["hex"]))
    omitted = encode(msd, vector["version"])
    assert omitted.hex().upper() == vector["omitted_form_hex"]
    assert len(omitted) == len(bytes.fromhex(vector["hex"])) - 1
    assert decode(omitted) == msd


@pytest.mark.parametrize("vector", PUBLISHED, ids=[v["name"] for v in PUBLISHED])
def test_omitted_form_is_what_a_plain_default_aware_encoder_writes(vector: dict[str, Any]) -> None:
    # Independent check: asn1tools on the unmodified module drops members equal to their DEFAULT.
    spec = raw_spec(vector["version"], standard_defaults=True)
    inner = spec.decode("ECallMessage", bytes.fromhex(vector["hex"]))["msd"]
    reencoded = spec.encode("MSDMessage", spec.decode("MSDMessage", inner))
    assert wrap(vector["version"], reencoded).hex().upper() == vector["omitted_form_hex"]


def test_both_propulsion_forms_decode_to_the_same_msd() -> None:
    vector = PUBLISHED[0]
    assert decode(bytes.fromhex(vector["hex"])) == decode(bytes.fromhex(vector["omitted_form_hex"]))


def test_zero_padding_to_140_bytes_is_accepted() -> None:
    data = bytes.fromhex(PUBLISHED[0]["hex"])
    assert decode(data.ljust(MAX_MSD_BYTES, b"\x00")) == decode(data)


def test_non_zero_bytes_after_the_msd_are_refused() -> None:
    with pytest.raises(MsdError, match="non-zero byte"):
        decode(bytes.fromhex(PUBLISHED[0]["hex"]) + b"\x00\x01")


# --- round trips -------------------------------------------------------------------------------------------


@SLOW
@given(msds(2), st.sampled_from(sorted(CODECS)))
def test_v2_round_trip(msd: Msd, form: str) -> None:
    assert decode(CODECS[form].encode(msd, 2)) == msd


@SLOW
@given(msds(3), st.sampled_from(sorted(CODECS)))
def test_v3_round_trip(msd: Msd, form: str) -> None:
    assert decode(CODECS[form].encode(msd, 3)) == as_v3(msd)


@SLOW
@given(msds(2), st.sampled_from([2, 3]))
def test_explicit_form_costs_one_bit_per_false_flag(msd: Msd, version: int) -> None:
    false_flags = len(Propulsion) - len(list(msd.propulsion))
    omitted, explicit = encode(msd, version), EXPLICIT.encode(msd, version)
    assert 0 <= len(explicit) - len(omitted) <= math.ceil(false_flags / 8)
    assert decode(explicit) == decode(omitted)


@SLOW
@given(msds(2))
def test_json_round_trip(msd: Msd) -> None:
    assert msd_from_json(json.loads(json.dumps(msd_to_json(msd)))) == msd


# --- limits and validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        ("latitude_mas", [-324_000_000, 324_000_000], [-324_000_001, 324_000_001, 2_147_483_647]),
        ("longitude_mas", [-648_000_000, 648_000_000], [-648_000_001, 648_000_001, 2_147_483_647]),
        ("direction", [0, 179], [-1, 180, 255]),
        ("message_identifier", [0, 255], [-1, 256, True]),
        ("number_of_passengers", [0, 255], [-1, 256]),
    ],
)
def test_field_limits(field: str, good: list[int], bad: list[object]) -> None:
    for value in good:
        changes: dict[str, Any] = {field: value}
        msd = dataclasses.replace(BASE, **changes)
        for version in (2, 3):
            assert getattr(decode(encode(msd, version)), field) == value
    for wrong in bad:
        changes = {field: wrong}
        with pytest.raises(MsdError, match="must be"):
            dataclasses.replace(BASE, **changes)


@pytest.mark.parametrize("value", [-512, 511])
def test_delta_limits_round_trip(value: int) -> None:
    delta = LocationDelta(latitude=value, longitude=-1 - value)
    msd = dataclasses.replace(BASE, recent_n1=delta, recent_n2=delta)
    assert decode(encode(msd, 3)).recent_n2 == delta


@pytest.mark.parametrize("value", [-513, 512])
def test_delta_beyond_limits_refused(value: int) -> None:
    with pytest.raises(MsdError, match=r"-512\.\.511"):
        LocationDelta(latitude=value, longitude=0)


def test_unknown_values_travel_as_the_standard_sentinels() -> None:
    msd = dataclasses.replace(BASE, latitude_mas=None, longitude_mas=None, direction=None, timestamp=None)
    spec = raw_spec(2)
    structure = spec.decode("MSDMessage", spec.decode("ECallMessage", encode(msd))["msd"])["msdStructure"]
    assert structure["vehicleLocation"] == {"positionLatitude": 2_147_483_647, "positionLongitude": 2_147_483_647}
    assert structure["vehicleDirection"] == 255
    assert structure["timestamp"] == 0
    assert decode(encode(msd)) == msd


@pytest.mark.parametrize("vin", ["WM9VDSVDSYA12345I", "WM9VDSVDSYA12345O", "QM9VDSVDSYA123456", "wm9vdsvdsya123456"])
def test_vin_with_forbidden_characters_refused(vin: str) -> None:
    with pytest.raises(MsdError, match="only upper-case A-Z without I, O, Q"):
        dataclasses.replace(BASE, vin=vin)


@pytest.mark.parametrize("vin", ["WM9VDSVDSYA12345", "WM9VDSVDSYA1234567", ""])
def test_vin_of_wrong_length_refused(vin: str) -> None:
    with pytest.raises(MsdError, match="17 characters"):
        dataclasses.replace(BASE, vin=vin)


def test_140_byte_limit() -> None:
    def with_data(size: int) -> Msd:
        return dataclasses.replace(BASE, additional_data=AdditionalData(oid=(1, 4, 2), data=bytes(size)))

    def fits(size: int) -> bool:
        try:
            encode(with_data(size))
        except MsdError:
            return False
        return True

    largest = max(size for size in range(MAX_MSD_BYTES) if fits(size))
    assert len(encode(with_data(largest))) == MAX_MSD_BYTES  # the largest accepted MSD is exactly at the limit
    with pytest.raises(MsdError, match=r"encodes to 141 bytes, the limit is 140: shorten the additional data by 1"):
        encode(with_data(largest + 1))


def test_v3_categories_do_not_fit_version_2() -> None:
    trailer = dataclasses.replace(BASE, vehicle_type=VehicleType.O)
    with pytest.raises(MsdError, match="version 3"):
        encode(trailer, 2)
    assert decode(encode(trailer, 3)).vehicle_type is VehicleType.O


def test_unknown_vehicle_type_cannot_be_encoded() -> None:
    with pytest.raises(MsdError, match="unknown"):
        encode(dataclasses.replace(BASE, vehicle_type=VehicleType.UNKNOWN))


@pytest.mark.parametrize("version", [1, 4, "2"])
def test_unsupported_version_refused_on_encode(version: Any) -> None:
    with pytest.raises(MsdError, match="use 2"):
        encode(BASE, version)


def test_timestamp_is_stored_in_utc_whole_seconds() -> None:
    cest = timezone(timedelta(hours=2))
    msd = dataclasses.replace(BASE, timestamp=datetime(2024, 5, 1, 12, 0, 0, 999_999, tzinfo=cest))
    assert msd.timestamp == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert decode(encode(msd)) == msd


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        (datetime(2024, 5, 1, 10, 0), "no time zone"),  # naive: the point of the test
        (datetime(1970, 1, 1, tzinfo=UTC), "outside"),
        (datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC), "outside"),
    ],
)
def test_bad_timestamps_refused(timestamp: datetime, reason: str) -> None:
    with pytest.raises(MsdError, match=reason):
        dataclasses.replace(BASE, timestamp=timestamp)


def test_module_substitutions_are_wire_neutral_and_checked() -> None:
    for version in (2, 3):
        text = module_text(version)
        assert "RELATIVE-OID" not in text
        assert re.search(r"\boid\s+OCTET STRING", text)
        assert text.count("BOOLEAN OPTIONAL") == 7


# --- decoding what is not an MSD ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x01\x02\x03", "version 1 .* not supported"),
        (b"\x04" + bytes(30), "version 4 .* not supported"),
        (b"\x02" + bytes(141), "longer than any MSD"),
        (b"\x02\x25\x1c", "corrupt or truncated"),
        # Found by fuzzing: asn1tools raises NotImplementedError on this extension bitmap.
        (bytes.fromhex("0225320680E30A51439E2955D43800800837F80C9FD707F09A94BDD30E55E080000001FFFFE040"), "corrupt"),
    ],
)
def test_garbage_refused(data: bytes, reason: str) -> None:
    with pytest.raises(MsdError, match=reason):
        decode(data)


def test_non_bytes_refused() -> None:
    with pytest.raises(MsdError, match="bytes"):
        decode("0225")  # type: ignore[arg-type]


@pytest.mark.parametrize("vector", PUBLISHED, ids=[v["name"] for v in PUBLISHED])
def test_every_truncation_refused(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    for length in range(1, len(data)):
        with pytest.raises(MsdError):
            decode(data[:length])


@settings(deadline=None, max_examples=300)
@given(st.binary(min_size=1, max_size=MAX_MSD_BYTES))
def test_random_bytes_give_an_msd_or_msd_error(data: bytes) -> None:
    with contextlib.suppress(MsdError):  # anything else escaping is the bug
        decode(data)


@given(st.sampled_from([2, 3]), st.binary(min_size=1, max_size=60))
@settings(deadline=None)
def test_random_inner_message_gives_an_msd_or_msd_error(version: int, inner: bytes) -> None:
    with contextlib.suppress(MsdError):
        decode(wrap(version, inner))


def test_v2_direction_out_of_range_refused() -> None:
    # Version 2 declares the direction as INTEGER(0..255), so 200 is on the wire but not a direction.
    spec = raw_spec(2)
    value = spec.decode("MSDMessage", spec.decode("ECallMessage", encode(BASE))["msd"])
    value["msdStructure"]["vehicleDirection"] = 200
    with pytest.raises(MsdError, match=r"decodes but is not valid: direction"):
        decode(wrap(2, spec.encode("MSDMessage", value)))


@pytest.mark.parametrize(
    ("oid", "reason"), [(b"", "empty"), (b"\x81", "truncated"), (b"\x80\x01", "not minimally encoded")]
)
def test_bad_relative_oid_refused(oid: bytes, reason: str) -> None:
    spec = raw_spec(2)
    value = spec.decode("MSDMessage", spec.decode("ECallMessage", encode(BASE))["msd"])
    value["optionalAdditionalData"] = {"oid": oid, "data": b"\x01"}
    with pytest.raises(MsdError, match=reason):
        decode(wrap(2, spec.encode("MSDMessage", value)))


def test_relative_oid_content_octets() -> None:
    msd = dataclasses.replace(BASE, additional_data=AdditionalData(oid=(1, 4, 200, 16384), data=b"\xab"))
    spec = raw_spec(2)
    value = spec.decode("MSDMessage", spec.decode("ECallMessage", encode(msd))["msd"])
    assert value["optionalAdditionalData"]["oid"] == bytes.fromhex("0104814881 8000".replace(" ", ""))
    assert decode(encode(msd)) == msd


def test_vehicle_type_from_a_newer_version_decodes_as_unknown() -> None:
    # ControlType.vehicleType sits at bit 15 of the v3 MSDMessage: extension bit + 5-bit root index.
    # Rewrite it as "extension bit set, extension index 3" (0 + 6-bit number), which v3 does not know.
    inner = raw_spec(3).decode("ECallMessage", encode(BASE, 3))["msd"]
    bits = "".join(f"{octet:08b}" for octet in inner)
    assert bits[15:21] == "000000"  # not extended, M1
    bits = bits[:15] + "1" + "0" + "000011" + bits[21:]
    bits += "0" * (-len(bits) % 8)
    decoded = decode(wrap(3, int(bits, 2).to_bytes(len(bits) // 8, "big")))
    assert decoded.vehicle_type is VehicleType.UNKNOWN
    assert decoded.vin == BASE.vin


# --- building from GNSS fixes ------------------------------------------------------------------------------


def test_locate_with_zero_to_three_fixes() -> None:
    assert locate([]) == (None, None, None, None)
    assert locate([(48.0, 11.0)]) == (172_800_000, 39_600_000, None, None)
    _, _, n1, n2 = locate([(48.0, 11.0), (48.0001, 11.0)])
    assert n1 == LocationDelta(latitude=4, longitude=0)  # 360 mas north of the current position
    assert n2 is None
    _, _, n1, n2 = locate([(48.0, 11.0), (48.0001, 11.0), (48.0001, 10.9999)])
    assert (n1, n2) == (LocationDelta(latitude=4, longitude=0), LocationDelta(latitude=0, longitude=-4))
    with pytest.raises(MsdError, match="at most two earlier"):
        locate([(48.0, 11.0)] * 4)


@pytest.mark.parametrize(("offset_mas", "units"), [(149, 1), (150, 2), (-150, -1), (-151, -2), (51_149, 511)])
def test_delta_rounds_to_the_nearest_100_mas(offset_mas: int, units: int) -> None:
    _, _, n1, _ = locate([(10.0, 0.0), (10.0 + offset_mas / 3_600_000, 0.0)])
    assert n1 == LocationDelta(latitude=units, longitude=0)


def test_far_deltas_are_clamped_and_n2_starts_from_the_reported_n1() -> None:
    # N1 is 0.1° (360 000 mas) north: clamped to 511 units. N2 is 0.1° north of N1; measured from the
    # point the PSAP reconstructs for N1 (51 100 mas north) it is clamped too, pointing the right way.
    _, _, n1, n2 = locate([(0.0, 0.0), (0.1, 0.0), (0.2, -0.1)])
    assert n1 == LocationDelta(latitude=511, longitude=0)
    assert n2 == LocationDelta(latitude=511, longitude=-512)


def test_deltas_take_the_short_way_across_the_antimeridian() -> None:
    _, lon, n1, _ = locate([(0.0, 179.99999), (0.0, -179.99999)])
    assert lon == 647_999_964
    assert n1 == LocationDelta(latitude=0, longitude=1)  # 72 mas east, not 360° west


@given(
    st.floats(-80, 80),
    st.floats(-179.9, 179.9),
    st.lists(st.tuples(st.integers(-51_000, 51_000), st.integers(-51_000, 51_000)), min_size=2, max_size=2),
)
def test_reconstructed_recent_positions_err_at_most_50_mas(lat: float, lon: float, steps: list[Any]) -> None:
    # Offsets small enough not to clamp: rounding error must not accumulate from N1 into N2.
    base = (round(lat * 3_600_000), round(lon * 3_600_000))
    n1_true = (base[0] + steps[0][0], base[1] + steps[0][1])
    n2_true = (n1_true[0] + steps[1][0], n1_true[1] + steps[1][1])
    fixes = [(p[0] / 3_600_000, p[1] / 3_600_000) for p in (base, n1_true, n2_true)]
    lat_mas, lon_mas, n1, n2 = locate(fixes)
    assert lat_mas is not None
    assert lon_mas is not None
    assert n1 is not None
    assert n2 is not None
    n1_psap = (lat_mas + n1.latitude * 100, lon_mas + n1.longitude * 100)
    n2_psap = (n1_psap[0] + n2.latitude * 100, n1_psap[1] + n2.longitude * 100)
    for psap, true in ((n1_psap, n1_true), (n2_psap, n2_true)):
        assert abs(psap[0] - true[0]) <= 51  # 50 + float rounding of the degrees
        assert abs(psap[1] - true[1]) <= 51


@pytest.mark.parametrize("fix", [(90.1, 0.0), (0.0, -180.5), (math.nan, 0.0)])
def test_impossible_fixes_refused(fix: tuple[float, float]) -> None:
    with pytest.raises(MsdError, match="not a coordinate"):
        locate([fix])


@pytest.mark.parametrize(
    ("heading", "steps"),
    [
        (0.0, 0),
        (0.9, 0),
        (1.0, 1),
        (90.0, 45),
        (357.0, 179),
        (358.0, 179),
        (358.9, 179),
        (359.0, 0),
        (360.0, 0),
        (-2.0, 179),
        (None, None),
        (math.nan, None),
    ],
)
def test_heading_to_direction(heading: float | None, steps: int | None) -> None:
    assert heading_to_direction(heading) == steps


def test_msd_from_fixes() -> None:
    msd = msd_from_fixes(
        [(48.0, 11.0), (48.0001, 11.0)],
        heading_deg=181.0,
        automatic_activation=True,
        test_call=True,
        position_can_be_trusted=True,
        vehicle_type=VehicleType.N1,
        vin="WM9VDSVDSYA123456",
    )
    assert (msd.latitude_deg, msd.longitude_deg, msd.direction) == (48.0, 11.0, 91)
    assert msd.recent_n1 == LocationDelta(latitude=4, longitude=0)
    assert msd.recent_n2 is None
    assert decode(encode(msd)) == msd


# --- JSON and CLI ------------------------------------------------------------------------------------------

HAND_WRITTEN = {
    "automatic_activation": False,
    "test_call": True,
    "position_can_be_trusted": True,
    "vehicle_type": "M1",
    "vin": "WM9VDSVDSYA123456",
    "propulsion": ["diesel", "electric"],
    "timestamp": "2024-05-01T12:00:00+02:00",
    "latitude_deg": 48.5,
    "longitude_deg": -0.25,
    "direction_deg": 271,
}


def test_json_accepts_degrees_for_people() -> None:
    msd = msd_from_json(HAND_WRITTEN)
    assert (msd.latitude_mas, msd.longitude_mas, msd.direction) == (174_600_000, -900_000, 136)
    assert msd.message_identifier == 1
    assert msd.propulsion == Propulsion.DIESEL | Propulsion.ELECTRIC
    assert msd_to_json(msd)["timestamp"] == "2024-05-01T10:00:00Z"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"colour": "red"}, "unknown key.*colour"),
        ({"vin": None}, "VIN must be a string"),
        ({"vehicle_type": "car"}, "not one of M1"),
        ({"propulsion": ["petrol"]}, "not one of gasoline"),
        ({"propulsion": "diesel"}, "must be a list"),
        ({"timestamp": "yesterday"}, "not ISO 8601"),
        ({"timestamp": 1714557600}, "ISO 8601 string"),
        ({"latitude_mas": 1}, "latitude_mas or latitude_deg"),
        ({"direction": 3}, "direction .* or direction_deg"),
        ({"latitude_deg": "north"}, "must be a number"),
        ({"recent_n1": {"latitude": 1}}, "recent_n1 must be"),
        ({"additional_data": {"oid": "1.x", "data": ""}}, "dotted decimal"),
        ({"additional_data": {"oid": "1.4", "data": "zz"}}, "not hex"),
        ({"test_call": "no"}, "test_call must be true or false"),
    ],
)
def test_json_mistakes_are_named(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(MsdError, match=reason):
        msd_from_json(HAND_WRITTEN | change)


def test_json_requires_the_call_flags() -> None:
    obj = dict(HAND_WRITTEN)
    del obj["test_call"]
    with pytest.raises(MsdError, match=r"missing required key.*test_call"):
        msd_from_json(obj)
    with pytest.raises(MsdError, match="is an object"):
        msd_from_json([obj])


def test_cli_encodes_a_json_file(tmp_path: Path) -> None:
    vector = PUBLISHED[0]
    path = tmp_path / "msd.json"
    path.write_text(json.dumps(vector["msd"]), encoding="utf-8")
    assert msd_command(str(path)) == vector["omitted_form_hex"]
    assert msd_command(str(path), explicit_propulsion=True) == vector["hex"]
    assert msd_command("-", version=3, stdin=io.StringIO(json.dumps(vector["msd"]))) == next(
        v["hex"] for v in VECTORS if v["name"] == "telaf_values_as_v3"
    )


def test_cli_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(MsdError, match="cannot read"):
        msd_command(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(MsdError, match="not valid JSON"):
        msd_command(str(tmp_path / "bad.json"))


def test_cli_decodes_hex_in_the_usual_spellings() -> None:
    vector = PUBLISHED[1]
    spaced = " ".join(vector["hex"][i : i + 2] for i in range(0, len(vector["hex"]), 2))
    for text in (vector["hex"], vector["hex"].lower(), "0x" + vector["hex"], spaced):
        assert json.loads(decode_command(text)) == vector["msd"]
    with pytest.raises(MsdError, match="not hexadecimal"):
        decode_command("02 2G")
