"""PIDF-LO (RFC 4119) with the geodetic shapes of RFC 5491: where the vehicle is, beside the MSD.

Written as RFC 5491 §3.4 recommends for a device: `<dm:device>` holding `<gp:geopriv>` with a
`gml:Point`, or a `gs:Circle` whose radius (metres, EPSG uom 9001) is the GNSS error when known, the
method `GPS` and a `<dm:timestamp>`. Read back from either that form or RFC 4119's original
`<tuple><status><gp:geopriv>` with `<timestamp>`. Hostile XML (DTDs, entities, oversize, deep nesting),
coordinates out of range or not finite, unknown shapes or reference systems raise `SipError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

from telematics_wire.errors import SipError
from telematics_wire.sip.xml_guard import parse_xml, qualified

PIDF_NS: Final = "urn:ietf:params:xml:ns:pidf"
DATA_MODEL_NS: Final = "urn:ietf:params:xml:ns:pidf:data-model"
GEOPRIV_NS: Final = "urn:ietf:params:xml:ns:pidf:geopriv10"
GML_NS: Final = "http://www.opengis.net/gml"
SHAPES_NS: Final = "http://www.opengis.net/pidflo/1.0"
SRS_2D: Final = "urn:ogc:def:crs:EPSG::4326"
SRS_3D: Final = "urn:ogc:def:crs:EPSG::4979"
UOM_METRE: Final = "urn:ogc:def:uom:EPSG::9001"
MAX_PIDF_BYTES: Final = 32_768
METHOD_GPS: Final = "GPS"


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """WGS 84 degrees, an uncertainty radius in metres when known, the fix time and how it was found."""

    latitude: float
    longitude: float
    radius_m: float | None = None
    timestamp: datetime | None = None
    method: str | None = METHOD_GPS

    def __post_init__(self) -> None:
        _check_coordinate(self.latitude, 90.0, "latitude")
        _check_coordinate(self.longitude, 180.0, "longitude")
        if self.radius_m is not None and not (
            isinstance(self.radius_m, int | float) and math.isfinite(self.radius_m) and self.radius_m >= 0
        ):
            raise SipError(f"radius {self.radius_m!r} is not a finite number of metres >= 0")
        if self.timestamp is not None and (
            not isinstance(self.timestamp, datetime) or self.timestamp.utcoffset() is None
        ):
            raise SipError("location timestamp must be a timezone-aware datetime")


def _check_coordinate(value: object, limit: float, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SipError(f"{what} {value!r} is not a finite number")
    if not -limit <= value <= limit:
        raise SipError(f"{what} {value} is outside -{limit:g}..{limit:g}")


def _timestamp_text(timestamp: datetime) -> str:
    return timestamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_pidf_lo(
    entity: str,
    lat: float,
    lon: float,
    radius_m: float | None,
    timestamp: datetime,
    *,
    method: str = METHOD_GPS,
    device_id: str = "ivs",
) -> bytes:
    """A PIDF-LO document for `entity` (a pres: or sip: URI): a Point, or a Circle when `radius_m` is known.

    Coordinates are written as Python's shortest exact float text, so they read back bit for bit; the
    timestamp in UTC to the millisecond.
    """
    location = Location(latitude=lat, longitude=lon, radius_m=radius_m, timestamp=timestamp, method=method)
    if not entity or any(character.isspace() for character in entity):
        raise SipError(f"PIDF-LO entity {entity!r} is empty or holds whitespace")
    position = f"<gml:pos>{location.latitude!r} {location.longitude!r}</gml:pos>"
    if location.radius_m is None:
        shape = f'<gml:Point srsName="{SRS_2D}">{position}</gml:Point>'
    else:
        shape = (
            f'<gs:Circle srsName="{SRS_2D}">{position}'
            f'<gs:radius uom="{UOM_METRE}">{float(location.radius_m)!r}</gs:radius></gs:Circle>'
        )
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="{PIDF_NS}" xmlns:dm="{DATA_MODEL_NS}" xmlns:gp="{GEOPRIV_NS}"'
        f' xmlns:gml="{GML_NS}" xmlns:gs="{SHAPES_NS}" entity={quoteattr(entity)}>\n'
        f" <dm:device id={quoteattr(device_id)}>\n"
        "  <gp:geopriv>\n"
        f"   <gp:location-info>{shape}</gp:location-info>\n"
        "   <gp:usage-rules/>\n"
        f"   <gp:method>{escape(method)}</gp:method>\n"
        "  </gp:geopriv>\n"
        f"  <dm:timestamp>{_timestamp_text(timestamp)}</dm:timestamp>\n"
        " </dm:device>\n"
        "</presence>\n"
    )
    return text.encode("utf-8")


def parse_pidf_lo(data: bytes) -> Location:
    """The first geodetic location in a PIDF-LO document."""
    root = parse_xml(data, what="PIDF-LO", max_bytes=MAX_PIDF_BYTES)
    if root.tag != qualified(PIDF_NS, "presence"):
        raise SipError(f"PIDF-LO root is {root.tag[:80]!r}, not presence in {PIDF_NS}")
    for geopriv in root.iter(qualified(GEOPRIV_NS, "geopriv")):
        info = geopriv.find(qualified(GEOPRIV_NS, "location-info"))
        if info is None:
            continue
        latitude, longitude, radius = _shape(info)
        method = geopriv.findtext(qualified(GEOPRIV_NS, "method"))
        return Location(
            latitude=latitude,
            longitude=longitude,
            radius_m=radius,
            timestamp=_timestamp(root),
            method=method.strip() if method is not None else None,
        )
    raise SipError("PIDF-LO carries no geopriv location-info")


def _shape(info: Element) -> tuple[float, float, float | None]:
    shapes = list(info)
    if not shapes:
        raise SipError("PIDF-LO location-info is empty")
    shape = shapes[0]
    if shape.tag == qualified(GML_NS, "Point"):
        latitude, longitude = _position(shape)
        return latitude, longitude, None
    if shape.tag == qualified(SHAPES_NS, "Circle"):
        latitude, longitude = _position(shape)
        radius = shape.find(qualified(SHAPES_NS, "radius"))
        if radius is None:
            raise SipError("PIDF-LO Circle without radius")
        if radius.get("uom") != UOM_METRE:
            raise SipError(f"PIDF-LO Circle radius unit {radius.get('uom')!r} is not metres ({UOM_METRE})")
        value = _number(radius.text, "Circle radius")
        if value < 0:
            raise SipError(f"PIDF-LO Circle radius {value} is negative")
        return latitude, longitude, value
    raise SipError(f"PIDF-LO shape {shape.tag.rpartition('}')[2][:40]!r} is not a Point or Circle")


def _position(shape: Element) -> tuple[float, float]:
    srs = shape.get("srsName")
    if srs not in (SRS_2D, SRS_3D):
        raise SipError(f"PIDF-LO srsName {srs!r} is not WGS 84 ({SRS_2D} or {SRS_3D})")
    position = shape.find(qualified(GML_NS, "pos"))
    if position is None or position.text is None:
        raise SipError("PIDF-LO shape without gml:pos")
    numbers = position.text.split()
    if len(numbers) != (2 if srs == SRS_2D else 3):
        raise SipError(f"PIDF-LO gml:pos has {len(numbers)} numbers for {srs}")
    latitude = _number(numbers[0], "latitude")
    longitude = _number(numbers[1], "longitude")
    _check_coordinate(latitude, 90.0, "PIDF-LO latitude")
    _check_coordinate(longitude, 180.0, "PIDF-LO longitude")
    return latitude, longitude


def _number(text: str | None, what: str) -> float:
    if text is None or len(text) > 40:
        raise SipError(f"PIDF-LO {what} is missing or too long")
    try:
        value = float(text.strip())
    except ValueError as exc:
        raise SipError(f"PIDF-LO {what} {text[:40]!r} is not a number") from exc
    if not math.isfinite(value):
        raise SipError(f"PIDF-LO {what} {text[:40]!r} is not finite")
    return value


def _timestamp(root: Element) -> datetime | None:
    for name in (qualified(DATA_MODEL_NS, "timestamp"), qualified(PIDF_NS, "timestamp")):
        element = next(root.iter(name), None)
        if element is not None:
            return _parse_time(element.text)
    return None


def _parse_time(text: str | None) -> datetime:
    if text is None or len(text.strip()) > 40:
        raise SipError("PIDF-LO timestamp is empty or too long")
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise SipError(f"PIDF-LO timestamp {text.strip()[:40]!r} is not RFC 3339") from exc
    if value.utcoffset() is None:
        raise SipError(f"PIDF-LO timestamp {text.strip()[:40]!r} has no time zone")
    return value
