"""NMEA 0183 parsing: golden receiver transcripts, pynmeagps as an independent cross-check, garbage."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pynmeagps import GET, NMEAMessage, NMEAReader

from tcu.errors import ProtocolError
from tcu.sources.nmea import Gga, Gsa, NmeaStream, Rmc, Sentence, Vtg, checksum, frame_sentence, parse_sentence
from tcu.sources.nmea_fix import GnssInterpreter
from tcu.sources.nmea_track import GnssTrack
from telematics_wire.signal_values import SignalValue

DATA = Path(__file__).parent.parent / "data" / "nmea"
TRANSCRIPTS = ["ublox_m8_multi_gnss", "sirf_gp_nmea23"]


def replay(name: str) -> tuple[list[Sentence], list[ProtocolError], dict[str, SignalValue], GnssTrack]:
    items = NmeaStream().feed((DATA / f"{name}.nmea").read_bytes())
    track = GnssTrack()
    interpreter = GnssInterpreter(track)
    values: dict[str, SignalValue] = {}
    sentences = [i for i in items if not isinstance(i, ProtocolError)]
    for sentence in sentences:
        values |= interpreter.interpret(sentence)
    return sentences, [i for i in items if isinstance(i, ProtocolError)], values, track


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_golden_transcript(name: str) -> None:
    expected = json.loads((DATA / f"{name}.expected.json").read_text())
    sentences, errors, values, track = replay(name)
    assert len(sentences) == expected["sentences"]
    assert len(errors) == len(expected["errors"])
    for error, reason in zip(errors, expected["errors"], strict=True):
        assert reason in str(error)
    assert values == pytest.approx(expected["vss"])
    assert [(p.timestamp.isoformat(), p.latitude, p.longitude) for p in track.positions] == [
        (stamp, pytest.approx(lat, abs=1e-7), pytest.approx(lon, abs=1e-7)) for stamp, lat, lon in expected["track"]
    ]
    assert track.direction_deg == pytest.approx(expected["direction_deg"])


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_every_golden_sentence_agrees_with_pynmeagps(name: str) -> None:
    lines = (DATA / f"{name}.nmea").read_bytes().split(b"\n")
    checked = 0
    for raw in lines:
        try:
            ours = parse_sentence(raw.strip().decode("ascii"))
        except (ProtocolError, UnicodeDecodeError):
            continue
        if ours is None:
            continue
        assert_agrees(ours, NMEAReader.parse(raw.strip() + b"\r\n"))
        checked += 1
    assert checked >= 12


def assert_agrees(ours: Sentence, theirs: Any) -> None:
    """Field by field against pynmeagps (which gives '' for empty fields)."""

    def same(a: object, b: object) -> None:
        assert (a is None and b == "") or a == pytest.approx(b, abs=1e-7), (ours, theirs)

    assert ours.talker == theirs.talker
    match ours:
        case Gga():
            for mine, their in (
                ("time", "time"),
                ("latitude", "lat"),
                ("longitude", "lon"),
                ("quality", "quality"),
                ("satellites", "numSV"),
                ("hdop", "HDOP"),
                ("altitude_m", "alt"),
            ):
                same(getattr(ours, mine), getattr(theirs, their))
        case Rmc():
            assert ours.valid == (theirs.status == "A")
            for mine, their in (
                ("time", "time"),
                ("latitude", "lat"),
                ("longitude", "lon"),
                ("course_deg", "cog"),
                ("date", "date"),
            ):
                same(getattr(ours, mine), getattr(theirs, their))
            same(None if ours.speed_kmh is None else ours.speed_kmh / 1.852, theirs.spd)
        case Vtg():
            same(ours.course_deg, theirs.cogt)
            same(ours.speed_kmh, theirs.sogk)
        case Gsa():
            assert ours.fix_type == theirs.navMode
            same(ours.pdop, theirs.PDOP)
            same(ours.hdop, theirs.HDOP)
            same(ours.vdop, theirs.VDOP)
            assert ours.satellites == tuple(
                getattr(theirs, f"svid_{i:02d}") for i in range(1, 13) if getattr(theirs, f"svid_{i:02d}") != ""
            )


@given(
    st.floats(-89.999, 89.999),
    st.floats(-179.999, 179.999),
    st.times(),
    # pynmeagps reads two-digit years as strptime does (69-99 → 19xx); we pivot at 80 (GPS began in 1980).
    st.dates(date(2000, 1, 1), date(2068, 12, 31)),
    st.sampled_from(["GP", "GN", "GL", "GA", "GB"]),
)
def test_pynmeagps_sentences_parse_identically(lat: float, lon: float, t: time, d: date, talker: str) -> None:
    t = t.replace(microsecond=t.microsecond // 10_000 * 10_000)  # NMEA carries hundredths
    gga = NMEAMessage(
        talker,
        "GGA",
        GET,
        time=t,
        lat=lat,
        lon=lon,
        quality=4,
        numSV=17,
        HDOP=0.6,
        alt=-12.5,
        altUnit="M",
        sep=47.0,
        sepUnit="M",
        diffAge="",
        diffStation="",
    ).serialize()
    rmc = NMEAMessage(
        talker,
        "RMC",
        GET,
        time=t,
        status="A",
        lat=lat,
        lon=lon,
        spd=12.5,
        cog=359.9,
        date=d,
        mv="",
        mvEW="",
        posMode="R",
        navStatus="V",
    ).serialize()
    for raw in (gga, rmc):
        ours = parse_sentence(raw.decode().strip())
        assert ours is not None
        assert_agrees(ours, NMEAReader.parse(raw))
        assert ours.latitude == pytest.approx(lat, abs=2e-7)  # 5 decimals of minutes: 2 cm
        assert ours.longitude == pytest.approx(lon, abs=2e-7)


def test_two_digit_years_pivot_at_1980() -> None:
    for yy, year in (("79", 2079), ("80", 1980), ("26", 2026)):
        rmc = parse_sentence(frame_sentence(f"GPRMC,120000,A,4808.2,N,01134.5,E,0.0,,0101{yy},,,A").decode().strip())
        assert isinstance(rmc, Rmc)
        assert rmc.date == date(year, 1, 1)


def test_rmc_date_and_time_make_a_utc_timestamp() -> None:
    rmc = parse_sentence(
        frame_sentence("GNRMC,235959.50,A,4808.22924,N,01134.56744,E,0.0,,311226,,,A,V").decode().strip()
    )
    assert isinstance(rmc, Rmc)
    assert rmc.timestamp == datetime(2026, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)


def test_lowercase_checksum_and_any_talker_are_accepted() -> None:
    body = "BDGSA,A,3,201,202,203,,,,,,,,,,2.1,1.1,1.8,4"
    line = f"${body}*{checksum(body):02x}"
    gsa = parse_sentence(line)
    assert isinstance(gsa, Gsa)
    assert (gsa.talker, gsa.satellites, gsa.system_id) == ("BD", (201, 202, 203), 4)


def test_other_and_proprietary_sentences_are_skipped_quietly() -> None:
    data = b"".join(
        frame_sentence(body)
        for body in (
            "GPGSV,1,1,01,05,51,164,38",
            "GNGLL,4808.22924,N,01134.56744,E,090000.00,A,A",
            "GPTXT,01,01,02,ANTSTATUS=OK",
            "PUBX,00,081350.00,4717.11321,N",
            "GNZDA,090000.00,23,11,2026,00,00",
        )
    )
    assert NmeaStream().feed(data) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("GNGGA,092750.000,5321.6802,N,00630.3372,W,9,8,1.03,61.7,M,55.2,M,,", "fix quality '9' is not 0..8"),
        ("GNGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,F,55.2,M,,", "altitude unit 'F'"),
        ("GNGGA,092750.000,5321.6802,X,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,", "latitude hemisphere 'X'"),
        ("GNGGA,092750.000,5321.6802,N,0630.3372,W,1,8,1.03,61.7,M,55.2,M,,", "longitude '0630.3372' is not dddmm"),
        ("GNGGA,092750.000,5361.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,", "latitude '5361.6802' out of range"),
        ("GNGGA,092750.000,5321.6802,N,18030.3372,W,1,8,1.03,61.7,M,55.2,M,,", "longitude '18030.3372' out of range"),
        ("GNGGA,096050.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,", "time '096050.000' out of range"),
        ("GNGGA,0927,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,", "time '0927' is not hhmmss"),
        ("GNGGA,092750.000,5321.6802,N,00630.3372,W,1,x8,1.03,61.7,M,55.2,M,,", "satellites 'x8' is not a whole"),
        ("GNGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.0.3,61.7,M,55.2,M,,", "HDOP '1.0.3' is not a number"),
        ("GNGGA,092750.000,5321.6802,N,00630.3372,W,1,8", "GNGGA: 7 fields, needs at least 14"),
        ("GNRMC,092750.000,X,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A", "status 'X' is not A or V"),
        ("GNRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,300211,,,A", "date '300211' is not a calendar"),
        ("GNRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,361.0,280511,,,A", "course '361.0' outside 0..360"),
        ("GNVTG,31.66,M,,M,0.02,N,0.04,K,A", "course reference 'M' is not T"),
        ("GNGSA,A,4,,,,,,,,,,,,,1.0,1.0,1.0", "fix type '4' is not 1, 2 or 3"),
        ("GN-GA,1", "address 'GN-GA' is not talker"),
    ],
)
def test_bad_fields_say_which_and_why(body: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(reason)):
        parse_sentence(frame_sentence(body).decode().strip())


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("GPGGA,1*00", "does not start with '$'"),
        ("$GPGGA,092750.000", "no '*' checksum"),
        ("$GPGGA,1*0", "checksum '0' is not two hex digits"),
        ("$GPGGA,1*ZZ", "checksum 'ZZ' is not two hex digits"),
        ("$GPGGA,1*00", "bad checksum 00, computed"),
    ],
)
def test_framing_errors(line: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(reason)):
        parse_sentence(line)


def test_partial_lines_wait_and_endless_lines_are_dropped() -> None:
    stream = NmeaStream()
    line = frame_sentence("GNVTG,31.66,T,,M,0.02,N,0.04,K,A")
    assert stream.feed(line[:10]) == []
    assert stream.feed(line[10:]) == [Vtg(talker="GN", course_deg=31.66, speed_kmh=0.04)]
    items = stream.feed(b"A" * 200)
    assert len(items) == 1
    assert "200 bytes without line end" in str(items[0])
    assert stream.feed(line) == [Vtg(talker="GN", course_deg=31.66, speed_kmh=0.04)]


@given(st.lists(st.binary(max_size=100), max_size=20))
def test_garbage_never_raises(chunks: list[bytes]) -> None:
    stream = NmeaStream()
    for chunk in chunks:
        for item in stream.feed(chunk):
            assert isinstance(item, (Gga, Rmc, Vtg, Gsa, ProtocolError))
