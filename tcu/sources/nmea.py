"""NMEA 0183 GNSS sentences (GGA, RMC, VTG, GSA from any talker), sans-I/O.

Hand-written rather than pynmeagps (which `hil/` uses to *produce* sentences, and the tests use as an
independent cross-check), for two measured reasons: pynmeagps 1.1.8 silently blanks fields it cannot
read (a time of `abc` or a latitude of `53x1.68` come back as `''` with no error), returns None for a
sentence without checksum or for plain garbage, so the precise cause a bench engineer needs is lost;
and it takes 55-80 µs per sentence against 11-16 µs here (measured on GGA, RMC and GSA).

`NmeaStream.feed()` splits a byte stream into sentences; every line that cannot be used comes back as
a `ProtocolError` value with the reason (bad checksum, truncated, field out of range), so a reader logs
it and carries on. Valid sentences of other types (GSV, GLL, TXT, proprietary `$P...`) are skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import reduce

from tcu.errors import ProtocolError

KNOTS_TO_KMH = 1.852
MAX_LINE = 164  # NMEA says 82 characters; some receivers exceed it, none by twice
_ADDRESS = re.compile(r"[A-Z]{2}[A-Z]{3}")
# NMEA numbers are plain decimals; Python's float() would also take "nan", "inf", "1e999" and "1_0".
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_MAX_INT_DIGITS = 9  # counts and ids are small; int() of thousands of digits is slow, then refused


@dataclass(frozen=True, slots=True, kw_only=True)
class Gga:
    """Fix data: time, position, quality, satellites in use, HDOP, altitude above mean sea level."""

    talker: str
    time: time | None
    latitude: float | None
    longitude: float | None
    quality: int  # 0 none, 1 GPS, 2 DGPS/SBAS, 3 PPS, 4 RTK fixed, 5 RTK float, 6 estimated, 7 manual, 8 sim
    satellites: int | None
    hdop: float | None
    altitude_m: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rmc:
    """Recommended minimum: time **and date**, validity, position, speed and course over ground."""

    talker: str
    time: time | None
    valid: bool  # status A; V means the receiver itself does not trust the fix
    latitude: float | None
    longitude: float | None
    speed_kmh: float | None
    course_deg: float | None
    date: date | None

    @property
    def timestamp(self) -> datetime | None:
        if self.date is None or self.time is None:
            return None
        return datetime.combine(self.date, self.time, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Vtg:
    """Course and speed over ground."""

    talker: str
    course_deg: float | None
    speed_kmh: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Gsa:
    """DOP and active satellites; multi-constellation receivers send one per system."""

    talker: str
    fix_type: int  # 1 no fix, 2 2D, 3 3D
    satellites: tuple[int, ...]
    pdop: float | None
    hdop: float | None
    vdop: float | None
    system_id: int | None  # NMEA 4.10+: 1 GPS, 2 GLONASS, 3 Galileo, 4 BeiDou


Sentence = Gga | Rmc | Vtg | Gsa


def checksum(body: str) -> int:
    """XOR of the characters between `$` and `*`."""
    return reduce(lambda acc, char: acc ^ ord(char), body, 0)


def frame_sentence(body: str) -> bytes:
    """`$<body>*<checksum>\\r\\n` for a body such as `GPGGA,...`."""
    return f"${body}*{checksum(body):02X}\r\n".encode("ascii")


def parse_sentence(line: str) -> Sentence | None:
    """Parse one sentence without line end; None for a valid sentence of a type we do not use.

    Raises ProtocolError naming the problem for anything else.
    """
    if not line.startswith("$"):
        raise ProtocolError(f"{line[:40]!r}: does not start with '$' (partial line?)")
    star = line.rfind("*")
    if star < 0:
        raise ProtocolError(f"{line[:40]!r}: no '*' checksum (truncated?)")
    body, given = line[1:star], line[star + 1 :]
    if len(given) != 2 or not all(c in "0123456789ABCDEFabcdef" for c in given):
        raise ProtocolError(f"{line[:40]!r}: checksum {given!r} is not two hex digits")
    expected = checksum(body)
    if int(given, 16) != expected:
        raise ProtocolError(f"{line[:40]!r}: bad checksum {given.upper()}, computed {expected:02X}")
    fields = body.split(",")
    address = fields[0]
    if address.startswith("P"):
        return None  # proprietary ($PUBX, $PMTK, ...)
    if not _ADDRESS.fullmatch(address):
        raise ProtocolError(f"{line[:40]!r}: address {address!r} is not talker + sentence type")
    parser = _PARSERS.get(address[2:])
    if parser is None:
        return None
    needed = _MIN_FIELDS[address[2:]]
    if len(fields) - 1 < needed:
        raise ProtocolError(f"{address}: {len(fields) - 1} fields, needs at least {needed} (truncated?)")
    try:
        return parser(address[:2], fields[1:])
    except ValueError as exc:
        raise ProtocolError(f"{address}: {exc}") from None


def _gga(talker: str, f: list[str]) -> Gga:
    quality = _int(f[5], "fix quality")
    if quality is None or not 0 <= quality <= 8:
        raise ValueError(f"fix quality {f[5]!r} is not 0..8")
    if f[9] not in ("M", ""):
        raise ValueError(f"altitude unit {f[9]!r} is not M")
    return Gga(
        talker=talker,
        time=_time(f[0]),
        latitude=_coordinate(f[1], f[2], "latitude"),
        longitude=_coordinate(f[3], f[4], "longitude"),
        quality=quality,
        satellites=_int(f[6], "satellites"),
        hdop=_float(f[7], "HDOP"),
        altitude_m=_float(f[8], "altitude"),
    )


def _rmc(talker: str, f: list[str]) -> Rmc:
    if f[1] not in ("A", "V"):
        raise ValueError(f"status {f[1]!r} is not A or V")
    knots = _float(f[6], "speed")
    return Rmc(
        talker=talker,
        time=_time(f[0]),
        valid=f[1] == "A",
        latitude=_coordinate(f[2], f[3], "latitude"),
        longitude=_coordinate(f[4], f[5], "longitude"),
        speed_kmh=None if knots is None else knots * KNOTS_TO_KMH,
        course_deg=_course(f[7]),
        date=_date(f[8]),
    )


def _vtg(talker: str, f: list[str]) -> Vtg:
    if f[1] and f[1] != "T":
        # NMEA 2.0 pre-dates the unit letters: `course,T,...` vs the ancient `course,magnetic,knots,kmh`.
        raise ValueError(f"course reference {f[1]!r} is not T")
    kmh = _float(f[6], "speed km/h")
    knots = _float(f[4], "speed knots")
    return Vtg(
        talker=talker,
        course_deg=_course(f[0]),
        speed_kmh=kmh if kmh is not None else None if knots is None else knots * KNOTS_TO_KMH,
    )


def _gsa(talker: str, f: list[str]) -> Gsa:
    fix_type = _int(f[1], "fix type")
    if fix_type not in (1, 2, 3):
        raise ValueError(f"fix type {f[1]!r} is not 1, 2 or 3")
    satellites = tuple(sv for sv in (_int(x, "satellite id") for x in f[2:14]) if sv is not None)
    return Gsa(
        talker=talker,
        fix_type=fix_type,
        satellites=satellites,
        pdop=_float(f[14], "PDOP"),
        hdop=_float(f[15], "HDOP"),
        vdop=_float(f[16], "VDOP"),
        system_id=_int(f[17], "system id") if len(f) > 17 else None,
    )


_PARSERS: dict[str, Callable[[str, list[str]], Sentence]] = {
    "GGA": _gga,
    "RMC": _rmc,
    "VTG": _vtg,
    "GSA": _gsa,
}
_MIN_FIELDS = {"GGA": 14, "RMC": 11, "VTG": 8, "GSA": 17}


def _float(text: str, name: str) -> float | None:
    if not text:
        return None
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{name} {text[:20]!r} is not a number")
    value = float(text)
    if not math.isfinite(value):  # hundreds of digits overflow to inf
        raise ValueError(f"{name} {text[:20]!r} ({len(text)} characters) is not a finite number")
    return value


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '²' and '٣', which int() then refuses or reads."""
    return text.isascii() and text.isdigit()


