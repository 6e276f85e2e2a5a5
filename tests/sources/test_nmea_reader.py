"""The GNSS reader on real ptys: the simulated receiver, the golden transcript, and every fault."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.pty_device import PtyDevice, PtyPort
from tcu.backoff import Backoff
from tcu.clock import ManualClock
from tcu.errors import ConfigError
from tcu.sources.nmea import NmeaStream
from tcu.sources.nmea_fix import FIX_QUALITY, FIX_TYPE, LATITUDE, LONGITUDE, TIMESTAMP
from tcu.sources.nmea_reader import NmeaConfig, NmeaReader
from tcu.vehicle.drive_cycle import DriveCycle
from tcu.vehicle.state import Quality, VehicleState
from tests.conftest import eventually
from tests.sources.test_slcan_reader import GatedSleep, good, running

DATA = Path(__file__).parent.parent / "data" / "nmea"
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class DriveTime:
    """The simulator's drive time, moved by the test: 14 s per epoch (we cruise along the route)."""

    def __init__(self) -> None:
        self.seconds = 10.0

    def __call__(self) -> float:
        self.seconds += 14.0
        return self.seconds


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[NmeaSimulator]:
    device = NmeaSimulator(elapsed=DriveTime(), start_utc=START, interval_s=0.02, link_path=str(tmp_path / "ttyGNSS"))
    async with device:
        yield device


def make_reader(
    port: str, clock: ManualClock, state: VehicleState, sleep: GatedSleep, **settings: object
) -> NmeaReader:
    config = NmeaConfig(port=port, backoff=Backoff(base_s=0.5, cap_s=4.0), **settings)  # type: ignore[arg-type]
    return NmeaReader(config, state=state, clock=clock, sleep=sleep)


async def test_the_simulated_receiver_arrives_as_vss_and_track(sim: NmeaSimulator, clock: ManualClock) -> None:
    state = VehicleState()
    reader = make_reader(sim.path, clock, state, GatedSleep())
    async with running(reader.run, "source-gnss"):
        await eventually(lambda: len(reader.track.positions) == 3, within=5, what="three spaced positions")
        await eventually(lambda: reader.track.direction_deg is not None, within=5, what="direction of travel")
    latest = reader.track.latest
    assert latest is not None
    drive_s = (latest.timestamp - START).total_seconds()
    sample = DriveCycle().at(drive_s)
    assert (latest.latitude, latest.longitude) == (
        pytest.approx(sample.latitude, abs=1e-6),
        pytest.approx(sample.longitude, abs=1e-6),
    )
    stamps = [p.timestamp for p in reader.track.positions]
    assert stamps == sorted(stamps, reverse=True)
    assert state.value(FIX_TYPE) == "THREE_D"
    assert state.value(FIX_QUALITY) == 1
    assert state.value("Vehicle.CurrentLocation.GNSSReceiver.SatellitesInUse") == 12
    assert state.value("Vehicle.CurrentLocation.HorizontalAccuracy") == pytest.approx(4.5)
    assert isinstance(state.value(TIMESTAMP), str)
    signal = state.get(LATITUDE)
    assert signal is not None
    assert (signal.source, signal.timestamp, signal.quality) == ("gnss", clock.now(), Quality.GOOD)
    assert reader.stats.errors == 0


