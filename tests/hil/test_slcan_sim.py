"""The virtual SLCAN adapter: its bus schedule and events, its command semantics, and python-can
(an independent SLCAN implementation) talking to it over a real pty, faults included."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import serial

from hil.devices.slcan_sim import Door, SlcanSimulator, VehicleBus, load_vehicle_dbc
from tcu.sources.slcan import CanFrame, SlcanStream
from tcu.vehicle.drive_cycle import DriveCycle
from tests.conftest import eventually

CRUISE_S = 30.0


def decode(db: Any, frame: CanFrame) -> dict[str, Any]:
    return dict(db.get_message_by_frame_id(frame.can_id).decode(frame.data, decode_choices=False))


def test_messages_follow_their_dbc_cycle_times() -> None:
    bus = VehicleBus()
    sent: Counter[int] = Counter()
    for step in range(1000):  # one simulated second in 1 ms steps
        sent.update(frame.can_id for frame in bus.due(step / 1000))
    assert sent == {0x0C1: 50, 0x050: 10, 0x130: 10, 0x2A0: 10, 0x2C0: 10, 0x3B0: 2, 0x3E0: 1}


def test_frames_carry_the_drive_cycle() -> None:
    bus = VehicleBus()
    frames = {f.can_id: f for f in bus.due(0.0, CRUISE_S)}
    sample = DriveCycle().at(CRUISE_S)
    assert decode(bus.db, frames[0x0C1])["VehicleSpeed"] == pytest.approx(sample.speed_kmh)
    assert decode(bus.db, frames[0x3E0])["Odometer"] == pytest.approx(sample.odometer_km, abs=0.05)
    assert decode(bus.db, frames[0x130]) == {"TerminalState": 2, "VehicleMode": 2}
    counters = [decode(bus.db, f)["SpeedCounter"] for t in range(1, 20) for f in bus.due(t * 0.02) if f.can_id == 0x0C1]
    assert counters == [n % 16 for n in range(1, 20)]


def test_events_are_sent_at_once_and_then_cyclically() -> None:
    bus = VehicleBus()
    bus.due(0.0)
    bus.crash(airbag=True)
    assert bus.next_due_s() == float("-inf")
    frames = bus.due(0.001)
    assert [f.can_id for f in frames[:2]] == [0x050, 0x0C1]  # before the cycle time has come
    assert decode(bus.db, frames[0])["CrashDetected"] == 1
    assert decode(bus.db, frames[0])["AirbagDeployed"] == 1
    assert decode(bus.db, frames[1])["VehicleSpeed"] == 0
    bus.open_door(Door.REAR_RIGHT)
    bus.lock()
    bus.set_hood(True)
    bus.press_sos()
    body = [f for f in bus.due(0.002) if f.can_id == 0x2A0]
    assert len(body) == 1  # several changes, one frame
    values = decode(bus.db, body[0])
    assert (values["DoorOpenRearRight"], values["DoorOpenFrontLeft"], values["HoodOpen"]) == (1, 0, 1)
    assert (values["DoorLockedFrontLeft"], values["CentralLockState"]) == (1, 1)


def test_on_a_fast_bench_cycles_stretch_but_events_still_go_at_once() -> None:
    """At 100 times real time the DBC's 20 ms speed cycle would be 5,000 frames a real second: the bus
    keeps to the shortest cycle it is given, while a crash still goes out at once."""
    bus = VehicleBus()
    bus.min_cycle_us = 1_000_000  # 10 real ms at scale 100
    sent: Counter[int] = Counter()
    for step in range(2000):  # two virtual seconds in 1 ms steps
        sent.update(frame.can_id for frame in bus.due(step / 1000))
    assert sent == {0x0C1: 2, 0x050: 2, 0x130: 2, 0x2A0: 2, 0x2C0: 2, 0x3B0: 2, 0x3E0: 2}
    bus.crash(airbag=True)
    assert [f.can_id for f in bus.due(2.0005)][:1] == [0x050]


def test_the_simulator_stretches_its_cycles_by_the_loop_s_scale() -> None:
    from tcu.virtual_time import VirtualTime, VirtualTimeLoop  # noqa: PLC0415

    async def minimum_cycle() -> int:
        async with SlcanSimulator() as sim:
            serve = asyncio.ensure_future(sim.session(_NoPort()))
            await asyncio.sleep(0)
            serve.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serve
            return sim.bus.min_cycle_us

    base = VirtualTime.starting_now(100.0)
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(base)) as runner:
        assert runner.run(minimum_cycle()) == 1_000_000
    assert asyncio.run(minimum_cycle()) == 0  # real time: the DBC's own cycles


class _NoPort:
    """A port nobody writes to: the session waits on it."""

    async def read(self) -> bytes:
        await asyncio.Event().wait()
        return b""

    async def write(self, data: bytes) -> None:
        raise AssertionError(f"nothing to write yet: {data!r}")


@pytest.mark.parametrize(
    ("script", "answers"),
    [
        ([b"O"], [b"\x07"]),  # no bit rate yet
        ([b"S6", b"O", b"S4"], [b"\r", b"\r", b"\x07"]),  # no bit rate change while open
        ([b"C"], [b"\x07"]),  # nothing to close
        ([b"S6", b"O", b"O"], [b"\r", b"\r", b"\x07"]),
        ([b"V", b"N", b"F"], [b"V1013\r", b"NA123\r", b"\x07"]),  # F only while open
        ([b"S6", b"O", b"F", b"C"], [b"\r", b"\r", b"F00\r", b"\r"]),
        ([b"S6", b"L", b"t1230"], [b"\r", b"\r", b"\x07"]),  # listen-only never transmits
        ([b"S6", b"O", b"t1230", b"T123456780"], [b"\r", b"\r", b"z\r", b"Z\r"]),
        ([b"Z1", b"Z9", b"S9", b"?", b""], [b"\r", b"\x07", b"\x07", b"\x07", b""]),
    ],
)
async def test_command_semantics(script: list[bytes], answers: list[bytes]) -> None:
    sim = SlcanSimulator()
    assert [sim.respond(line) for line in script] == answers


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SlcanSimulator]:
    async with SlcanSimulator(elapsed=lambda: CRUISE_S, link_path=str(tmp_path / "ttyCAN")) as device:
        yield device


async def test_python_can_reads_the_simulated_bus(sim: SlcanSimulator) -> None:
    can = pytest.importorskip("can")  # test extra: python-can, an independent SLCAN implementation
    bus = await asyncio.to_thread(can.Bus, interface="slcan", channel=sim.path, bitrate=500_000, sleep_after_open=0)
    db = load_vehicle_dbc()
    try:
        seen: dict[int, Any] = {}
        while len(seen) < 7:
            message = await asyncio.to_thread(bus.recv, 2.0)
            assert message is not None
            seen[message.arbitration_id] = db.decode_message(message.arbitration_id, bytes(message.data))
        assert seen[0x0C1]["VehicleSpeed"] == pytest.approx(DriveCycle().at(CRUISE_S).speed_kmh)
        sim.bus.crash()
        while True:
            message = await asyncio.to_thread(bus.recv, 2.0)
            assert message is not None
            if message.arbitration_id == 0x050:
                break
        assert db.decode_message(0x050, bytes(message.data))["CrashDetected"] == 1
        await asyncio.to_thread(bus.send, can.Message(arbitration_id=0x7DF, data=b"\x02\x01\x0d", is_extended_id=False))
        await eventually(lambda: len(sim.transmitted) == 1, within=5, what="the frame python-can sent")
        assert sim.transmitted[0] == CanFrame(can_id=0x7DF, data=b"\x02\x01\x0d")
    finally:
        await asyncio.to_thread(bus.shutdown)
    await eventually(lambda: not sim.channel.open, within=5, what="python-can closing the channel")


async def test_z1_timestamps_count_milliseconds(sim: SlcanSimulator) -> None:
    port = await asyncio.to_thread(serial.Serial, sim.path, 115200, timeout=1)
    try:
        await asyncio.to_thread(port.write, b"S6\rZ1\rO\r")
        stream, frames = SlcanStream(), []
        while len(frames) < 30:
            data = await asyncio.to_thread(port.read, 256)
            frames += [i for i in stream.feed(data) if isinstance(i, CanFrame) and i.can_id == 0x0C1]
        stamps = [f.timestamp_ms for f in frames if f.timestamp_ms is not None]
        assert len(stamps) == len(frames)
        steps = [b - a for a, b in itertools.pairwise(stamps)]
        assert all(0 <= step <= 200 for step in steps)  # 20 ms cycle, with scheduling jitter
        assert sum(steps) / len(steps) == pytest.approx(20, abs=8)
    finally:
        await asyncio.to_thread(port.close)


def read_until_gone(port: serial.Serial) -> None:
    for _ in range(3):
        port.read(32)


async def test_unplug_breaks_the_client_and_replug_serves_the_same_path(sim: SlcanSimulator) -> None:
    path = sim.path
    port = await asyncio.to_thread(serial.Serial, path, 115200, timeout=1)
    await asyncio.to_thread(port.write, b"S6\rO\r")
    assert await asyncio.to_thread(port.read, 32)
    sim.unplug()
    assert not await asyncio.to_thread(Path(path).exists)
    with pytest.raises(serial.SerialException):
        await asyncio.to_thread(read_until_gone, port)
    port.close()
    sim.plug()
    assert sim.path == path
    assert await asyncio.to_thread(Path(path).exists)
    port = await asyncio.to_thread(serial.Serial, path, 115200, timeout=1)
    try:
        await asyncio.to_thread(port.write, b"O\r")  # power-on state: no bit rate yet
        assert await asyncio.to_thread(port.read, 1) == b"\x07"
    finally:
        port.close()


async def test_garbage_injection_reaches_the_client(sim: SlcanSimulator) -> None:
    port = await asyncio.to_thread(serial.Serial, sim.path, 115200, timeout=1)
    try:
        garbage = await sim.inject_garbage(8)
        assert await asyncio.to_thread(port.read, 8) == garbage
    finally:
        port.close()