def _int(text: str, name: str) -> int | None:
    if not text:
        return None
    if not _digits(text):
        raise ValueError(f"{name} {text[:20]!r} is not a whole number")
    if len(text) > _MAX_INT_DIGITS:
        raise ValueError(f"{name} has {len(text)} digits, more than any receiver sends")
    return int(text)


def _course(text: str) -> float | None:
    course = _float(text, "course")
    if course is not None and not 0 <= course <= 360:
        raise ValueError(f"course {text!r} outside 0..360")
    return None if course is None else course % 360


def _time(text: str) -> time | None:
    if not text:
        return None
    head, _, fraction = text.partition(".")
    if len(head) != 6 or not _digits(head) or (fraction and not _digits(fraction)):
        raise ValueError(f"time {text[:20]!r} is not hhmmss[.sss]")
    hours, minutes, seconds = int(head[:2]), int(head[2:4]), int(head[4:])
    if hours > 23 or minutes > 59 or seconds > 60:
        raise ValueError(f"time {text!r} out of range")
    micros = int((fraction + "000000")[:6]) if fraction else 0
    return time(hours, minutes, min(seconds, 59), micros)  # a leap second 60 is held at :59


def _date(text: str) -> date | None:
    if not text:
        return None
    if len(text) != 6 or not _digits(text):
        raise ValueError(f"date {text[:20]!r} is not ddmmyy")
    year = int(text[4:])
    try:
        # Two-digit years: GNSS receivers appeared in the 1980s, so 80..99 are 19xx.
        return date(1900 + year if year >= 80 else 2000 + year, int(text[2:4]), int(text[:2]))
    except ValueError:
        raise ValueError(f"date {text!r} is not a calendar date") from None


