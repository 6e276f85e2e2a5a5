"""Each serial reader on a real pty, fed hostile bytes: it logs a reason, keeps its session, and the
valid data that follows still reaches the vehicle state.

The gentler cases (a non-ASCII line, a cut frame, a bad checksum, 24 random bytes, `?`) are proven by
the readers' own tests in tests/sources; these add what an attacker or a broken device sends: lines
of a hundred kilobytes, runs of noise with no line end, identifiers past 29 bits, NaN and infinity
with a valid checksum, ISO-TP frames that lie about their length, a 5,000-digit error code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.slcan_sim import Door, SlcanSimulator
from tcu.clock import ManualClock
from tcu.errors import DeviceTimeoutError
from tcu.sources.nmea import frame_sentence
from tcu.sources.nmea_fix import ALTITUDE, HDOP, LATITUDE
from tcu.vehicle.state import Signal, VehicleState
from tests.conftest import eventually
from tests.sources import test_nmea_reader as nmea_tests
from tests.sources import test_slcan_reader as slcan_tests
from tests.sources.test_elm327_client import MAPPING, Rig
from tests.sources.test_elm327_client import running as running_obd
from tests.sources.test_modem_client import bench
from tests.sources.test_slcan_reader import GatedSleep, good, running

NOISE = bytes(range(256)) * 400  # 100 KB with every byte value, CR and LF included


def warnings_of(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def non_finite_values(state: VehicleState) -> list[Signal]:
    """Collects every float that is not finite as it is written into the state."""
    seen: list[Signal] = []
    state.subscribe(lambda s: seen.append(s) if isinstance(s.value, float) and not math.isfinite(s.value) else None)
    return seen


@pytest.fixture
async def slcan(tmp_path: Path) -> AsyncIterator[SlcanSimulator]:
    async with SlcanSimulator(elapsed=lambda: slcan_tests.CRUISE_S, link_path=str(tmp_path / "ttyCAN")) as device:
        yield device


async def test_slcan_reader_survives_hostile_bytes(
    slcan: SlcanSimulator, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    state = VehicleState()
    reader = slcan_tests.make_reader(slcan.path, clock, state, GatedSleep())
    async with running(reader.run, "source-can"):
        await eventually(lambda: good(state, "Vehicle.Speed"), within=5, what="first frames")
        await slcan.inject(b"\r" + NOISE.replace(b"\r", b"") + b"\r")  # 100 KB without a CR
        await slcan.inject(b"t0C1" + b"8" * 100_000 + b"\r")  # a frame line of 100 KB
        await slcan.inject(b"T2000000080011223344556677\r")  # 0x20000000: past 29 bits
        await slcan.inject(b"t7FF8" + b"zz" * 8 + b"\r" + b"d1238AABBCCDD\r" + b"\x07" * 3)
        await eventually(lambda: reader.stats.errors >= 6, within=5, what="the hostile lines counted")
        slcan.bus.open_door(Door.FRONT_LEFT)
        await eventually(lambda: state.value("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen") is True, what="the door")
    assert reader.stats.sessions == 1, "garbage is no reason to reopen the port"
    logged = warnings_of(caplog)
    assert "without CR, dropped" in logged
    assert "identifier 0x20000000 exceeds 0x1FFFFFFF" in logged
    assert "data 'zzzzzzzzzzzzzzzz' contains non-hex characters" in logged
    assert "CAN FD frame (d) is not supported" in logged


@pytest.fixture
async def gnss(tmp_path: Path) -> AsyncIterator[NmeaSimulator]:
    device = NmeaSimulator(
        elapsed=nmea_tests.DriveTime(),
        start_utc=nmea_tests.START,
        interval_s=0.02,
        link_path=str(tmp_path / "ttyGNSS"),
    )
    async with device:
        yield device


async def test_nmea_reader_survives_hostile_sentences(
    gnss: NmeaSimulator, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    state = VehicleState()
    bad_floats = non_finite_values(state)
    reader = nmea_tests.make_reader(gnss.path, clock, state, GatedSleep())
    hostile = [  # every one with a correct checksum: only the fields are wrong
        "GPGGA,123519,4807.038,N,01131.000,E,1,08,nan,545.4,M,46.9,M,,",
        "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,inf,M,46.9,M,,",
        "GPGGA,123519,9100.000,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPRMC,123519,A,4807.038,N,01131.000,E,1e999,084.4,230394,003.1,W",
    ]
    async with running(reader.run, "source-gnss"):
        await eventually(lambda: good(state, LATITUDE), within=5, what="first fix")
        for body in hostile:
            await gnss.inject(frame_sentence(body))
        await gnss.inject(frame_sentence("GPGGA," + "1" * 100_000))  # a sentence of 100 KB
        await gnss.inject(NOISE.replace(b"\n", b""))  # 100 KB of noise without a line end
        await eventually(lambda: reader.stats.errors >= 7, within=5, what="the hostile sentences counted")
        sentences = reader.stats.messages
        await eventually(lambda: reader.stats.messages > sentences + 10, within=5, what="sentences keep coming")
        await eventually(lambda: good(state, LATITUDE), within=5, what="a fresh fix")
    assert reader.stats.sessions == 1
    assert bad_floats == [], "NaN or infinity reached the vehicle state"
    for path in (HDOP, ALTITUDE):
        value = state.value(path)
        assert isinstance(value, float)
        assert math.isfinite(value)
    logged = warnings_of(caplog)
    assert "HDOP 'nan' is not a number" in logged
    assert "altitude 'inf' is not a number" in logged
    assert "latitude '9100.000' out of range" in logged
    assert "speed '1e999' is not a number" in logged
    assert "longer than any sentence" in logged
    assert "bytes without line end" in logged


@pytest.fixture
async def obd(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path)
    async with rig.sim:
        yield rig


async def test_elm327_client_survives_lying_answers(obd: Rig, caplog: pytest.LogCaptureFixture) -> None:
    lies = [  # each replaces the next answer, whichever PID it was for
        (b"7E8 10 00 41 0D 32 00 00 00\r\r>", "first frame announces 0 bytes"),  # the CAN FD 32-bit escape
        (b"7E8 1F FF 41 0D 32 00 00 00\r7E8 21 00 00 00 00 00 00 00\r\r>", "announced 4095 bytes but only 13"),
        (b"7E8 10 14 41 0D 32 00 00 00\r7E8 25 00 00 00 00 00 00 00\r\r>", "consecutive frame 5 arrived where 1"),
        (b"7E8 03 41 0D 3\r\r>", "odd number of hex digits"),
        (b"7E8 07 41\r\r>", "single frame announces 7 byte(s) but carries 1"),
    ]
    with caplog.at_level(logging.INFO, logger="tcu"):
        async with running_obd(obd.client):
            await obd.until(obd.all_good)
            for answer, reason in lies:
                obd.sim.truncate_next_write(0, tail=answer)
                obd.clock.advance(1)
                try:
                    await obd.until(lambda reason=reason: reason in caplog.text)
                except TimeoutError:
                    pytest.fail(f"{answer!r} was not refused with {reason!r}")
            await obd.sim.inject(NOISE.replace(b">", b""))  # 100 KB of babble without a prompt
            obd.clock.advance(1)
            await obd.until(lambda: all(obd.fresh(m.path) for m in MAPPING.pids))
    assert obd.sim.requests.count("ATZ") == 1, "lies are no reason to reconnect"


async def test_modem_client_survives_a_5000_digit_error_code(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.ready()
        # int() of those digits raises ValueError; inside data_received that would close the port. Here the
        # parser's line limit makes it garbage first (reads are 1 KB); test_fuzz_serial feeds it whole.
        b.modem.truncate_next_write(0, tail=b"+CME ERROR: " + b"9" * 5000 + b"\r\n")
        with pytest.raises(DeviceTimeoutError):
            await b.client.hang_up()
        await b.modem.inject(b"+CREG: \xc2\xb2\r\n+CREG: " + b"1" * 5000 + b"\r\n")
        await b.client.hang_up()
        assert b.client.garbage_lines >= 2
        assert b.modem.requests.count("ATE0") == 1, "the port stayed open: initialised once"
