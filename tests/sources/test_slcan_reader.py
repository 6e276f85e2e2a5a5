"""The CAN reader on real ptys: the simulated bus, the golden transcript, and every fault."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hil.devices.pty_device import PtyDevice, PtyPort
from hil.devices.slcan_sim import Door, SlcanSimulator
from tcu.backoff import Backoff
from tcu.clock import ManualClock
from tcu.errors import ConfigError
from tcu.sources.slcan import Close, ListenOnly, Open, SetBitrate, SetTimestamps, SlcanStream
from tcu.sources.slcan_reader import SlcanConfig, SlcanReader
from tcu.vehicle.drive_cycle import DriveCycle
from tcu.vehicle.state import Quality, VehicleState
from tests.conftest import eventually

DATA = Path(__file__).parent.parent / "data" / "slcan"
CRUISE_S = 30.0  # into the drive cycle: cruising at 50 km/h


class GatedSleep:
    """The reconnect loop's sleep: records each backoff and returns when the test says so."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._gate = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self._gate.wait()
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()


@contextlib.asynccontextmanager
async def running(run: Callable[[], Awaitable[object]], name: str) -> AsyncIterator[None]:
    """Run a source's `run()` under a TaskGroup, as the app does, and cancel it at the end."""
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(run(), name=name)  # type: ignore[arg-type]
        try:
            yield
        finally:
            task.cancel()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SlcanSimulator]:
    async with SlcanSimulator(elapsed=lambda: CRUISE_S, link_path=str(tmp_path / "ttyCAN")) as device:
        yield device


def make_reader(
    port: str, clock: ManualClock, state: VehicleState, sleep: GatedSleep, **settings: object
) -> SlcanReader:
    config = SlcanConfig(port=port, backoff=Backoff(base_s=0.5, cap_s=4.0), **settings)  # type: ignore[arg-type]
    return SlcanReader(config, state=state, clock=clock, sleep=sleep)


def good(state: VehicleState, path: str) -> bool:
    signal = state.get(path)
    return signal is not None and signal.quality is Quality.GOOD


async def test_the_simulated_bus_arrives_as_vss(sim: SlcanSimulator, clock: ManualClock) -> None:
    state, sleep = VehicleState(), GatedSleep()
    reader = make_reader(sim.path, clock, state, sleep)
    async with running(reader.run, "source-can"):
        await eventually(lambda: good(state, "Vehicle.TraveledDistance"), within=5, what="odometer")
    sample = DriveCycle().at(CRUISE_S)
    assert state.value("Vehicle.Speed") == pytest.approx(sample.speed_kmh)
    assert state.value("Vehicle.TraveledDistance") == pytest.approx(sample.odometer_km, abs=0.05)
    assert state.value("Vehicle.LowVoltageBattery.CurrentVoltage") == pytest.approx(sample.battery_v)
    assert state.value("Vehicle.LowVoltageSystemState") == "ON"
    assert state.value("Vehicle.Mode") == "driving"
    assert state.value("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen") is False
    speed = state.get("Vehicle.Speed")
    assert speed is not None
    assert (speed.source, speed.timestamp) == ("can", clock.now())
    # C (refused: nothing was open), S6, O; and C again on the way out.
    assert sim.commands == [Close(), SetBitrate(bitrate=500_000), Open(), Close()]
    assert not sim.channel.open
    assert sleep.delays == []


async def test_events_reach_the_state(sim: SlcanSimulator, clock: ManualClock) -> None:
    state = VehicleState()
    reader = make_reader(sim.path, clock, state, GatedSleep())
    async with running(reader.run, "source-can"):
        await eventually(lambda: good(state, "Vehicle.Speed"), within=5, what="first frames")
        sim.bus.open_door(Door.FRONT_LEFT)
        await eventually(lambda: state.value("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen") is True, what="door")
        sim.bus.lock(double=True)
        await eventually(lambda: state.value("Vehicle.Body.CentralLock.State") == "DOUBLE_LOCKED", what="locked")
        assert state.value("Vehicle.Cabin.Door.Row2.PassengerSide.IsLocked") is True
        sim.bus.crash(airbag=True)
        await eventually(lambda: state.value("Vehicle.Safety.Airbag.IsDeployed") is True, what="airbag")
        assert state.value("Vehicle.Safety.CrashDetected") is True
        await eventually(lambda: state.value("Vehicle.Speed") == 0.0, what="standstill after the crash")
        sim.bus.press_sos()
        await eventually(lambda: state.value("Vehicle.Cabin.SosButton.IsPressed") is True, what="SOS")


