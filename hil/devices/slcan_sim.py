"""A virtual SLCAN (Lawicel) adapter on a pty, on a simulated CAN bus driven by the shared `DriveCycle`.

The adapter answers as a Lawicel CANUSB / CANable does: `S0`-`S8`, `Z0`/`Z1`, `O`/`L` only while the
channel is closed, `C` and `F` only while it is open, `V` and `N` always; OK is CR, refusal is BEL.
An empty line is ignored (python-can sends one). While open it streams the frames of the DBC
(`tcu/sources/dbc/vehicle.dbc`) at their `GenMsgCycleTime`, encoded with cantools from
`DriveCycle.at(elapsed)` and the body state, with `Z1` millisecond timestamps if asked.

`VehicleBus` is the sans-I/O core: `due(now_s)` gives the frames whose cycle time has come, and the
events (`open_door`, `lock`, `crash`, `press_sos`, ...) change the body state and put the affected
message first in the next `due()`, ahead of its cycle, as a real ECU does for `CyclicAndOnChange`
messages (on the pty that is the next bus tick, at most one 20 ms speed cycle later).
`SlcanSimulator` is the pty shell. Faults: `PtyDevice`'s (garbage, truncation, unplug/replug) plus
`reset()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import cantools

from hil.devices.pty_device import PtyDevice, PtyPort
from tcu.errors import ProtocolError
from tcu.sources.slcan import (
    TIMESTAMP_WRAP_MS,
    CanFrame,
    Close,
    Command,
    GetSerialNumber,
    GetStatus,
    GetVersion,
    ListenOnly,
    Open,
    SetBitrate,
    SetTimestamps,
    Transmit,
    format_frame,
    parse_command,
)
from tcu.vehicle.drive_cycle import DriveCycle, DriveSample
from tcu.virtual_time import loop_scale, real_seconds

OK, BEL = b"\r", b"\x07"
_TERMINAL = {True: 2, False: 0}  # TerminalState: ON (KL15) / OFF (KL30 only)
_MODES = {"parked": 0, "living": 1, "driving": 2}


class Door(StrEnum):
    FRONT_LEFT = "FrontLeft"  # driver side (left-hand drive)
    FRONT_RIGHT = "FrontRight"
    REAR_LEFT = "RearLeft"
    REAR_RIGHT = "RearRight"


@dataclass(slots=True)
class BodyState:
    """What the body, airbag and overhead-console ECUs report besides the drive cycle."""

    doors_open: set[Door]
    locked: bool = False
    double_locked: bool = False
    hood_open: bool = False
    trunk_open: bool = False
    crash: bool = False
    airbag_deployed: bool = False
    sos_pressed: bool = False


def load_vehicle_dbc() -> Any:
    """The agent's own DBC: the simulator and the decoder cannot drift apart."""
    text = resources.files("tcu.sources").joinpath("dbc", "vehicle.dbc").read_text("utf-8")
    return cantools.database.load_string(text, database_format="dbc", strict=True)


