"""One contract for every CAN source the agent offers: our SLCAN reader (normal and passive), and the
python-can source on its `virtual` bus, on python-can's own `slcan` interface in listen-only mode, and
on SocketCAN `vcan0` where the kernel offers it.

Each rig puts frames on "the bus" (encoded with cantools from the packaged DBC, not hand-made bytes)
and can pull the plug; the assertions are what the agent relies on from any CAN source:

- mapped frames arrive as their VSS signals, timestamped by the agent's clock;
- frames the mapping does not use are counted and ignored, without an error;
- a mapped frame too short for its DBC message is rejected with the reason in the log;
- silence on the bus marks the CAN signals stale and the source reopens;
- a device that goes away marks them stale at once, and the source recovers when it comes back.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import can
import pytest

from hil.devices.pty_device import PtyDevice, PtyPort
from hil.devices.slcan_sim import load_vehicle_dbc
from tcu.backoff import Backoff
from tcu.clock import ManualClock
from tcu.sources.can_bus import CanBusConfig, CanBusReader, open_python_can_bus
from tcu.sources.slcan import CanFrame, format_frame
from tcu.sources.slcan_reader import SlcanConfig, SlcanReader
from tcu.vehicle.state import Quality, VehicleState
from tests.conftest import eventually

DBC = load_vehicle_dbc()
BACKOFF = Backoff(base_s=0.5, cap_s=4.0)
SPEED = "Vehicle.Speed"
DRIVER_DOOR = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"


def encoded(message: str, **signals: float) -> CanFrame:
    db_message = DBC.get_message_by_name(message)
    data = db_message.encode({s.name: 0 for s in db_message.signals} | signals, strict=True)
    return CanFrame(can_id=db_message.frame_id, data=data, extended=db_message.is_extended_frame)


def speed_frame(kmh: float, counter: int = 0) -> CanFrame:
    return encoded("VehicleSpeed", VehicleSpeed=kmh, SpeedCounter=counter)


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


# --- the bus behind each source ----------------------------------------------------------------


class FrameAdapter(PtyDevice):
    """An SLCAN adapter on a pty whose frames the test sends. It acknowledges every command line
    (CR) and streams only while its channel is open (`O` or `L`); `deaf`, it never answers and
    always streams, as a logger or gateway that emits SLCAN lines on its own does."""

    def __init__(self, *, deaf: bool = False, link_path: Path) -> None:
        super().__init__(name="frames", link_path=link_path)
        self.deaf = deaf
        self.received = bytearray()  # every byte the host wrote, across plugs
        self.is_open = deaf
        self._input = bytearray()

    def on_plug(self) -> None:
        self.is_open = self.deaf
        self._input.clear()

    async def session(self, port: PtyPort) -> None:
        while True:
            data = await port.read()
            self.received += data
            if self.deaf:
                continue
            self._input += data
            while (end := self._input.find(b"\r")) >= 0:
                line = bytes(self._input[:end])
                del self._input[: end + 1]
                if line in (b"O", b"L"):
                    self.is_open = True
                elif line == b"C":
                    self.is_open = False
                if line:
                    await port.write(b"\r")

    def lines(self) -> list[bytes]:
        return [line for line in bytes(self.received).split(b"\r") if line]


class Rig(abc.ABC):
    """A CAN source under test and the bus it listens to."""

    reader: SlcanReader | CanBusReader

    @abc.abstractmethod
    async def send(self, frame: CanFrame) -> None: ...

    @abc.abstractmethod
    def unplug(self) -> None: ...

    @abc.abstractmethod
    def plug(self) -> None: ...

    async def ready(self) -> None:
        """Wait until the source has its bus open and frames sent now will be read."""
        await eventually(self.reader.connected.is_set, within=10, what="the CAN source connected")


class SlcanRig(Rig):
    def __init__(self, device: FrameAdapter, reader: SlcanReader) -> None:
        self.device, self.reader = device, reader

    async def ready(self) -> None:
        await super().ready()
        await eventually(lambda: self.device.is_open, within=5, what="the adapter's channel open")

    async def send(self, frame: CanFrame) -> None:
        await self.device.inject(format_frame(frame))

    def unplug(self) -> None:
        self.device.unplug()

    def plug(self) -> None:
        self.device.plug()


class UnpluggableBus:
    """A python-can bus whose device can be pulled: `recv` then raises as SocketCAN does on a downed
    interface (CanOperationError, ENETDOWN), and opening fails until it is plugged back."""

    def __init__(self, bus: can.BusABC, rig: VirtualRig) -> None:
        self._bus, self._rig = bus, rig

    def recv(self, timeout: float | None = None) -> can.Message | None:
        if self._rig.unplugged:
            raise can.CanOperationError("Failed to receive: Network is down [Error Code 100]")
        return self._bus.recv(timeout)

    def shutdown(self) -> None:
        self._bus.shutdown()


class VirtualRig(Rig):
    """python-can's `virtual` interface: the sender is another Bus on the same channel."""

    def __init__(self, channel: str, reader_factory: Callable[..., CanBusReader]) -> None:
        self.unplugged = False
        self.opened = 0
        self._sender = can.Bus(interface="virtual", channel=channel)
        self.reader = reader_factory(CanBusConfig(interface="virtual", channel=channel), open_bus=self._open)

    def _open(self, settings: CanBusConfig) -> Any:
        if self.unplugged:
            raise can.CanInitializationError("No such device: virtual channel unplugged")
        self.opened += 1
        return UnpluggableBus(open_python_can_bus(settings), self)

    async def send(self, frame: CanFrame) -> None:
        self._sender.send(can.Message(arbitration_id=frame.can_id, data=frame.data, is_extended_id=frame.extended))

    def unplug(self) -> None:
        self.unplugged = True

    def plug(self) -> None:
        self.unplugged = False

    def close(self) -> None:
        self._sender.shutdown()


