"""The virtual GNSS receiver: its epochs read by pynmeagps (not by our parser), its pacing, its faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import serial
from pynmeagps import NMEAReader
from pynmeagps.exceptions import NMEAParseError

from hil.devices.nmea_sim import NmeaSimulator
from tcu.vehicle.drive_cycle import DriveCycle

START = datetime(2026, 11, 23, 23, 59, 50, tzinfo=UTC)


def parse_epoch(data: bytes) -> list[object]:
    return [NMEAReader.parse(line + b"\n") for line in data.split(b"\n") if line]


def test_an_epoch_is_what_a_multi_gnss_receiver_sends() -> None:
    sim = NmeaSimulator(start_utc=START)
    rmc, vtg, gga, gsa_gps, gsa_glonass, gsv = parse_epoch(sim.epoch(30.0))
    sample = DriveCycle().at(30.0)
    assert [m.msgID for m in (rmc, vtg, gga, gsa_gps, gsa_glonass, gsv)] == ["RMC", "VTG", "GGA", "GSA", "GSA", "GSV"]
    assert {m.talker for m in (rmc, vtg, gga, gsa_gps, gsa_glonass)} == {"GN"}
    assert (rmc.lat, rmc.lon) == (pytest.approx(sample.latitude, abs=1e-6), pytest.approx(sample.longitude, abs=1e-6))
    assert datetime.combine(rmc.date, rmc.time, tzinfo=UTC) == START + timedelta(seconds=30)  # past midnight
    assert rmc.date.day == 24
    assert rmc.cog == pytest.approx(sample.heading_deg)
    assert rmc.spd * 1.852 == pytest.approx(sample.speed_kmh, abs=0.01)
    assert vtg.sogk == pytest.approx(sample.speed_kmh)
    assert (gga.quality, gga.numSV, gga.HDOP) == (1, 12, 0.9)
    assert (gsa_gps.systemId, gsa_glonass.systemId) == ("1", "2")


def test_gps_only_talker_sends_one_gsa() -> None:
    messages = parse_epoch(NmeaSimulator(talker="GP").epoch(0.0))
    assert [m.msgID for m in messages].count("GSA") == 1
    assert all(m.talker == "GP" for m in messages)


def test_standing_still_leaves_the_course_empty() -> None:
    rmc, vtg, *_ = parse_epoch(NmeaSimulator().epoch(0.0))  # the cycle starts with a stop
    assert (rmc.spd, rmc.cog, vtg.cogt) == (0.0, "", "")


def test_lost_fix_looks_like_a_tunnel() -> None:
    sim = NmeaSimulator()
    sim.lose_fix()
    rmc, vtg, gga, gsa, *_ = parse_epoch(sim.epoch(30.0))
    assert (rmc.status, rmc.lat, gga.quality, gga.lat, gsa.navMode, vtg.cogt) == ("V", "", 0, "", 1, "")
    sim.regain_fix()
    assert parse_epoch(sim.epoch(31.0))[0].status == "A"


def test_corrupted_checksum_hits_exactly_one_sentence_once() -> None:
    sim = NmeaSimulator()
    sim.corrupt_next_checksum()
    lines = [line + b"\n" for line in sim.epoch(30.0).split(b"\n") if line]
    with pytest.raises(NMEAParseError, match="invalid checksum"):
        NMEAReader.parse(lines[2])
    for line in lines[:2] + lines[3:]:
        NMEAReader.parse(line)
    parse_epoch(sim.epoch(31.0))


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="interval"):
        NmeaSimulator(interval_s=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        NmeaSimulator(start_utc=datetime(2026, 1, 1))


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[NmeaSimulator]:
    async with NmeaSimulator(interval_s=0.05, link_path=str(tmp_path / "ttyGNSS")) as device:
        yield device


def read_lines(port: serial.Serial, count: int) -> list[bytes]:
    return [port.readline() for _ in range(count)]


async def test_epochs_arrive_on_the_pty_at_the_configured_rate(sim: NmeaSimulator) -> None:
    port = await asyncio.to_thread(serial.Serial, sim.path, 9600, timeout=2)
    try:
        await asyncio.to_thread(port.readline)  # whatever was under way when the port opened
        first = sim.epochs_sent
        loop = asyncio.get_running_loop()
        started = loop.time()
        lines = await asyncio.to_thread(read_lines, port, 6 * 10)
        elapsed = loop.time() - started
        parsed = [NMEAReader.parse(line) for line in lines]
        assert sum(m.msgID == "GGA" for m in parsed) >= 9
        assert sim.epochs_sent - first >= 9
        assert 0.3 < elapsed < 3.0  # ten epochs at 50 ms, loosely: this is scheduling, not a benchmark
    finally:
        port.close()


async def test_unplug_and_replug_keep_the_path(sim: NmeaSimulator) -> None:
    path = sim.path
    port = await asyncio.to_thread(serial.Serial, path, 9600, timeout=2)
    assert await asyncio.to_thread(port.readline)
    sim.unplug()
    with pytest.raises(serial.SerialException):
        await asyncio.to_thread(read_lines, port, 20)
    port.close()
    sim.plug()
    port = await asyncio.to_thread(serial.Serial, path, 9600, timeout=2)
    try:
        await asyncio.to_thread(port.readline)
        assert NMEAReader.parse(await asyncio.to_thread(port.readline)) is not None
    finally:
        port.close()
