"""Control blocks and PIDF-LO arrive as XML from the network: hostile documents (entities, DTDs, size,
depth, odd encodings) and wrong content are refused with a SipError, never parsed or crashed on."""

from __future__ import annotations

import contextlib
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telematics_wire.errors import SipError
from telematics_wire.sip.ecall_body import build_control_ack, parse_control
from telematics_wire.sip.pidf_lo import Location, build_pidf_lo, parse_pidf_lo
from telematics_wire.sip.xml_guard import MAX_DEPTH

NS = 'xmlns="urn:ietf:params:xml:ns:EmergencyCallData:control"'
WHEN = datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    b"<EmergencyCallData.Control " + NS.encode() + b'><ack ref="&lol2;" received="true"/></EmergencyCallData.Control>'
)
EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<EmergencyCallData.Control " + NS.encode() + b'><ack ref="&x;" received="true"/></EmergencyCallData.Control>'
)


def control(inner: str) -> bytes:
    return f"<EmergencyCallData.Control {NS}>{inner}</EmergencyCallData.Control>".encode()


def deep(levels: int) -> bytes:
    return control("<x>" * levels + "</x>" * levels + '<ack ref="r" received="true"/>')


HOSTILE = [
    (LAUGHS, "DTDs and entities are not accepted"),
    (EXTERNAL, "DTDs and entities are not accepted"),
    (b'<!DOCTYPE r SYSTEM "http://example.invalid/x.dtd"><r/>', "DTDs and entities are not accepted"),
    (control("<pad>" + "x" * 70_000 + "</pad>"), "exceeds"),
    (deep(MAX_DEPTH), "nests deeper than 32"),
    (b'<?xml version="1.0" encoding="x-unknown"?><r/>', "cannot be read as XML"),
    (b"<r>\xff</r>", "not well-formed"),
    (b"<r>", "not well-formed"),
    (b"", "not well-formed"),
]


@pytest.mark.parametrize(("data", "reason"), HOSTILE)
def test_hostile_control_blocks_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(SipError, match=reason):
        parse_control(data)


@pytest.mark.parametrize(("data", "reason"), HOSTILE)
def test_hostile_pidf_lo_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(SipError, match=reason):
        parse_pidf_lo(data)


def test_nesting_just_inside_the_bound_is_read() -> None:
    assert parse_control(deep(MAX_DEPTH - 2)).ref == "r"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("inner", "reason"),
    [
        ('<ack received="true"/>', "ack without ref"),
        ('<ack ref="r"/>', "ack received is missing"),  # a vague ack must not end the MSD
        ('<ack ref="r" received="yes"/>', "not an xs:boolean"),
        ('<ack ref="r" received="true"><actionResult success="true"/></ack>', "actionResult without action"),
        ("<request/>", "request without action"),
        ("<capabilities/>", "neither an ack nor a request"),
    ],
)
def test_incomplete_control_blocks_are_refused(inner: str, reason: str) -> None:
    with pytest.raises(SipError, match=reason):
        parse_control(control(inner))


def test_wrong_root_or_namespace_is_refused() -> None:
    with pytest.raises(SipError, match=r"not EmergencyCallData\.Control"):
        parse_control(
            b'<EmergencyCallData.Control xmlns="urn:other"><ack ref="r" received="true"/></EmergencyCallData.Control>'
        )


def test_iana_spelling_of_the_namespace_is_read() -> None:
    data = build_control_ack("r", True).replace(b"EmergencyCallData:control", b"EmergencyCallData:Control")
    assert parse_control(data).ref == "r"  # type: ignore[union-attr]


def test_ack_ref_with_xml_special_characters_round_trips() -> None:
    assert parse_control(build_control_ack('a<&>"b@x', False)).ref == 'a<&>"b@x'  # type: ignore[union-attr]


@pytest.mark.parametrize("radius", [None, 0.0, 12.75])
def test_pidf_lo_round_trip(radius: float | None) -> None:
    data = build_pidf_lo("pres:ivs@vehicle.invalid", -33.8688, 151.2093, radius, WHEN)
    assert parse_pidf_lo(data) == Location(latitude=-33.8688, longitude=151.2093, radius_m=radius, timestamp=WHEN)


def test_pidf_lo_timestamp_keeps_the_instant_in_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert parse_pidf_lo(build_pidf_lo("pres:x@y", 1.0, 2.0, None, local)).timestamp == WHEN