class SocketcanRig(Rig):
    """SocketCAN on `vcan0`; unplugging is `ip link set vcan0 down`."""

    def __init__(self, reader_factory: Callable[..., CanBusReader]) -> None:
        self._sender = can.Bus(interface="socketcan", channel="vcan0")
        self.reader = reader_factory(CanBusConfig(interface="socketcan", channel="vcan0"))

    async def send(self, frame: CanFrame) -> None:
        self._sender.send(can.Message(arbitration_id=frame.can_id, data=frame.data, is_extended_id=frame.extended))

    def unplug(self) -> None:
        subprocess.run(["ip", "link", "set", "vcan0", "down"], check=True)

    def plug(self) -> None:
        subprocess.run(["ip", "link", "set", "vcan0", "up"], check=True)

    def close(self) -> None:
        self._sender.shutdown()


def vcan0_unavailable() -> str | None:
    """None when `vcan0` is usable (made if need be), else the precise reason it is not."""
    if not hasattr(__import__("socket"), "AF_CAN"):
        return "this Python has no socket.AF_CAN"
    if Path("/sys/class/net/vcan0").exists():
        subprocess.run(["ip", "link", "set", "vcan0", "up"], check=False, capture_output=True)
        return None
    if shutil.which("ip") is None:
        return "no `ip` command to create vcan0"
    made = subprocess.run(
        ["ip", "link", "add", "dev", "vcan0", "type", "vcan"], check=False, capture_output=True, text=True
    )
    if made.returncode != 0:
        said = " ".join((made.stderr or made.stdout).split())
        return f"the kernel offers no vcan: `ip link add dev vcan0 type vcan` said {said!r}"
    subprocess.run(["ip", "link", "set", "vcan0", "up"], check=False, capture_output=True)
    return None


RIGS = ["slcan", "slcan-passive", "python-can-virtual", "python-can-slcan-listen-only", "socketcan-vcan0"]


