"""Total boundaries of the MSD codec: any bytes or JSON in, an `Msd` or `MsdError` out; and every MSD
the model accepts encodes and decodes to itself.

A PSAP stub, `tcu ecall decode` and `tcu ecall msd --json` all take input someone else wrote; an
asn1tools, datetime or int() error escaping from them is a crash with no reason a person can act on.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telematics_wire.errors import MsdError, WireError
from telematics_wire.msd import (
    MAX_MSD_BYTES,
    AdditionalData,
    LocationDelta,
    Msd,
    MsdCodec,
    Propulsion,
    VehicleType,
    decode,
    encode,
    msd_from_json,
    msd_to_json,
)
from telematics_wire.msd_model import TIMESTAMP_MAX, VIN_ALPHABET

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T = TypeVar("T")
EXPLICIT = MsdCodec(explicit_propulsion_defaults=True)
V2_TYPES = [t for t in VehicleType if t is not VehicleType.UNKNOWN][:13]
ALL_TYPES = [t for t in VehicleType if t is not VehicleType.UNKNOWN]


def outcome(call: Callable[..., T], *args: object) -> T | WireError:
    """What `call` returned, or the package error it raised; anything else escapes and fails the test."""
    try:
        return call(*args)
    except WireError as exc:
        return exc


@st.composite
def msds(draw: st.DrawFn, *, version: int) -> Msd:
    optional = lambda s: st.one_of(st.none(), s)  # noqa: E731
    delta = st.builds(LocationDelta, latitude=st.integers(-512, 511), longitude=st.integers(-512, 511))
    extra = st.builds(
        AdditionalData,
        oid=st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=4).map(tuple),
        data=st.binary(max_size=40),
    )
    stamp = st.integers(1, TIMESTAMP_MAX).map(lambda s: datetime.fromtimestamp(s, UTC))
    flags = st.lists(st.sampled_from(list(Propulsion)), max_size=7)
    propulsion = flags.map(lambda fs: functools.reduce(operator.or_, fs, Propulsion(0)))
    return Msd(
        message_identifier=draw(st.integers(0, 255)),
        automatic_activation=draw(st.booleans()),
        test_call=draw(st.booleans()),
        position_can_be_trusted=draw(st.booleans()),
        vehicle_type=draw(st.sampled_from(V2_TYPES if version == 2 else ALL_TYPES)),
        vin=draw(st.text(VIN_ALPHABET, min_size=17, max_size=17)),
        propulsion=draw(propulsion),
        timestamp=draw(optional(stamp)),
        latitude_mas=draw(optional(st.integers(-324_000_000, 324_000_000))),
        longitude_mas=draw(optional(st.integers(-648_000_000, 648_000_000))),
        direction=draw(optional(st.integers(0, 179))),
        # Version 3 makes N1 and N2 mandatory: an absent one is sent as 0/0 and comes back as such.
        recent_n1=draw(optional(delta) if version == 2 else delta),
        recent_n2=draw(optional(delta) if version == 2 else delta),
        number_of_passengers=draw(optional(st.integers(0, 255))),
        additional_data=draw(optional(extra)),
    )


@FUZZ
@given(st.sampled_from([2, 3]).flatmap(lambda v: st.tuples(st.just(v), msds(version=v))))
def test_any_msd_the_model_accepts_encodes_and_decodes_to_itself(case: tuple[int, Msd]) -> None:
    version, msd = case
    for codec in (None, EXPLICIT):
        data = outcome(encode, msd, version) if codec is None else outcome(codec.encode, msd, version)
        if isinstance(data, WireError):
            # The only refusal allowed for a valid model: additional data too long for 140 bytes.
            assert isinstance(data, MsdError)
            assert msd.additional_data is not None
            assert "the limit is 140" in str(data)
            continue
        assert len(data) <= MAX_MSD_BYTES
        assert decode(data) == msd
        assert decode(data + bytes(MAX_MSD_BYTES - len(data))) == msd, "in-band padding with zeros"


def valid_encodings() -> st.SearchStrategy[bytes]:
    def try_encode(case: tuple[int, Msd]) -> bytes:
        result = outcome(encode, case[1], case[0])
        return result if isinstance(result, bytes) else b"\x02"

    return st.sampled_from([2, 3]).flatmap(lambda v: st.tuples(st.just(v), msds(version=v))).map(try_encode)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid MSD with bits flipped, bytes cut off, inserted or appended."""
    data = bytearray(draw(valid_encodings()))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "append", "byte"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif action == "append":
            data += draw(st.binary(min_size=1, max_size=8))
        elif data:
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=160),
        st.tuples(st.sampled_from([b"\x02", b"\x03"]), st.binary(max_size=150)).map(b"".join),
        mutated(),
    )
)
def test_any_bytes_decode_to_an_msd_or_an_msd_error(data: bytes) -> None:
    result = outcome(decode, data)
    if isinstance(result, WireError):
        assert isinstance(result, MsdError)
        assert str(result)
    else:
        assert isinstance(result, Msd)
        assert result == outcome(decode, data), "decoding is a function of the bytes"


