"""The python-can source beyond the shared contract (tests/contract/test_can_sources.py): its config,
what it does with frames SLCAN cannot carry, a driver that cannot open or hangs, a flood, and
SLCAN's passive mode fed by python-can's own slcan writer through a socat pty pair."""

from __future__ import annotations

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
from tcu.errors import ConfigError
from tcu.sources.can_bus import CanBusConfig, CanBusReader
from tcu.sources.configured import build_sources, can_reader
from tcu.sources.slcan_reader import SlcanConfig, SlcanReader
from tcu.vehicle.state import VehicleState
from tests.conftest import eventually

DBC = load_vehicle_dbc()


def speed_message(kmh: float, **kwargs: Any) -> can.Message:
    message = DBC.get_message_by_name("VehicleSpeed")
    data = message.encode({"VehicleSpeed": kmh, "SpeedCounter": 0}, strict=True)
    return can.Message(arbitration_id=message.frame_id, data=data, is_extended_id=False, **kwargs)


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []
        self._gate = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self._gate.wait()


@contextlib.asynccontextmanager
async def running(run: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(run(), name="source-can")  # type: ignore[arg-type]
        try:
            yield
        finally:
            task.cancel()


# --- configuration -----------------------------------------------------------------------------


def test_interface_picks_the_python_can_source_and_port_keeps_slcan(clock: ManualClock) -> None:
    state = VehicleState()
    reader = can_reader(
        {"interface": "pcan", "channel": "PCAN_USBBUS1", "bitrate": 250_000, "options": {"fd": False}},
        state=state,
        clock=clock,
    )
    assert isinstance(reader, CanBusReader)
    assert isinstance(can_reader({"port": "/dev/ttyACM0"}, state=state, clock=clock), SlcanReader)
    settings = CanBusConfig.from_table(
        {"interface": "socketcan", "channel": "can0", "stale_after_s": 5, "reconnect_cap_s": 8}
    )
    assert (settings.name, settings.bitrate, settings.stale_after_s, settings.backoff.cap_s) == (
        "socketcan:can0",
        None,
        5,
        8.0,
    )
    built = build_sources({"can": {"interface": "virtual", "channel": "bench"}}, state=state, clock=clock)
    assert set(built.runners) == {"can"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"interface": "socketcann"}, r"sources\.can\.interface: 'socketcann' is not a python-can interface; one of"),
        ({"interface": "pcan", "bitrate": "500k"}, r"sources\.can\.bitrate: '500k' is not a positive whole number"),
        ({"interface": "pcan", "bitrate": True}, r"sources\.can\.bitrate: True is not"),
        ({"interface": "pcan", "bitrate": 0}, r"sources\.can\.bitrate: 0 is not"),
        ({"interface": "pcan", "channel": 1.5}, r"sources\.can\.channel: 1\.5 is not a channel name or number"),
        ({"interface": "pcan", "options": {"bitrate": 1}}, r"options: bitrate belong\(s\) in \[sources\.can\] itself"),
        ({"interface": "pcan", "options": ["fd"]}, r"sources\.can\.options: expected a table"),
        (
            {"interface": "slcan", "port": "/dev/ttyACM0"},
            r"port belong\(s\) to the SLCAN reader.*name the device as channel",
        ),
        ({"interface": "slcan", "channel": "/dev/x", "listen_only": True}, r"listen_only belong\(s\) to the SLCAN"),
        ({"interface": "pcan", "speed": 1}, r"sources\.can: unknown key\(s\) speed"),
        ({"interface": "pcan", "stale_after_s": 0}, r"stale_after_s: 0 is not a positive number of seconds"),
        ({"interface": "pcan", "max_pending_frames": 10}, r"max_pending_frames: 10 is below 512"),
        ({"interface": "pcan", "reconnect_base_s": 5, "reconnect_cap_s": 1}, r"backoff needs 0 < base"),
        ({"channel": "can0"}, r'channel go\(es\) with a python-can interface; add interface = "socketcan"'),
        ({"port": "/dev/x", "passive": True, "listen_only": True}, r"passive sends no command, so listen_only \(L\)"),
        ({"port": "/dev/x", "passive": True, "timestamps": True}, r"passive sends no command"),
    ],
)
def test_a_bad_can_section_names_the_key_and_what_is_wrong(
    table: dict[str, Any], message: str, clock: ManualClock
) -> None:
    with pytest.raises(ConfigError, match=message):
        can_reader(table, state=VehicleState(), clock=clock)