@contextlib.asynccontextmanager
async def make_rig(
    kind: str, tmp_path: Path, clock: ManualClock, state: VehicleState, sleep: GatedSleep, stale_after_s: float
) -> AsyncIterator[Rig]:
    def bus_reader(settings: CanBusConfig, **kwargs: Any) -> CanBusReader:
        settings = CanBusConfig(
            interface=settings.interface,
            channel=settings.channel,
            bitrate=settings.bitrate,
            options=settings.options,
            stale_after_s=stale_after_s,
            backoff=BACKOFF,
        )
        return CanBusReader(settings, state=state, clock=clock, sleep=sleep, **kwargs)

    if kind in ("slcan", "slcan-passive", "python-can-slcan-listen-only"):
        passive = kind == "slcan-passive"
        async with FrameAdapter(deaf=passive, link_path=tmp_path / "ttyCAN") as device:
            reader: SlcanReader | CanBusReader
            if kind == "python-can-slcan-listen-only":
                reader = bus_reader(
                    CanBusConfig(
                        interface="slcan",
                        channel=device.path,
                        bitrate=500_000,
                        options={"sleep_after_open": 0, "listen_only": True},
                    )
                )
            else:
                settings = SlcanConfig(port=device.path, passive=passive, stale_after_s=stale_after_s, backoff=BACKOFF)
                reader = SlcanReader(settings, state=state, clock=clock, sleep=sleep)
            yield SlcanRig(device, reader)  # type: ignore[arg-type]
    elif kind == "python-can-virtual":
        rig = VirtualRig(f"contract-{tmp_path.name}", bus_reader)
        try:
            yield rig
        finally:
            rig.close()
    else:
        reason = vcan0_unavailable()
        if reason is not None:
            pytest.skip(reason)
        socketcan = SocketcanRig(bus_reader)
        try:
            yield socketcan
        finally:
            socketcan.close()


@contextlib.asynccontextmanager
async def running(run: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(run(), name="source-can")  # type: ignore[arg-type]
        try:
            yield
        finally:
            task.cancel()


def live_worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("can-")]


def good(state: VehicleState, path: str) -> bool:
    signal = state.get(path)
    return signal is not None and signal.quality is Quality.GOOD


# --- the contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", RIGS)
async def test_mapped_frames_arrive_as_vss_signals(kind: str, tmp_path: Path, clock: ManualClock) -> None:
    state, sleep = VehicleState(), GatedSleep()
    async with make_rig(kind, tmp_path, clock, state, sleep, stale_after_s=10) as rig, running(rig.reader.run):
        await rig.ready()
        await rig.send(speed_frame(47.83))
        await rig.send(encoded("BodyStatus", DoorOpenFrontLeft=1))
        await eventually(lambda: state.get(DRIVER_DOOR) is not None, within=5, what="the door frame")
    speed = state.get(SPEED)
    assert speed is not None
    assert speed.value == pytest.approx(47.83)
    assert (speed.source, speed.quality, speed.timestamp) == ("can", Quality.GOOD, clock.now())
    assert state.value(DRIVER_DOOR) is True
    assert rig.reader.stats.errors == 0
    assert sleep.delays == []
    if isinstance(rig, SlcanRig):  # what went to the adapter, `C` on the way out included
        sent = rig.device.lines()
        if kind == "slcan":
            assert sent == [b"C", b"S6", b"O", b"C"]
        elif kind == "slcan-passive":
            assert sent == []  # not one byte to a stream that does not speak Lawicel
        else:  # python-can's slcan, listen-only: never `O`, so never an acknowledge on the bus
            assert b"L" in sent
            assert b"O" not in sent
    await eventually(lambda: not live_worker_threads(), within=5, what="the bus worker thread ended")