async def test_bad_checksum_garbage_and_cut_lines_are_skipped(
    sim: NmeaSimulator, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    state = VehicleState()
    reader = make_reader(sim.path, clock, state, GatedSleep())
    async with running(reader.run, "source-gnss"):
        await eventually(lambda: good(state, LATITUDE), within=5, what="first fix")
        sim.corrupt_next_checksum()
        await eventually(lambda: reader.stats.errors == 1, within=5, what="the bad checksum")
        await sim.inject(b"\xb5\x62\x01\x07garbage\r\n")
        sim.truncate_next_write(30, tail=b"\r\n")  # an epoch cut short after 30 bytes
        await eventually(lambda: reader.stats.errors >= 3, within=5, what="three faults")
        sentences = reader.stats.messages
        await eventually(lambda: reader.stats.messages > sentences + 10, within=5, what="sentences keep coming")
    assert reader.stats.sessions == 1
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "bad checksum" in logged
    assert "non-ASCII bytes" in logged
    assert "no '*' checksum (truncated?)" in logged


async def test_lost_fix_keeps_the_last_position_and_says_so(sim: NmeaSimulator, clock: ManualClock) -> None:
    state = VehicleState()
    reader = make_reader(sim.path, clock, state, GatedSleep())
    async with running(reader.run, "source-gnss"):
        await eventually(lambda: good(state, LATITUDE), within=5, what="first fix")
        sim.lose_fix()
        await eventually(lambda: state.value(FIX_TYPE) == "NONE", within=5, what="fix lost")
        last = reader.track.latest
        await eventually(lambda: state.value(FIX_QUALITY) == 0, within=5, what="quality 0")
        assert reader.track.latest == last
        latitude = state.get(LATITUDE)
        assert latitude is not None
        assert latitude.quality is Quality.STALE  # the last known position, kept but no longer current
        sim.regain_fix()
        await eventually(lambda: state.value(FIX_TYPE) == "THREE_D", within=5, what="fix again")
        await eventually(lambda: good(state, LATITUDE), within=5, what="position good again")


async def test_unplug_marks_stale_and_replug_recovers_keeping_the_track(sim: NmeaSimulator, clock: ManualClock) -> None:
    state, sleep = VehicleState(), GatedSleep()
    reader = make_reader(sim.path, clock, state, sleep)
    async with running(reader.run, "source-gnss"):
        await eventually(lambda: len(reader.track.positions) >= 2, within=5, what="a track")
        clock.advance(5)
        sim.unplug()
        await eventually(lambda: len(sleep.delays) == 1, within=5, what="backoff after the unplug")
        latitude = state.get(LATITUDE)
        assert latitude is not None
        assert (latitude.quality, latitude.timestamp) == (Quality.STALE, clock.now())
        assert len(reader.track.positions) >= 2  # the vehicle's recent past outlives the port
        sim.plug()
        sleep.release()
        await eventually(lambda: good(state, LONGITUDE), within=5, what="position after the replug")
    assert reader.stats.sessions == 2


async def test_a_silent_receiver_is_stale_and_reopened(tmp_path: Path, clock: ManualClock) -> None:
    state, sleep = VehicleState(), GatedSleep()
    async with NmeaSimulator(interval_s=0.02, link_path=str(tmp_path / "ttyGNSS")) as sim:
        reader = make_reader(sim.path, clock, state, sleep, stale_after_s=0.2)
        async with running(reader.run, "source-gnss"):
            await eventually(lambda: good(state, LATITUDE), within=5, what="first fix")
            sim.interval_s = 3600.0  # the receiver stops talking (after the epoch in flight)
            await eventually(lambda: len(sleep.delays) == 1, within=5, what="silence noticed")
            assert not good(state, LATITUDE)
            sim.interval_s = 0.02
            sim.replug()  # restart its pacing
            sleep.release()
            await eventually(lambda: good(state, LATITUDE), within=5, what="talking again")


class TranscriptReceiver(PtyDevice):
    """Plays a transcript once `go` is set (pyserial flushes whatever arrived before the port opened)."""

    def __init__(self, data: bytes, **kwargs: object) -> None:
        super().__init__(name="transcript", **kwargs)  # type: ignore[arg-type]
        self.data = data
        self.go = asyncio.Event()

    async def session(self, port: PtyPort) -> None:
        await self.go.wait()
        for start in range(0, len(self.data), 97):  # odd chunks: lines split anywhere
            await port.write(self.data[start : start + 97])
            await asyncio.sleep(0.001)
        while True:
            await port.read()


@pytest.mark.parametrize("name", ["ublox_m8_multi_gnss", "sirf_gp_nmea23"])
async def test_golden_transcripts_over_a_pty(tmp_path: Path, clock: ManualClock, name: str) -> None:
    expected = json.loads((DATA / f"{name}.expected.json").read_text())
    state = VehicleState()
    async with TranscriptReceiver((DATA / f"{name}.nmea").read_bytes(), link_path=tmp_path / "ttyGOLD") as device:
        reader = make_reader(device.path, clock, state, GatedSleep())
        async with running(reader.run, "source-gnss"):
            await reader.connected.wait()
            device.go.set()
            await eventually(lambda: reader.stats.messages == expected["sentences"], within=5, what="all sentences")
    assert {path: s.value for path, s in state.snapshot().items()} == pytest.approx(expected["vss"])
    assert reader.stats.errors == len(expected["errors"])
    assert [p.timestamp.isoformat() for p in reader.track.positions] == [t for t, _, _ in expected["track"]]


def test_settings_from_the_config_table() -> None:
    settings = NmeaConfig.from_table({"port": "/dev/ttyACM1", "baudrate": 38400, "uere_m": 3.0})
    assert (settings.baudrate, settings.uere_m) == (38400, 3.0)
    with pytest.raises(ConfigError, match="unknown key"):
        NmeaConfig.from_table({"port": "/dev/x", "rate": 1})
    with pytest.raises(ConfigError, match=r"sources\.gnss\.port: missing"):
        NmeaConfig.from_table({"baudrate": 9600})
    with pytest.raises(ConfigError, match="must be positive"):
        NmeaConfig.from_table({"port": "/dev/x", "uere_m": 0})


def test_fix_timestamps_are_the_receivers_signal_timestamps_the_clocks() -> None:
    clock = ManualClock(wall=START + timedelta(hours=5))
    state = VehicleState()
    reader = NmeaReader(NmeaConfig(port="/dev/null"), state=state, clock=clock)
    sim = NmeaSimulator(start_utc=START)
    reader.handle(NmeaStream().feed(sim.epoch(30.0)))
    assert state.value(TIMESTAMP) == "2026-11-23T09:00:30Z"
    latest = reader.track.latest
    assert latest is not None
    assert latest.timestamp == START + timedelta(seconds=30)
    signal = state.get(LATITUDE)
    assert signal is not None
    assert signal.timestamp == clock.now()