class VehicleBus:
    """The simulated bus: which frames are due when, with what content."""

    def __init__(self, cycle: DriveCycle | None = None, *, database: Any = None) -> None:
        self.cycle = cycle or DriveCycle()
        self.db = database if database is not None else load_vehicle_dbc()
        self.body = BodyState(doors_open=set())
        self._next_due_us: dict[str, int] = {}
        self._counters: dict[str, int] = {}
        self._urgent: list[str] = []
        # The shortest cycle a message is sent at. On a fast bench's virtual time the DBC's 20 ms would be
        # thousands of frames a real second, more than a pty and the agent keep up with; event frames
        # (doors, crash, SOS) still go at once.
        self.min_cycle_us = 0

    def due(self, now_s: float, drive_elapsed_s: float | None = None) -> list[CanFrame]:
        """Frames to send at `now_s` (seconds on the bus clock): event frames first, then every
        message whose cycle time has come; `drive_elapsed_s` (default `now_s`) samples the drive."""
        sample = self.cycle.at(now_s if drive_elapsed_s is None else drive_elapsed_s)
        now_us = round(now_s * 1_000_000)  # whole microseconds: 3 x 20 ms must be 60 ms exactly
        names = list(dict.fromkeys(self._urgent))
        self._urgent.clear()
        for message in self.db.messages:
            if now_us >= self._next_due_us.get(message.name, now_us) and message.name not in names:
                names.append(message.name)
        frames = []
        for name in names:
            cycle_us = max(self.db.get_message_by_name(name).cycle_time * 1000, self.min_cycle_us)
            due_us = self._next_due_us.get(name, now_us) + cycle_us
            # On the grid of the cycle time (no drift), unless far behind: then no burst of catch-ups.
            self._next_due_us[name] = due_us if due_us > now_us else now_us + cycle_us
            frames.append(self.frame(name, sample))
        return frames

    def next_due_s(self) -> float | None:
        """When the next cyclic frame is due (None before the first `due`); event frames are due at once."""
        if self._urgent:
            return float("-inf")
        if not self._next_due_us:
            return None
        return min(self._next_due_us.values()) / 1_000_000

    def reset_schedule(self) -> None:
        """A channel (re)opened: every message is due now."""
        self._next_due_us.clear()
        self._urgent.clear()

    def frame(self, name: str, sample: DriveSample) -> CanFrame:
        message = self.db.get_message_by_name(name)
        counter = self._counters.get(name, 0)
        self._counters[name] = (counter + 1) % 16
        data = message.encode(self._signals(name, sample, counter), strict=True)
        return CanFrame(can_id=message.frame_id, data=data, extended=message.is_extended_frame)

    def _signals(self, name: str, sample: DriveSample, counter: int) -> dict[str, float]:
        body = self.body
        match name:
            case "VehicleSpeed":
                return {"VehicleSpeed": 0.0 if body.crash else sample.speed_kmh, "SpeedCounter": counter}
            case "Odometer":
                return {"Odometer": round(sample.odometer_km, 1)}
            case "Battery":
                return {"BatteryVoltage": sample.battery_v}
            case "Terminal":
                return {"TerminalState": _TERMINAL[sample.ignition_on], "VehicleMode": _MODES[sample.mode.value]}
            case "AirbagStatus":
                return {"CrashDetected": body.crash, "AirbagDeployed": body.airbag_deployed, "AirbagCounter": counter}
            case "OverheadConsole":
                return {"SosButtonPressed": body.sos_pressed}
            case "BodyStatus":
                signals: dict[str, float] = {f"DoorOpen{door.value}": door in body.doors_open for door in Door}
                signals |= {f"DoorLocked{door.value}": body.locked for door in Door}
                lock_state = 2 if body.double_locked else int(body.locked)
                return signals | {
                    "TrunkOpen": body.trunk_open,
                    "HoodOpen": body.hood_open,
                    "TrunkLocked": body.locked,
                    "CentralLockState": lock_state,
                }
        raise ValueError(f"the simulator has no values for DBC message {name}")

    # -- events: change the body state and send the message now --------------------------------
    def open_door(self, door: Door, is_open: bool = True) -> None:
        (self.body.doors_open.add if is_open else self.body.doors_open.discard)(door)
        self._urgent.append("BodyStatus")

    def set_hood(self, is_open: bool) -> None:
        self.body.hood_open = is_open
        self._urgent.append("BodyStatus")

    def set_trunk(self, is_open: bool) -> None:
        self.body.trunk_open = is_open
        self._urgent.append("BodyStatus")

    def lock(self, *, double: bool = False) -> None:
        self.body.locked, self.body.double_locked = True, double
        self._urgent.append("BodyStatus")

    def unlock(self) -> None:
        self.body.locked = self.body.double_locked = False
        self._urgent.append("BodyStatus")

    def crash(self, *, airbag: bool = True) -> None:
        """A crash: the airbag ECU reports it (and the deployment) at once; the car stops."""
        self.body.crash, self.body.airbag_deployed = True, airbag
        self._urgent += ["AirbagStatus", "VehicleSpeed"]

    def press_sos(self, pressed: bool = True) -> None:
        self.body.sos_pressed = pressed
        self._urgent.append("OverheadConsole")


@dataclass(slots=True)
class _Channel:
    bitrate: int | None = None
    open: bool = False
    listen_only: bool = False
    timestamps: bool = False
    opened_at: float = 0.0


MIN_REAL_CYCLE_S = 0.01  # on virtual time: at most 100 frames of one message a real second