@pytest.mark.parametrize("kind", RIGS)
async def test_frames_the_mapping_does_not_use_are_ignored(kind: str, tmp_path: Path, clock: ManualClock) -> None:
    state = VehicleState()
    async with (
        make_rig(kind, tmp_path, clock, state, GatedSleep(), stale_after_s=10) as rig,
        running(rig.reader.run),
    ):
        await rig.ready()
        await rig.send(CanFrame(can_id=0x7FF, data=bytes(8)))
        await rig.send(CanFrame(can_id=0x0C1, data=bytes(4), extended=True))  # 29-bit 0xC1 is another frame
        await rig.send(CanFrame(can_id=0x1ABCDEF, data=b"\x01", extended=True))
        await rig.send(speed_frame(12.5))  # a marker: everything before it has been read
        await eventually(lambda: state.get(SPEED) is not None, within=5, what="the marker frame")
    assert set(state.snapshot()) == {SPEED}
    assert state.value(SPEED) == pytest.approx(12.5)
    assert rig.reader.stats.messages >= 4
    assert rig.reader.stats.errors == 0


@pytest.mark.parametrize("kind", RIGS)
async def test_a_frame_too_short_for_its_message_is_rejected_with_the_reason(
    kind: str, tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    state = VehicleState()
    async with (
        make_rig(kind, tmp_path, clock, state, GatedSleep(), stale_after_s=10) as rig,
        running(rig.reader.run),
    ):
        await rig.ready()
        await rig.send(CanFrame(can_id=0x0C1, data=b"\xaf\x12"))
        await rig.send(encoded("BodyStatus", DoorOpenFrontLeft=1))
        await eventually(lambda: state.get(DRIVER_DOOR) is not None, within=5, what="the frame after it")
    assert state.get(SPEED) is None
    assert rig.reader.stats.errors == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("frame 0xC1 has 2 data bytes; DBC message VehicleSpeed needs 4" in m for m in warnings), warnings


@pytest.mark.parametrize("kind", RIGS)
async def test_silence_marks_the_signals_stale_and_the_source_reopens(
    kind: str, tmp_path: Path, clock: ManualClock
) -> None:
    state, sleep = VehicleState(), GatedSleep()
    async with make_rig(kind, tmp_path, clock, state, sleep, stale_after_s=0.3) as rig, running(rig.reader.run):
        await rig.ready()
        await rig.send(speed_frame(30.0))
        await eventually(lambda: good(state, SPEED), within=5, what="first frame")
        clock.advance(5)
        await eventually(lambda: len(sleep.delays) == 1, within=5, what="the silence noticed")
        speed = state.get(SPEED)
        assert speed is not None
        assert (speed.quality, speed.timestamp) == (Quality.STALE, clock.now())
        sleep.release()
        await eventually(lambda: rig.reader.stats.sessions == 2, within=10, what="the bus reopened")
        await rig.ready()
        await rig.send(speed_frame(31.0))
        await eventually(lambda: good(state, SPEED), within=5, what="fresh frames after reopening")
    assert state.value(SPEED) == pytest.approx(31.0)


@pytest.mark.parametrize("kind", RIGS)
async def test_a_device_that_goes_away_is_stale_at_once_and_recovers(
    kind: str, tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    state, sleep = VehicleState(), GatedSleep()
    async with make_rig(kind, tmp_path, clock, state, sleep, stale_after_s=30) as rig, running(rig.reader.run):
        await rig.ready()
        await rig.send(speed_frame(30.0))
        await eventually(lambda: good(state, SPEED), within=5, what="first frame")
        rig.unplug()
        # Well before stale_after_s: the failure itself ends the session.
        await eventually(lambda: len(sleep.delays) == 1, within=5, what="the loss noticed")
        assert state.get(SPEED).quality is Quality.STALE  # type: ignore[union-attr]
        sleep.release()  # still unplugged: opening fails, one clear line, and the backoff grows
        await eventually(lambda: len(sleep.delays) == 2, within=10, what="a failed reopen")
        assert sleep.delays[1] > sleep.delays[0] / 2
        rig.plug()
        sleep.release()
        await eventually(lambda: rig.reader.stats.sessions == 2, within=10, what="the bus reopened")
        await rig.ready()
        await rig.send(speed_frame(31.0))
        await eventually(lambda: good(state, SPEED), within=5, what="fresh frames after the replug")
    assert state.value(SPEED) == pytest.approx(31.0)
    assert not [r for r in caplog.records if r.exc_info], "a lost device is no reason for a traceback"