# --- frames SLCAN cannot carry ----------------------------------------------------------------


def test_fd_payloads_and_error_frames_are_counted_and_logged(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    state = VehicleState()
    reader = CanBusReader(CanBusConfig(interface="virtual"), state=state, clock=clock)
    frames = reader.handle(
        [
            can.Message(arbitration_id=0x0C1, data=bytes(12), is_fd=True, is_extended_id=False),
            can.Message(arbitration_id=0x20000080, is_error_frame=True, dlc=8, data=bytes(8)),
            can.Message(arbitration_id=0x0C1, is_remote_frame=True, dlc=4, is_extended_id=False),
            speed_message(88.0),
        ]
    )
    assert frames == 3  # the error frame is no sign of a working bus
    assert reader.stats.errors == 2
    assert state.value("Vehicle.Speed") == pytest.approx(88.0)
    logged = caplog.text
    assert "skipped frame 0xC1: DLC 12 outside 0..8 (CAN FD is not supported)" in logged
    assert "error frame on the bus (id 0x20000080)" in logged


# --- drivers that fail -------------------------------------------------------------------------


async def test_an_interface_that_cannot_be_opened_is_one_line_without_traceback(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def no_adapter(settings: CanBusConfig) -> can.BusABC:
        raise can.CanInitializationError("PCAN_ERROR_ILLHW:\n  The hardware\n  is not present")

    sleep = RecordingSleep()
    reader = CanBusReader(
        CanBusConfig(interface="pcan", channel="PCAN_USBBUS1"),
        state=VehicleState(),
        clock=clock,
        sleep=sleep,
        open_bus=no_adapter,
    )
    async with running(reader.run):
        await eventually(lambda: len(sleep.delays) == 1, within=5, what="the failed open")
    lines = [r for r in caplog.records if "cannot open" in r.getMessage()]
    assert lines
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in caplog.records)
    assert (
        "cannot open python-can interface pcan:PCAN_USBBUS1: CanInitializationError: "
        "PCAN_ERROR_ILLHW: The hardware is not present"
    ) in lines[-1].getMessage()


async def test_a_driver_that_hangs_while_opening_times_out(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    closed = threading.Event()

    class Bus:
        def recv(self, timeout: float | None = None) -> None:
            return None

        def shutdown(self) -> None:
            closed.set()

    def hanging(settings: CanBusConfig) -> Any:
        release.wait(5)
        return Bus()

    sleep = RecordingSleep()
    reader = CanBusReader(
        CanBusConfig(interface="kvaser", channel=0, open_timeout_s=0.2),
        state=VehicleState(),
        clock=clock,
        sleep=sleep,
        open_bus=hanging,
    )
    with caplog.at_level(logging.WARNING):
        async with running(reader.run):
            await eventually(lambda: len(sleep.delays) == 1, within=10, what="the open timeout")
            release.set()  # the driver returns late: its thread closes the bus it got, nobody leaks it
            await eventually(closed.is_set, within=5, what="the late bus shut down")
    assert "cannot open python-can interface kvaser:0: no answer within 0.2 s" in caplog.text
    assert "the driver did not return within" in caplog.text


async def test_a_hanging_driver_gets_one_thread_however_often_the_source_retries(clock: ManualClock) -> None:
    release = threading.Event()
    opens: list[int] = []

    def hanging(settings: CanBusConfig) -> Any:
        opens.append(threading.get_ident())
        release.wait(5)
        raise can.CanInitializationError("gave up")

    delays: list[float] = []

    async def sleep(delay: float) -> None:  # the backoff, without the waiting
        delays.append(delay)
        await asyncio.sleep(0)

    reader = CanBusReader(
        CanBusConfig(interface="kvaser", channel=0, open_timeout_s=0.05),
        state=VehicleState(),
        clock=clock,
        sleep=sleep,
        open_bus=hanging,
    )
    try:
        async with running(reader.run):
            await eventually(lambda: len(delays) >= 5, within=10, what="five retries")
            assert len(opens) == 1, "one stuck driver call, not one thread per retry"
    finally:
        release.set()


async def test_a_flood_is_bounded_and_the_drops_are_counted(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop is kept busy while the worker reads: what waits never exceeds max_pending_frames."""
    state = VehicleState()
    channel = f"flood-{id(state)}"
    reader = CanBusReader(
        CanBusConfig(interface="virtual", channel=channel, max_pending_frames=1000, stale_after_s=30),
        state=state,
        clock=clock,
    )
    sender = can.Bus(interface="virtual", channel=channel)
    try:
        async with running(reader.run):
            await eventually(reader.connected.is_set, within=5, what="bus open")
            for _ in range(20_000):
                sender.send(speed_message(50.0))
            # Hold the loop (as a stalled agent would) while the worker drains the virtual bus.
            threading.Event().wait(1.0)  # blocks the loop, on purpose
            await eventually(lambda: reader.stats.messages + reader.stats.errors >= 20_000, within=20, what="all")
    finally:
        sender.shutdown()
    assert reader.stats.errors > 0  # dropped, counted
    assert reader.stats.messages <= 20_000 - reader.stats.errors
    assert "dropping new ones until the agent catches up" in caplog.text
    assert "caught up after dropping" in caplog.text
    assert state.value("Vehicle.Speed") == pytest.approx(50.0)


# --- SLCAN passive, fed by an independent SLCAN writer --------------------------------------------


@pytest.fixture
def pty_pair(tmp_path: Path) -> Any:
    """Two ptys joined by socat: what one end writes the other reads, as over a serial cable."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt install socat)")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    process = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if a.exists() and b.exists():
                break
            threading.Event().wait(0.01)
        else:
            pytest.fail("socat made no pty pair")
        yield str(a), str(b)
    finally:
        process.terminate()
        process.wait(5)


async def test_passive_slcan_reads_what_python_can_slcan_writes(
    pty_pair: tuple[str, str], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """python-can's slcan bus as the transmitting end (a gateway that emits SLCAN on its own): it
    writes its own open sequence and frames; our passive reader sends nothing and decodes the frames."""
    writer_end, reader_end = pty_pair
    state = VehicleState()
    settings = SlcanConfig(port=reader_end, passive=True, backoff=Backoff(base_s=0.5, cap_s=1.0))
    reader = SlcanReader(settings, state=state, clock=clock)
    async with running(reader.run):
        await eventually(reader.connected.is_set, within=5, what="port open")
        bus = can.Bus(interface="slcan", channel=writer_end, sleep_after_open=0)
        try:
            bus.send(speed_message(63.5))
            door = DBC.get_message_by_name("BodyStatus")
            data = door.encode({s.name: 0 for s in door.signals} | {"DoorOpenFrontLeft": 1}, strict=True)
            bus.send(can.Message(arbitration_id=door.frame_id, data=data, is_extended_id=False))
            await eventually(lambda: state.get("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen") is not None, within=5)
            # Nothing went the other way: python-can's own receive buffer saw no command of ours.
            assert bus.recv(0.1) is None
        finally:
            bus.shutdown()
    assert state.value("Vehicle.Speed") == pytest.approx(63.5)
    assert state.value("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen") is True
    # python-can's open sequence (C, O) is no frame: logged as what it is, and skipped.
    assert "unknown response type 'O'" in caplog.text


async def test_an_adapter_without_listen_only_is_told_apart(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Stock CANable firmware answers `L` with BEL: the log says what that means and what to do."""

    class NoListenOnly(PtyDevice):
        async def session(self, port: PtyPort) -> None:
            while True:
                lines = (await port.read()).split(b"\r")[:-1]
                await port.write(b"".join(b"\x07" if line == b"L" else b"\r" for line in lines))

    sleep = RecordingSleep()
    async with NoListenOnly(name="canable", link_path=tmp_path / "ttyCAN") as device:
        settings = SlcanConfig(port=device.path, listen_only=True)
        reader = SlcanReader(settings, state=VehicleState(), clock=clock, sleep=sleep)
        async with running(reader.run):
            await eventually(lambda: len(sleep.delays) == 1, within=5, what="the refusal")
    assert "the adapter refused 'L' (BEL): its firmware has no listen-only mode" in caplog.text