def _coordinate(value: str, hemisphere: str, name: str) -> float | None:
    """`ddmm.mmmm` / `dddmm.mmmm` plus N/S or E/W → signed decimal degrees."""
    if not value:
        return None  # no fix; some receivers still print the hemisphere letter
    latitude = name == "latitude"
    allowed = ("N", "S") if latitude else ("E", "W")
    if hemisphere not in allowed:
        raise ValueError(f"{name} hemisphere {hemisphere!r} is not {' or '.join(allowed)}")
    width = 2 if latitude else 3
    head, _, fraction = value.partition(".")
    if len(head) != width + 2 or not _digits(head) or (fraction and not _digits(fraction)):
        raise ValueError(f"{name} {value[:20]!r} is not {'d' * width}mm.mmmm")
    degrees, minutes = int(head[:width]), float(value[width:])
    if minutes >= 60 or degrees + minutes / 60 > (90 if latitude else 180):
        raise ValueError(f"{name} {value!r} out of range")
    decimal = degrees + minutes / 60
    return -decimal if hemisphere in ("S", "W") else decimal


class NmeaStream:
    """Split a receiver's byte stream into sentences; partial lines wait for the next chunk."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[Sentence | ProtocolError]:
        *lines, self._pending = (self._pending + data).split(b"\n")
        out: list[Sentence | ProtocolError] = []
        for raw in lines:
            self._line(raw, out)
        if len(self._pending) > MAX_LINE:
            out.append(ProtocolError(f"{self._pending[:40]!r}...: {len(self._pending)} bytes without line end"))
            self._pending = b""
        return out

    @staticmethod
    def _line(raw: bytes, out: list[Sentence | ProtocolError]) -> None:
        raw = raw.strip(b"\r\x00 ")
        if not raw:
            return
        if len(raw) > MAX_LINE:  # refused before any work: a megabyte line costs one len()
            out.append(ProtocolError(f"{raw[:40]!r}...: {len(raw)} bytes, longer than any sentence ({MAX_LINE})"))
            return
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            out.append(ProtocolError(f"{raw[:40]!r}: non-ASCII bytes (line noise or wrong baud rate?)"))
            return
        # A sentence cut off by the next one: each `$` starts a new attempt.
        head, dollar, tail = text.rpartition("$")
        if head:
            out.append(ProtocolError(f"{head[:40]!r}: cut off before the next '$' (truncated sentence)"))
        try:
            sentence = parse_sentence(dollar + tail)
        except ProtocolError as exc:
            out.append(exc)
            return
        if sentence is not None:
            out.append(sentence)
