"""The recorded drive shipped with the scenarios, and how it was made: `python -m hil.recorded_drive`.

A real recording of someone's car cannot be shipped, so this one is synthesized: 15 s of the bus of
the packaged fictional car (`tcu/sources/dbc/vehicle.dbc`, encoded with cantools), every message at
its `GenMsgCycleTime` and the body messages also at once on a change, as the ECUs would send them.
The story: the car is unlocked, the driver's door opens and closes, the ignition goes on, the car
drives off (speed rising to about 60 km/h, the odometer advancing, the doors locking themselves at
15 km/h), stops, the ignition goes off, the car is unlocked and the driver's door opens.

Besides the DBC's frames it holds what a real bus log holds and SLCAN cannot always carry: a 29-bit
frame of another ECU, a remote frame, one error frame and one CAN FD frame, so a replay exercises
each (`hil/devices/replay.py` sends the first two and skips the others with a count).

Written as Vector BLF and ASC and as a candump log (`hil/scenarios/recordings/commute.*`), all three
from the same messages; regenerate them with `python -m hil.recorded_drive [FOLDER]`. The files are
deterministic except the ASC header's `date` line, which python-can fills with the writing time.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import can

from hil.devices.slcan_sim import load_vehicle_dbc

START_EPOCH = 1_741_938_120.0  # 2025-03-14 07:42:00 UTC: the recording's absolute start (BLF, candump)
DURATION_S = 15.0
ODOMETER_START_KM = 48_213.4
RECORDINGS = Path(__file__).parent / "scenarios" / "recordings"
FORMATS = ("blf", "asc", "log")

# when things happen, seconds into the recording
UNLOCK_S, DOOR_OPEN_S, DOOR_CLOSE_S = 0.4, 0.8, 2.4
IGNITION_ON_S, DRIVE_S = 2.6, 3.0
ACCELERATE = (3.0, 8.0)  # 0 → top speed
BRAKE = (10.0, 13.5)  # top speed → 0
TOP_SPEED_KMH = 62.0
AUTO_LOCK_KMH = 15.0
IGNITION_OFF_S, UNLOCK_AGAIN_S, DOOR_OPEN_AGAIN_S = 14.0, 14.3, 14.6
# frames that are not the DBC's
FOREIGN_EXTENDED_ID, FOREIGN_PERIOD_S = 0x18FEF100, 1.0  # a J1939-style 29-bit frame of another ECU
REMOTE_AT_S, REMOTE_ID = 5.0, 0x7DF
ERROR_AT_S = 7.5
FD_AT_S, FD_ID = 9.0, 0x3C0


def speed_kmh(t: float) -> float:
    """The speed profile: smooth (cosine) ramps up and down, a cruise between."""
    (a0, a1), (b0, b1) = ACCELERATE, BRAKE
    if t < a0 or t >= b1:
        return 0.0
    if t < a1:
        return TOP_SPEED_KMH * (1 - math.cos(math.pi * (t - a0) / (a1 - a0))) / 2
    if t < b0:
        return TOP_SPEED_KMH
    return TOP_SPEED_KMH * (1 + math.cos(math.pi * (t - b0) / (b1 - b0))) / 2


@dataclass(slots=True)
class _Body:
    door_open: bool = False
    locked: bool = True
    ignition_on: bool = False
    driving: bool = False


def _body_at(t: float, auto_locked_at: float | None) -> _Body:
    body = _Body()
    body.locked = t < UNLOCK_S or (auto_locked_at is not None and auto_locked_at <= t < UNLOCK_AGAIN_S)
    body.door_open = DOOR_OPEN_S <= t < DOOR_CLOSE_S or t >= DOOR_OPEN_AGAIN_S
    body.ignition_on = IGNITION_ON_S <= t < IGNITION_OFF_S
    body.driving = DRIVE_S <= t < BRAKE[1]
    return body


def commute_messages() -> list[can.Message]:
    """Every message of the recording, in time order, with absolute timestamps."""
    db = load_vehicle_dbc()
    cycles = {message.name: message.cycle_time / 1000 for message in db.messages}
    next_due = dict.fromkeys(cycles, 0.0)
    counters = dict.fromkeys(cycles, 0)
    step_s = 0.001
    odometer_km = ODOMETER_START_KM
    auto_locked_at: float | None = None
    previous: _Body | None = None
    messages: list[can.Message] = []
    extras = _foreign_messages()
    for tick in range(int(DURATION_S / step_s)):
        t = tick * step_s
        odometer_km += speed_kmh(t) * step_s / 3600
        if auto_locked_at is None and speed_kmh(t) >= AUTO_LOCK_KMH:
            auto_locked_at = t
        body = _body_at(t, auto_locked_at)
        names = [name for name, due in next_due.items() if t + 1e-9 >= due]
        if previous is not None and body != previous and "BodyStatus" not in names:
            names.insert(0, "BodyStatus")  # CyclicAndOnChange: the change goes out at once
        previous = body
        for name in names:
            next_due[name] = t + cycles[name]
            message = db.get_message_by_name(name)
            signals = _signals(name, t, body, odometer_km, counters[name])
            counters[name] = (counters[name] + 1) % 16
            data = message.encode(signals, strict=True)
            messages.append(_message(t, message.frame_id, data, extended=message.is_extended_frame))
        while extras and extras[0].timestamp <= START_EPOCH + t:
            messages.append(extras.pop(0))
    return messages


def _signals(name: str, t: float, body: _Body, odometer_km: float, counter: int) -> dict[str, float]:
    match name:
        case "VehicleSpeed":
            return {"VehicleSpeed": round(speed_kmh(t), 2), "SpeedCounter": counter}
        case "Odometer":
            return {"Odometer": round(odometer_km, 1)}
        case "Battery":
            return {"BatteryVoltage": 14.1 if body.ignition_on else 12.5}
        case "Terminal":
            mode = 2 if body.driving else (1 if body.ignition_on else 0)
            return {"TerminalState": 2 if body.ignition_on else 0, "VehicleMode": mode}
        case "AirbagStatus":
            return {"CrashDetected": 0, "AirbagDeployed": 0, "AirbagCounter": counter}
        case "OverheadConsole":
            return {"SosButtonPressed": 0}
        case "BodyStatus":
            doors = ("FrontLeft", "FrontRight", "RearLeft", "RearRight")
            signals: dict[str, float] = {f"DoorOpen{door}": 0 for door in doors}
            signals["DoorOpenFrontLeft"] = int(body.door_open)
            signals |= {f"DoorLocked{door}": int(body.locked) for door in doors}
            return signals | {
                "TrunkOpen": 0,
                "HoodOpen": 0,
                "TrunkLocked": int(body.locked),
                "CentralLockState": int(body.locked),
            }
    raise ValueError(f"the recorded drive has no values for DBC message {name}")


def _message(t: float, can_id: int, data: bytes, *, extended: bool = False) -> can.Message:
    return can.Message(
        timestamp=START_EPOCH + round(t, 6), arbitration_id=can_id, data=data, is_extended_id=extended, channel=0
    )


def _foreign_messages() -> list[can.Message]:
    """The frames a real log holds besides the DBC's, in time order."""
    extras = [
        _message(0.05 + n * FOREIGN_PERIOD_S, FOREIGN_EXTENDED_ID, bytes([n, 0xFF, 0x7D, 0, 0, 0, 0, 0]), extended=True)
        for n in range(int(DURATION_S / FOREIGN_PERIOD_S))
    ]
    extras.append(
        can.Message(
            timestamp=START_EPOCH + REMOTE_AT_S + 0.0005,
            arbitration_id=REMOTE_ID,
            is_remote_frame=True,
            dlc=8,
            channel=0,
            is_extended_id=False,
        )
    )
    extras.append(can.Message(timestamp=START_EPOCH + ERROR_AT_S + 0.0005, is_error_frame=True, channel=0))
    extras.append(
        can.Message(
            timestamp=START_EPOCH + FD_AT_S + 0.0005,
            arbitration_id=FD_ID,
            data=bytes(range(12)),
            is_fd=True,
            bitrate_switch=True,
            is_extended_id=False,
            channel=0,
        )
    )
    return sorted(extras, key=lambda message: message.timestamp)


def write_recording(path: Path, messages: list[can.Message] | None = None) -> Path:
    """The drive in the format the suffix names (.blf, .asc, .log)."""
    writers: dict[str, Callable[[Path], can.io.generic.MessageWriter]] = {
        ".blf": can.BLFWriter,
        ".asc": can.ASCWriter,
        ".log": lambda where: can.CanutilsLogWriter(where, channel="can0"),  # candump names the interface
    }
    with writers[path.suffix](path) as writer:
        for message in messages if messages is not None else commute_messages():
            writer.on_message_received(message)
    return path


def write_all(folder: Path = RECORDINGS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    messages = commute_messages()
    return [write_recording(folder / f"commute.{suffix}", messages) for suffix in FORMATS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hil.recorded_drive", description="Write the recorded drive as BLF, ASC and candump log."
    )
    parser.add_argument(
        "folder", nargs="?", type=Path, default=RECORDINGS, help=f"where to write (default {RECORDINGS})"
    )
    args = parser.parse_args(argv)
    for path in write_all(args.folder):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