@pytest.mark.parametrize("junk", [b"", 1234, "02ff", None, bytearray(b"\x02"), memoryview(b"\x03\x00")])
def test_non_msd_inputs_are_refused_with_a_reason(junk: Any) -> None:
    with pytest.raises(MsdError):
        decode(junk)


# --- JSON -----------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, 10**4000]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.sampled_from(
            [
                "0001-01-01T00:00:00+01:00",
                "9999-12-31T23:59:59-01:00",
                "9999-12-31T23:59:59Z",
                "2106-02-07T06:28:16Z",
                "1970-01-01T00:00:00Z",
                "2024-05-01T10:00:00",
                "1.4.2",
                "1." + "9" * 5000,
                "0a0b",
                "zz",
                "M1",
            ]
        ),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10,
)

BASE = msd_to_json(
    Msd(
        automatic_activation=True,
        test_call=False,
        position_can_be_trusted=True,
        vehicle_type=VehicleType.M1,
        vin="ECALLEXAMPLE02023",
        timestamp=datetime(2023, 9, 11, 6, 48, 31, tzinfo=UTC),
        latitude_mas=81044974,
        longitude_mas=410169092,
        additional_data=AdditionalData(oid=(1, 4, 2), data=b"\x0a\x0b"),
    )
)
KEYS = sorted(
    [*BASE, "latitude_deg", "longitude_deg", "direction_deg", "unknown", "vehicle_type"],
)


@st.composite
def near_valid_json(draw: st.DrawFn) -> dict[str, Any]:
    """The example MSD with one to three keys set to arbitrary JSON values (or removed)."""
    obj = dict(BASE)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(KEYS))
        if draw(st.integers(0, 5)) == 0:
            obj.pop(key, None)
        else:
            obj[key] = draw(json_values)
    return obj


@FUZZ
@given(st.one_of(json_values, near_valid_json()))
def test_any_json_value_gives_an_msd_or_an_msd_error(obj: Any) -> None:
    result = outcome(msd_from_json, obj)
    if isinstance(result, WireError):
        assert isinstance(result, MsdError)
        assert str(result)
        return
    assert isinstance(result, Msd)
    assert msd_from_json(json.loads(json.dumps(msd_to_json(result)))) == result


@FUZZ
@given(st.sampled_from([2, 3]).flatmap(lambda v: msds(version=v)))
def test_json_round_trip(msd: Msd) -> None:
    assert msd_from_json(json.loads(json.dumps(msd_to_json(msd)))) == msd


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("timestamp", "0001-01-01T00:00:00+01:00", "timestamp '0001-01-01T00:00:00+01:00' is outside"),
        ("timestamp", "9999-12-31T23:59:59-01:00", "timestamp '9999-12-31T23:59:59-01:00' is outside"),
        ("timestamp", "2106-02-07T06:28:16Z", "is outside 1970-01-01T00:00:01Z..2106-02-07T06:28:15Z"),
        ("latitude_deg", 10**400, "latitude_deg 1000"),
        ("direction_deg", -(10**400), "direction_deg -1000"),
        ("latitude_mas", 10**5000, "latitude (mas) must be within -324000000..324000000, got <int too large to show>"),
        ("propulsion", [10**5000], "propulsion <int too large to show> is not one of"),
        ("latitude_deg", float("nan"), "nan is not a coordinate"),
        ("direction_deg", float("inf"), "direction_deg must be a finite number"),
        ("propulsion", [["gasoline"]], "propulsion ['gasoline'] is not one of"),
        ("propulsion", [{}], "is not one of"),
        ("vehicle_type", ["M1"], "vehicle_type ['M1'] is not one of"),
        ("vehicle_type", {"M1": 1}, "is not one of"),
        ("additional_data", {"oid": "1." + "9" * 5000, "data": ""}, "has 5000 digits; an arc is at most 2**63-1"),
        ("additional_data", {"oid": "1.4.\u00b2", "data": ""}, "dotted decimal"),
        ("recent_n1", {"latitude": True, "longitude": 0}, "latitude delta must be an integer"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else type(v).__name__,
)
def test_json_rejections_name_the_key(key: str, value: object, reason: str) -> None:
    obj = {**BASE, key: value}
    if key.endswith("_deg"):  # one form per value
        obj.pop(key.replace("_deg", "_mas") if key != "direction_deg" else "direction")
    with pytest.raises(MsdError) as refused:
        msd_from_json(obj)
    assert reason in str(refused.value)


def test_unknown_keys_of_any_type_are_named() -> None:
    with pytest.raises(MsdError, match="unknown key"):
        msd_from_json({**BASE, 1: "x", (2, 3): "y", "zz": "z"})


def test_the_timestamp_limit_is_the_wire_limit() -> None:
    last = datetime.fromtimestamp(TIMESTAMP_MAX, UTC)
    msd = msd_from_json({**BASE, "timestamp": last.isoformat()})
    assert decode(encode(msd)).timestamp == last
    with pytest.raises(MsdError, match="is outside"):
        msd_from_json({**BASE, "timestamp": (last + timedelta(seconds=1)).isoformat()})