async def test_garbage_and_cut_lines_are_logged_and_skipped(
    sim: SlcanSimulator, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    state = VehicleState()
    reader = make_reader(sim.path, clock, state, GatedSleep())
    async with running(reader.run, "source-can"):
        await eventually(lambda: good(state, "Vehicle.Speed"), within=5, what="first frames")
        await sim.inject(b"\r\xff\xfe\x00garbage\r")
        await sim.inject(b"t0C19AF1205000000000000000001\r")  # DLC 9
        await sim.inject(b"t0C12AF12\r")  # too short for its DBC message
        sim.truncate_next_write(7, tail=b"\r")  # a frame cut in the middle
        await eventually(lambda: reader.stats.errors >= 4, what="four faults counted")
        messages = reader.stats.messages
        await eventually(lambda: reader.stats.messages > messages + 20, what="frames keep coming")
    assert reader.stats.sessions == 1
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "non-ASCII bytes" in logged
    assert "DLC 9 exceeds 8" in logged
    assert "DBC message VehicleSpeed needs 4" in logged
    assert "hex digits" in logged


async def test_unplug_marks_stale_and_replug_at_the_same_path_recovers(sim: SlcanSimulator, clock: ManualClock) -> None:
    state, sleep = VehicleState(), GatedSleep()
    reader = make_reader(sim.path, clock, state, sleep)
    beats = 0

    async def heartbeat() -> None:  # another task of the agent: it must never stall
        nonlocal beats
        while True:
            beats += 1
            await asyncio.sleep(0.005)

    async with running(reader.run, "source-can"), running(heartbeat, "heartbeat"):
        await eventually(lambda: good(state, "Vehicle.Speed"), within=5, what="first frames")
        clock.advance(1)
        sim.unplug()  # EIO on the reader's next read
        await eventually(lambda: len(sleep.delays) == 1, what="backoff after the unplug")
        speed = state.get("Vehicle.Speed")
        assert speed is not None
        assert (speed.quality, speed.timestamp) == (Quality.STALE, clock.now())
        assert all(s.quality is Quality.STALE for s in state.snapshot().values())
        assert 0.25 <= sleep.delays[0] <= 0.5

        before = beats
        sleep.release()  # the port is still gone: opening fails, the backoff grows
        await eventually(lambda: len(sleep.delays) == 2, what="second backoff")
        assert 0.5 <= sleep.delays[1] <= 1.0
        assert beats > before

        sim.plug()
        sleep.release()
        await eventually(lambda: good(state, "Vehicle.Speed"), within=5, what="frames after the replug")
    assert reader.stats.sessions == 2


async def test_an_adapter_that_resets_itself_is_reopened(sim: SlcanSimulator, clock: ManualClock) -> None:
    state, sleep = VehicleState(), GatedSleep()
    reader = make_reader(sim.path, clock, state, sleep, stale_after_s=0.2)
    async with running(reader.run, "source-can"):
        await eventually(lambda: good(state, "Vehicle.Speed"), within=5, what="first frames")
        sim.reset()  # channel closed, settings gone, silence
        await eventually(lambda: len(sleep.delays) == 1, what="silence noticed")
        assert not good(state, "Vehicle.Speed")
        sleep.release()
        await eventually(lambda: good(state, "Vehicle.Speed"), within=5, what="reopened channel")
    assert sim.commands.count(SetBitrate(bitrate=500_000)) == 2


async def test_listen_only_with_timestamps(sim: SlcanSimulator, clock: ManualClock) -> None:
    state = VehicleState()
    reader = make_reader(sim.path, clock, state, GatedSleep(), listen_only=True, timestamps=True, bitrate=250_000)
    async with running(reader.run, "source-can"):
        await eventually(lambda: good(state, "Vehicle.Speed"), within=5, what="frames")
    assert sim.commands[:4] == [Close(), SetBitrate(bitrate=250_000), SetTimestamps(enabled=True), ListenOnly()]
    assert reader.stats.errors == 0


class RefusingAdapter(PtyDevice):
    """Answers BEL to everything, as an adapter does that cannot do the bit rate asked for."""

    async def session(self, port: PtyPort) -> None:
        while True:
            data = await port.read()
            await port.write(b"\x07" * data.count(b"\r"))


async def test_a_refused_bitrate_is_reported_and_retried(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    state, sleep = VehicleState(), GatedSleep()
    async with RefusingAdapter(name="refusing", link_path=tmp_path / "ttyBEL") as device:
        reader = make_reader(device.path, clock, state, sleep)
        async with running(reader.run, "source-can"):
            await eventually(lambda: len(sleep.delays) == 1, what="refusal")
    assert "the adapter refused 'S6' (BEL)" in caplog.text


class MuteAdapter(PtyDevice):
    """Takes everything, answers nothing: a hung adapter, or the wrong device on the port."""

    async def session(self, port: PtyPort) -> None:
        while True:
            await port.read()


async def test_a_mute_adapter_times_out_and_is_retried(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    sleep = GatedSleep()
    async with MuteAdapter(name="mute", link_path=tmp_path / "ttyMUTE") as device:
        reader = make_reader(device.path, clock, VehicleState(), sleep, command_timeout_s=0.1)
        async with running(reader.run, "source-can"):
            await eventually(lambda: len(sleep.delays) == 1, within=5, what="timeout")
    assert "no reply to 'C' within 0.10 s" in caplog.text


async def test_a_missing_port_is_retried_with_growing_backoff(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    sleep = GatedSleep()
    reader = make_reader(str(tmp_path / "ttyACM9"), clock, VehicleState(), sleep)
    async with running(reader.run, "source-can"):
        for attempt in range(1, 5):
            await eventually(lambda n=attempt: len(sleep.delays) == n, within=5, what=f"attempt {attempt}")
            sleep.release()
    for attempt, delay in enumerate(sleep.delays):  # capped at 4 s, jitter takes up to half off
        ceiling = min(4.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert "cannot open" in caplog.text


class TranscriptAdapter(PtyDevice):
    """Accepts the opening commands, then plays the golden transcript chunk by chunk."""

    def __init__(self, chunks: list[bytes], **kwargs: object) -> None:
        super().__init__(name="transcript", **kwargs)  # type: ignore[arg-type]
        self.chunks = chunks

    async def session(self, port: PtyPort) -> None:
        received = b""
        while not received.endswith(b"O\r"):
            data = await port.read()
            received += data
            await port.write(b"\r" * data.count(b"\r"))
        for chunk in self.chunks:
            await port.write(chunk)
            await asyncio.sleep(0.002)  # let each chunk arrive as its own read
        while True:
            await port.write(b"\r" * (await port.read()).count(b"\r"))


async def test_golden_transcript_over_a_pty(tmp_path: Path, clock: ManualClock) -> None:
    lines = (DATA / "canable_z1_session.txt").read_text().splitlines()
    chunks = [codecs.escape_decode(line)[0] for line in lines if line and not line.startswith("#")]
    state = VehicleState()
    async with TranscriptAdapter(chunks, link_path=tmp_path / "ttyGOLD") as device:
        reader = make_reader(device.path, clock, state, GatedSleep())
        async with running(reader.run, "source-can"):
            await eventually(lambda: state.value("Vehicle.Cabin.SosButton.IsPressed") is True, what="last frame")
    expected = json.loads((DATA / "canable_z1_session.vss.json").read_text())
    assert {path: s.value for path, s in state.snapshot().items()} == pytest.approx(expected)
    assert reader.stats.errors == 9  # 8 garbage lines + 1 frame too short for its message


def test_settings_from_the_config_table() -> None:
    settings = SlcanConfig.from_table({"port": "/dev/ttyACM0", "bitrate": 250_000, "listen_only": True})
    assert (settings.port, settings.bitrate, settings.listen_only) == ("/dev/ttyACM0", 250_000, True)
    with pytest.raises(ConfigError, match="unknown key"):
        SlcanConfig.from_table({"port": "/dev/x", "speed": 1})
    with pytest.raises(ConfigError, match=r"sources\.can\.port: missing"):
        SlcanConfig.from_table({})
    with pytest.raises(ConfigError, match="83300 is not one of"):
        SlcanConfig.from_table({"port": "/dev/x", "bitrate": 83_300})
    with pytest.raises(ConfigError, match=r"backoff needs 0 < base \(5\.0\) <= cap \(1\.0\)"):
        SlcanConfig.from_table({"port": "/dev/x", "reconnect_base_s": 5, "reconnect_cap_s": 1})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) backoff"):
        SlcanConfig.from_table({"port": "/dev/x", "backoff": 1})
    assert SlcanConfig.from_table({"port": "/dev/x", "reconnect_cap_s": 5}).backoff.cap_s == 5.0


def test_timestamps_come_from_the_injected_clock_not_the_adapter() -> None:
    clock = ManualClock(wall=datetime(2030, 5, 1, tzinfo=UTC))
    state = VehicleState()
    reader = SlcanReader(SlcanConfig(port="/dev/null"), state=state, clock=clock)
    reader.handle(SlcanStream().feed(b"t0C14AF1205000010\r"))
    signal = state.get("Vehicle.Speed")
    assert signal is not None
    assert signal.timestamp == datetime(2030, 5, 1, tzinfo=UTC)