@settings(max_examples=80, deadline=None)
@given(
    st.floats(-90, 90, allow_nan=False),
    st.floats(-180, 180, allow_nan=False),
    st.none() | st.floats(0, 1e6, allow_nan=False),
)
def test_pidf_lo_coordinates_survive_exactly(latitude: float, longitude: float, radius: float | None) -> None:
    location = parse_pidf_lo(build_pidf_lo("pres:x@y", latitude, longitude, radius, WHEN))
    assert (location.latitude, location.longitude, location.radius_m) == (latitude, longitude, radius)


def test_rfc4119_tuple_form_with_a_circle_is_read() -> None:
    data = b"""<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"
  xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0" entity="pres:v@x">
 <tuple id="t"><status><gp:geopriv><gp:location-info>
  <gs:Circle srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>42.5463 -73.2512</gml:pos>
   <gs:radius uom="urn:ogc:def:uom:EPSG::9001">850.24</gs:radius></gs:Circle>
 </gp:location-info><gp:usage-rules/></gp:geopriv></status><timestamp>2024-05-01T10:00:00+00:00</timestamp></tuple>
</presence>"""
    location = parse_pidf_lo(data)
    assert (location.latitude, location.longitude, location.radius_m) == (42.5463, -73.2512, 850.24)
    assert location.timestamp == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert location.method is None


def pidf(shape: str, timestamp: str = "2024-05-01T10:00:00Z") -> bytes:
    return (
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" '
        'xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="pres:v@x"><dm:device id="d"><gp:geopriv>'
        f"<gp:location-info>{shape}</gp:location-info></gp:geopriv><dm:timestamp>{timestamp}</dm:timestamp>"
        "</dm:device></presence>"
    ).encode()


POINT = '<gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>{}</gml:pos></gml:Point>'


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (pidf(POINT.format("91 0")), "latitude 91.0 is outside"),
        (pidf(POINT.format("0 -180.5")), "longitude -180.5 is outside"),
        (pidf(POINT.format("nan 0")), "not finite"),
        (pidf(POINT.format("1e999 0")), "not finite"),
        (pidf(POINT.format("1")), "has 1 numbers"),
        (pidf(POINT.format("north east")), "not a number"),
        (pidf(POINT.format("1 2").replace("4326", "3857")), "not WGS 84"),
        (pidf('<gml:Polygon srsName="urn:ogc:def:crs:EPSG::4326"/>'), "is not a Point or Circle"),
        (pidf(""), "location-info is empty"),
        (
            pidf('<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>1 2</gml:pos></gs:Circle>'),
            "Circle without radius",
        ),
        (
            pidf(
                '<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>1 2</gml:pos>'
                '<gs:radius uom="urn:ogc:def:uom:EPSG::9002">3</gs:radius></gs:Circle>'
            ),
            "not metres",
        ),
        (
            pidf(
                '<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>1 2</gml:pos>'
                '<gs:radius uom="urn:ogc:def:uom:EPSG::9001">-3</gs:radius></gs:Circle>'
            ),
            "negative",
        ),
        (pidf(POINT.format("1 2"), "99999-01-01T00:00:00Z"), "not RFC 3339"),
        (pidf(POINT.format("1 2"), "2024-05-01T10:00:00"), "no time zone"),
        (b'<presence xmlns="urn:other"/>', "not presence"),
        (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>', "no geopriv location-info"),
    ],
)
def test_bad_pidf_lo_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(SipError, match=reason):
        parse_pidf_lo(data)


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ((math.nan, 0.0, None), "not a finite number"),
        ((0.0, 181.0, None), "outside"),
        ((0.0, 0.0, -1.0), "radius"),
        ((0.0, 0.0, math.inf), "radius"),
    ],
)
def test_building_refuses_what_parsing_would(arguments: tuple[float, float, float | None], reason: str) -> None:
    with pytest.raises(SipError, match=reason):
        build_pidf_lo("pres:x@y", *arguments, WHEN)


GOOD_PIDF = build_pidf_lo("pres:x@y", 1.5, 2.5, 3.0, WHEN)
GOOD_CONTROL = build_control_ack("m@x", True)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([GOOD_PIDF, GOOD_CONTROL]),
    st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=4)), max_size=4),
)
def test_xml_readers_are_total_on_mutations(document: bytes, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(document)
    for position, replacement in edits:
        index = position % (len(data) + 1)
        data[index : index + len(replacement)] = replacement
    for reader in (parse_pidf_lo, parse_control):
        with contextlib.suppress(SipError):
            reader(bytes(data))
