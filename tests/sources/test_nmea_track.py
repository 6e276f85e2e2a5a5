"""The GNSS track (three positions, direction of travel) and the sentence → VSS interpreter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tcu.sources.nmea import Sentence, frame_sentence, parse_sentence
from tcu.sources.nmea_fix import FIX_TYPE, HEADING, LATITUDE, TIMESTAMP, GnssInterpreter
from tcu.sources.nmea_track import GnssPosition, GnssTrack

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
METRE_LAT = 1 / 111_195  # degrees of latitude per metre on the spherical Earth of drive_cycle


def at(seconds: float, north_m: float) -> GnssPosition:
    return GnssPosition(timestamp=T0 + timedelta(seconds=seconds), latitude=48.0 + north_m * METRE_LAT, longitude=11.0)


def test_keeps_exactly_three_spaced_positions_newest_first() -> None:
    track = GnssTrack(min_spacing_m=10.0)
    for second in range(10):
        track.add(at(second, second * 14.0))  # 50 km/h
    assert [p.timestamp.second for p in track.positions] == [9, 8, 7]


def test_a_standstill_refreshes_the_newest_and_keeps_the_trajectory() -> None:
    track = GnssTrack(min_spacing_m=10.0)
    track.add(at(0, 0))
    track.add(at(1, 20))
    track.add(at(2, 40))
    for second in range(3, 60):
        track.add(at(second, 40.5))  # stopped, with a little GNSS jitter
    # The point where it stopped (2 s) and the one before stay; the newest just follows the jitter.
    assert [p.timestamp.second for p in track.positions] == [59, 2, 1]
    assert track.positions[0].latitude == pytest.approx(48.0 + 40.5 * METRE_LAT)


def test_zero_spacing_keeps_the_last_three_fixes() -> None:
    track = GnssTrack(min_spacing_m=0.0)
    for second in range(5):
        track.add(at(second, 0))
    assert [p.timestamp.second for p in track.positions] == [4, 3, 2]


def test_older_fixes_are_ignored_and_same_epoch_replaces() -> None:
    track = GnssTrack()
    track.add(at(5, 0))
    track.add(at(4, 100))
    assert len(track.positions) == 1
    refined = GnssPosition(timestamp=T0 + timedelta(seconds=5), latitude=48.0, longitude=11.0, quality=4, hdop=0.5)
    track.add(refined)
    assert track.positions == (refined,)


def test_direction_from_course_only_when_moving_else_from_positions() -> None:
    track = GnssTrack(min_spacing_m=10.0, min_course_speed_kmh=3.0)
    assert track.direction_deg is None
    track.add(at(0, 0))
    track.add(at(1, 20))
    assert track.direction_deg == pytest.approx(0.0)  # due north, from the two positions
    assert track.update_course(271.5, 40.0)
    assert not track.update_course(90.0, 1.0)  # walking pace: course is noise
    assert not track.update_course(None, 40.0)
    assert track.direction_deg == 271.5
    track.clear()
    assert track.positions == ()
    assert track.direction_deg is None


def test_position_validation() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        GnssPosition(timestamp=datetime(2026, 1, 1), latitude=0, longitude=0)
    with pytest.raises(ValueError, match="off the globe"):
        GnssPosition(timestamp=T0, latitude=91, longitude=0)


def sentence(body: str) -> Sentence:
    parsed = parse_sentence(frame_sentence(body).decode().strip())
    assert parsed is not None
    return parsed


def test_position_written_once_per_epoch_and_dated_by_rmc() -> None:
    interpreter = GnssInterpreter(GnssTrack())
    rmc = interpreter.interpret(sentence("GNRMC,090000.00,A,4808.22924,N,01134.56744,E,27.0,301.2,231126,,,A,V"))
    assert rmc[LATITUDE] == pytest.approx(48.137154)
    assert rmc[TIMESTAMP] == "2026-11-23T09:00:00Z"
    assert rmc[HEADING] == 301.2
    gga = interpreter.interpret(sentence("GNGGA,090000.00,4808.22924,N,01134.56744,E,4,12,0.6,519.4,M,47.3,M,,"))
    assert LATITUDE not in gga  # already written for this epoch
    assert gga["Vehicle.CurrentLocation.Altitude"] == 519.4
    assert gga["Vehicle.CurrentLocation.HorizontalAccuracy"] == 3.0  # 0.6 HDOP x 5 m UERE
    vtg = interpreter.interpret(sentence("GNVTG,301.3,T,,M,27.0,N,50.0,K,A"))
    assert vtg == {}  # course already written for this epoch
    latest = interpreter.track.latest
    assert latest is not None
    assert (latest.quality, latest.hdop) == (4, 0.6)  # GGA refined the RMC fix


def test_gga_before_any_rmc_reaches_the_state_but_not_the_track() -> None:
    interpreter = GnssInterpreter(GnssTrack())
    values = interpreter.interpret(sentence("GPGGA,120000,4808.22924,N,01134.56744,E,1,08,1.0,519.4,M,47.3,M,,"))
    assert LATITUDE in values
    assert TIMESTAMP not in values
    assert interpreter.track.positions == ()


def test_gga_after_midnight_takes_the_next_day() -> None:
    interpreter = GnssInterpreter(GnssTrack())
    interpreter.interpret(sentence("GPRMC,235959.00,A,4808.2,N,01134.5,E,0.0,,311226,,,A"))
    values = interpreter.interpret(sentence("GPGGA,000000.00,4808.2,N,01134.5,E,1,08,1.0,519.4,M,47.3,M,,"))
    assert values[TIMESTAMP] == "2027-01-01T00:00:00Z"


def test_lost_fix_writes_fix_state_but_no_position() -> None:
    interpreter = GnssInterpreter(GnssTrack())
    assert interpreter.interpret(sentence("GNRMC,090000.00,V,,,,,,,231126,,,N,V")) == {}
    gga = interpreter.interpret(sentence("GNGGA,090000.00,,,,,0,00,99.99,,,,,,"))
    assert LATITUDE not in gga
    assert gga["Vehicle.CurrentLocation.GNSSReceiver.FixQuality"] == 0
    gsa = interpreter.interpret(sentence("GNGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99,1"))
    assert gsa[FIX_TYPE] == "NONE"
    assert interpreter.interpret(sentence("GNGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99,2")) == {}  # same solution


def test_uere_must_be_positive() -> None:
    with pytest.raises(ValueError, match="UERE"):
        GnssInterpreter(GnssTrack(), uere_m=0)