class SlcanSimulator(PtyDevice):
    """The pty shell around `VehicleBus`."""

    def __init__(
        self,
        *,
        cycle: DriveCycle | None = None,
        elapsed: Callable[[], float] | None = None,
        link_path: str | None = None,
        version: tuple[int, int] = (0x10, 0x13),
        serial_number: str = "A123",
    ) -> None:
        super().__init__(name="SLCAN", link_path=link_path)
        self.bus = VehicleBus(cycle)
        self._elapsed = elapsed  # seconds into the drive; default: the bus clock
        self._t0: float | None = None
        self.version = version
        self.serial_number = serial_number
        self.channel = _Channel()
        self.commands: list[Command | ProtocolError] = []  # every command received, for tests
        self.transmitted: list[CanFrame] = []  # frames the host sent onto the bus
        self._input = bytearray()

    def now_s(self) -> float:
        """The bus clock (loop time since first use): cycle times and `Z1` stamps are the loop's time."""
        loop_time = asyncio.get_running_loop().time()
        if self._t0 is None:
            self._t0 = loop_time
        return loop_time - self._t0

    def drive_s(self) -> float:
        """Seconds into the drive: the injected source (e.g. sped up, or a test's), else the bus clock."""
        return self._elapsed() if self._elapsed is not None else self.now_s()

    def on_plug(self) -> None:
        self.channel = _Channel()
        self._input.clear()

    def reset(self) -> None:
        """The adapter reboots on its own: channel closed, settings gone, frames stop."""
        self.on_plug()

    def respond(self, line: bytes) -> bytes:
        """The adapter's answer to one command line (sans-I/O)."""
        if not line:
            return b""
        try:
            command = parse_command(line)
        except ProtocolError as exc:
            self.commands.append(exc)
            return BEL
        self.commands.append(command)
        channel = self.channel
        match command:
            case SetBitrate(bitrate=bitrate) if not channel.open:
                channel.bitrate = bitrate
            case SetTimestamps(enabled=enabled) if not channel.open:
                channel.timestamps = enabled
            case Open() | ListenOnly() if not channel.open and channel.bitrate is not None:
                channel.open, channel.listen_only = True, isinstance(command, ListenOnly)
                channel.opened_at = self.now_s()
                self.bus.reset_schedule()
            case Close() if channel.open:
                channel.open = False
            case GetVersion():
                return f"V{self.version[0]:02X}{self.version[1]:02X}\r".encode()
            case GetSerialNumber():
                return f"N{self.serial_number}\r".encode()
            case GetStatus() if channel.open:
                return b"F00\r"
            case Transmit(frame=frame) if channel.open and not channel.listen_only:
                self.transmitted.append(frame)
                return b"Z\r" if frame.extended else b"z\r"
            case _:
                return BEL
        return OK

    def pending_frames(self) -> bytes:
        """The lines of every frame due now, if the channel is open."""
        if not self.channel.open:
            return b""
        now = self.now_s()
        frames = self.bus.due(now, self.drive_s())
        if not self.channel.timestamps:
            return b"".join(format_frame(frame) for frame in frames)
        stamp = int((now - self.channel.opened_at) * 1000) % TIMESTAMP_WRAP_MS
        return b"".join(
            format_frame(CanFrame(can_id=f.can_id, data=f.data, extended=f.extended, timestamp_ms=stamp))
            for f in frames
        )

    async def session(self, port: PtyPort) -> None:
        if loop_scale() != 1:
            self.bus.min_cycle_us = round(real_seconds(MIN_REAL_CYCLE_S) * 1_000_000)
        while True:
            wait = self._until_next_frame()
            try:
                async with asyncio.timeout(wait):
                    self._input += await port.read()
            except TimeoutError:
                pass
            while (end := self._input.find(b"\r")) >= 0:
                line = bytes(self._input[:end]).replace(b"\n", b"")
                del self._input[: end + 1]
                if answer := self.respond(line):
                    await port.write(answer)
            if frames := self.pending_frames():
                await port.write(frames)

    def _until_next_frame(self) -> float | None:
        if not self.channel.open:
            return None
        due = self.bus.next_due_s()
        return 0.0 if due is None else max(0.0, due - self.now_s())
