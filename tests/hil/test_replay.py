"""Recorded drives replayed as a virtual SLCAN adapter: the schedule (timing, speed, loops, what is
skipped), each file format through a real pty into the agent's SlcanReader with the values the DBC
decodes from the file itself, `tcu-hil replay`, and a scenario whose CAN bus is a recording."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import pytest
from cantools.database.namedsignalvalue import NamedSignalValue

from hil import recorded_drive
from hil.cli import main as hil_cli
from hil.devices.replay import RecordingSchedule, ReplayDevice, Skip, open_recording, to_slcan
from hil.devices.slcan_sim import load_vehicle_dbc
from hil.report import load_timeline
from hil.scenario import library, load_scenario, parse_scenario
from tcu.clock import ManualClock
from tcu.errors import ConfigError
from tcu.sources.slcan import CanFrame, SlcanStream
from tcu.sources.slcan_reader import SlcanChannel, SlcanConfig, SlcanReader
from tcu.vehicle.state import VehicleState
from tests.conftest import eventually, require_mosquitto

RECORDINGS = recorded_drive.RECORDINGS
ROOT = Path(__file__).parent.parent.parent
# DBC signal → the VSS path the agent's mapping gives it (tcu/vehicle/mapping/can.toml)
PATHS = {
    "VehicleSpeed": "Vehicle.Speed",
    "Odometer": "Vehicle.TraveledDistance",
    "BatteryVoltage": "Vehicle.LowVoltageBattery.CurrentVoltage",
    "TerminalState": "Vehicle.LowVoltageSystemState",
    "DoorOpenFrontLeft": "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen",
    "DoorLockedFrontLeft": "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked",
    "CentralLockState": "Vehicle.Body.CentralLock.State",
}


def msg(t: float, can_id: int = 0x123, data: bytes = b"\x01", **kwargs: Any) -> can.Message:
    return can.Message(timestamp=t, arbitration_id=can_id, data=data, **({"is_extended_id": False} | kwargs))


def schedule_of(messages: list[can.Message], **kwargs: Any) -> RecordingSchedule:
    return RecordingSchedule(lambda: iter(messages), **kwargs)


def times(frames: list[tuple[float, CanFrame]]) -> list[float]:
    return [round(at, 6) for at, _frame in frames]


# -- the schedule (sans-I/O) -------------------------------------------------------------------


def test_frames_keep_the_recorded_timing_scaled_by_speed() -> None:
    schedule = schedule_of([msg(1000.0), msg(1001.0), msg(1003.0)], speed=2.0)
    assert schedule.next_due_s() is None  # nothing before the host opens the channel
    schedule.start(10.0)
    assert times(schedule.due(10.0)) == [10.0]
    assert schedule.next_due_s() == 10.5
    assert schedule.due(10.49) == []
    assert times(schedule.due(12.0)) == [10.5, 11.5]
    assert schedule.finished
    assert schedule.stats.ended_s == 11.5
    assert schedule.next_due_s() is None


def test_looping_starts_over_one_mean_interval_after_the_last_frame() -> None:
    schedule = schedule_of([msg(5.0), msg(5.1), msg(5.2)], loop=True)
    schedule.start(0.0)
    assert times(schedule.due(0.55)) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert schedule.stats.passes == 2
    assert not schedule.finished
    lone = schedule_of([msg(7.0)], loop=True, speed=2.0)
    lone.start(0.0)
    assert times(lone.due(0.2)) == [0.0, 0.05, 0.1, 0.15, 0.2]  # no flood: a 0.1 s seam, scaled


def test_what_slcan_cannot_carry_is_skipped_and_counted() -> None:
    messages = [
        msg(0.0, 0x1ABCDEF0, bytes(8), is_extended_id=True),
        msg(0.1, 0x7DF, b"", is_remote_frame=True, dlc=8),
        msg(0.2, 0, b"", is_error_frame=True),
        msg(0.3, 0x200, bytes(12), is_fd=True),
        msg(0.4, 0x800, b"\x00"),  # an 11-bit id cannot be 0x800
        msg(0.5, 0x100, b"\x00", channel=1),
        msg(0.6, 0x101, b"\x00", channel=0),
    ]
    schedule = schedule_of(messages, channel="0")
    schedule.start(0.0)
    frames = [frame for _at, frame in schedule.due(1.0)]
    assert frames == [
        CanFrame(can_id=0x1ABCDEF0, data=bytes(8), extended=True),
        CanFrame(can_id=0x7DF, remote=True, dlc=8),
        CanFrame(can_id=0x101, data=b"\x00"),
    ]
    assert schedule.stats.skipped == {Skip.ERROR_FRAME: 1, Skip.CAN_FD: 1, Skip.INVALID: 1, Skip.OTHER_CHANNEL: 1}
    assert to_slcan(msg(0.0, 0x100, b"\x00", channel="can1")) == CanFrame(can_id=0x100, data=b"\x00")  # no filter


def test_timestamps_going_backwards_are_sent_in_file_order_at_once() -> None:
    schedule = schedule_of([msg(10.0), msg(11.0), msg(10.5), msg(math.nan), msg(12.0)])
    schedule.start(0.0)
    assert times(schedule.due(5.0)) == [0.0, 1.0, 1.0, 1.0, 2.0]
    assert schedule.stats.out_of_order == 2


def test_a_recording_without_a_sendable_frame_ends_even_when_looped() -> None:
    schedule = schedule_of([msg(0.0, 0, b"", is_error_frame=True)], loop=True)
    schedule.start(0.0)
    assert schedule.due(100.0) == []
    assert schedule.finished
    assert schedule.stats.skipped == {Skip.ERROR_FRAME: 1}


def test_a_damaged_file_ends_the_pass_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    def damaged() -> Iterator[can.Message]:
        yield msg(0.0)
        yield msg(0.1)
        raise ValueError("bad line 3")

    schedule = RecordingSchedule(damaged, name="bad.asc")
    schedule.start(0.0)
    assert len(schedule.due(1.0)) == 2
    assert schedule.finished
    assert schedule.stats.read_errors == 1
    assert "bad.asc: reading stopped after 2 message(s): bad line 3" in caplog.text


@pytest.mark.parametrize("speed", [0.0, -1.0, math.nan, math.inf])
def test_a_speed_that_is_not_positive_is_refused(speed: float) -> None:
    with pytest.raises(ConfigError, match="must be a positive number"):
        schedule_of([], speed=speed)


def test_unreadable_recordings_are_refused_before_any_device_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        open_recording(tmp_path / "missing.blf")
    (tmp_path / "drive.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"drive\.txt: .*\.asc and \.blf are read"):
        open_recording(tmp_path / "drive.txt")
    (tmp_path / "drive.blf").write_bytes(b"not a BLF file at all" * 10)
    with pytest.raises(ConfigError, match=r"drive\.blf: not a readable \.blf file"):
        open_recording(tmp_path / "drive.blf")


def test_the_shipped_recordings_are_what_the_script_makes(tmp_path: Path) -> None:
    """Regenerating gives the same frames: the committed files and hil/recorded_drive.py agree."""
    fresh = recorded_drive.write_all(tmp_path)
    for path in fresh:
        assert path.stat().st_size < 200_000
        assert list(summarised(path)) == list(summarised(RECORDINGS / path.name))


def summarised(path: Path) -> Iterator[tuple[object, ...]]:
    with can.LogReader(path) as reader:
        first = None
        for m in reader:
            first = m.timestamp if first is None else first
            flags = (m.is_extended_id, m.is_remote_frame, m.is_error_frame, m.is_fd)
            yield (round(m.timestamp - first, 6), m.arbitration_id, bytes(m.data), *flags)


# -- through a pty into the agent's reader ---------------------------------------------------------


def recorded_series(path: Path) -> tuple[dict[str, list[object]], int]:
    """What the recording encodes, decoded with the DBC: per signal the values in order (repeats
    dropped), as the agent's types (1-bit flags bool, VAL_ names str); and how many frames SLCAN carries."""
    db = load_vehicle_dbc()
    ids = {message.frame_id for message in db.messages}
    series: dict[str, list[object]] = defaultdict(list)
    carried = 0
    with can.LogReader(path) as reader:
        for m in reader:
            if m.is_error_frame or m.is_fd:
                continue
            carried += 1
            if m.is_remote_frame or m.is_extended_id or m.arbitration_id not in ids:
                continue
            message = db.get_message_by_frame_id(m.arbitration_id)
            for name, raw in message.decode(bytes(m.data), decode_choices=True).items():
                if name not in PATHS:
                    continue
                value: object = raw
                if isinstance(raw, NamedSignalValue):
                    value = str(raw)
                elif message.get_signal_by_name(name).length == 1:
                    value = bool(raw)
                if not series[name] or series[name][-1] != value:
                    series[name].append(value)
    return series, carried


def observe(state: VehicleState) -> dict[str, list[object]]:
    seen: dict[str, list[object]] = defaultdict(list)

    def changed(signal: Any) -> None:
        values = seen[signal.path]
        if not values or values[-1] != signal.value:
            values.append(signal.value)

    state.subscribe(changed)
    return seen


@pytest.mark.parametrize("suffix", ["blf", "asc", "log"])
async def test_each_format_replays_through_a_pty_into_the_slcan_reader(
    suffix: str, tmp_path: Path, clock: ManualClock
) -> None:
    path = RECORDINGS / f"commute.{suffix}"
    expected, carried = recorded_series(path)
    assert expected["DoorOpenFrontLeft"] == [False, True, False, True]  # the drive the file was made of
    assert expected["CentralLockState"] == ["LOCKED", "UNLOCKED", "LOCKED", "UNLOCKED"]
    assert max(expected["VehicleSpeed"]) == pytest.approx(62.0)  # type: ignore[type-var]
    state = VehicleState()
    seen = observe(state)
    async with ReplayDevice(path, speed=10.0, link_path=str(tmp_path / "ttyREPLAY")) as device:
        reader = SlcanReader(SlcanConfig(port=device.path), state=state, clock=clock)
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(reader.run(), name="source-can")
            await asyncio.wait_for(device.finished.wait(), 15)
            await eventually(lambda: reader.stats.messages == carried, within=5, what="every frame at the reader")
            task.cancel()
    stats = device.stats
    assert (stats.sent, stats.missed, stats.passes) == (carried, 0, 1)
    assert stats.skipped == {Skip.ERROR_FRAME: 1, Skip.CAN_FD: 1}
    assert reader.stats.errors == 0
    for name, path_ in PATHS.items():
        values = expected[name]
        if name in ("VehicleSpeed", "Odometer", "BatteryVoltage"):
            assert seen[path_] == pytest.approx(values, abs=1e-6), name
        else:
            assert seen[path_] == values, name
    assert stats.ended_s is not None
    assert stats.started_s is not None
    assert stats.ended_s - stats.started_s == pytest.approx(14.99 / 10, abs=0.01)


async def test_z1_stamps_are_the_recorded_times_scaled(tmp_path: Path) -> None:
    path = RECORDINGS / "commute.asc"
    with can.LogReader(path) as reader:
        stamps = [m.timestamp for m in reader if not (m.is_error_frame or m.is_fd)][:150]
    settings = SlcanConfig(port=str(tmp_path / "ttyREPLAY"), timestamps=True)
    async with ReplayDevice(path, speed=2.0, link_path=settings.port), SlcanChannel.open(settings) as channel:
        frames: list[CanFrame] = []
        while len(frames) < len(stamps):
            frames += [item for item in await channel.read_batch() if isinstance(item, CanFrame)]
    for frame, stamp in zip(frames, stamps, strict=False):
        assert frame.timestamp_ms is not None
        assert abs(frame.timestamp_ms - (stamp - stamps[0]) * 1000 / 2.0) <= 1.0


async def test_frames_due_while_the_channel_is_closed_are_missed_not_burst() -> None:
    device = ReplayDevice(RECORDINGS / "commute.blf", speed=1.0)
    bus_time = [0.0]
    device.now_s = lambda: bus_time[0]  # type: ignore[method-assign]
    for command in (b"S6", b"O"):
        device.respond(command)
    first = SlcanStream().feed(device.pending_frames())
    assert len(first) == 7  # every DBC message at t=0
    device.respond(b"C")
    bus_time[0] = 5.0
    assert device.pending_frames() == b""
    missed = device.stats.missed
    assert 400 < missed < 600  # about 5 s of a ~95 frames/s bus
    device.respond(b"O")
    assert device.pending_frames() == b""  # no burst of the missed seconds on reopening
    bus_time[0] = 5.05
    after = [item for item in SlcanStream().feed(device.pending_frames()) if isinstance(item, CanFrame)]
    assert 1 <= len(after) <= 10
    assert (device.stats.sent, device.stats.missed) == (7 + len(after), missed)
    device.schedule.close()


async def test_a_looped_replay_runs_pass_after_pass(tmp_path: Path, clock: ManualClock) -> None:
    state = VehicleState()
    async with ReplayDevice(RECORDINGS / "commute.log", speed=50.0, loop=True) as device:
        reader = SlcanReader(SlcanConfig(port=device.path), state=state, clock=clock)
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(reader.run(), name="source-can")
            await eventually(
                lambda: device.stats.passes >= 3 and reader.stats.messages >= 2 * 1412,
                within=10,
                what="three passes begun and two whole passes read",
            )
            task.cancel()
    assert not device.finished.is_set()
    assert device.stats.skipped[Skip.ERROR_FRAME] >= 2  # counted again on every pass
    assert reader.stats.messages >= 2 * 1412


# -- tcu-hil replay -------------------------------------------------------------------------------


def replay_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "replay", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_tcu_hil_replay_serves_the_recording_once_and_sums_up(tmp_path: Path) -> None:
    link = tmp_path / "ttyREPLAY"
    process = replay_process(str(RECORDINGS / "commute.blf"), "--speed", "20", "--link", str(link))
    try:
        first = await asyncio.to_thread(process.stdout.readline)  # type: ignore[union-attr]
        assert first.startswith(f"replaying {RECORDINGS / 'commute.blf'} at speed 20, once, on {link}")
        second = await asyncio.to_thread(process.stdout.readline)  # type: ignore[union-attr]
        assert second.strip() == f'point the agent at it:  [sources.can]  port = "{link}"'
        async with SlcanChannel.open(SlcanConfig(port=str(link))) as channel:
            frames = 0
            while frames < 1412:
                frames += sum(isinstance(item, CanFrame) for item in await channel.read_batch())
        out, err = await asyncio.to_thread(process.communicate, timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "commute.blf: 1412 frame(s) sent; skipped 1 CAN FD frame, 1 error frame; 0 missed" in out
    assert "1 pass(es); 0.7 s" in out  # 14.99 s at 20 times the speed


def test_tcu_hil_replay_loops_until_ctrl_c(tmp_path: Path) -> None:
    process = replay_process(str(RECORDINGS / "commute.asc"), "--speed", "100", "--loop")
    try:
        first = process.stdout.readline()  # type: ignore[union-attr]
        process.stdout.readline()  # type: ignore[union-attr]
        pty = first.rsplit(" on ", 1)[1].strip()
        port = os.open(pty, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(port, b"S6\rO\r")
            received = 0
            while received < 4 * 1412 * 30:  # four passes of ~30 bytes a frame
                received += len(os.read(port, 65536))
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=20)
        finally:
            os.close(port)
    finally:
        process.kill()
    assert process.returncode == 0, err
    summary = out.splitlines()[-1]
    passes = int(summary.split(" pass(es)")[0].rsplit(" ", 1)[1])
    assert passes >= 4, summary
    assert f"skipped {passes - 1}" in summary or f"skipped {passes}" in summary  # the FD frame, once a pass


def test_tcu_hil_replay_refuses_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert hil_cli(["replay", str(tmp_path / "nope.blf")]) == 2
    assert f"tcu-hil: error: recording {tmp_path / 'nope.blf'}: no such file" in capsys.readouterr().err


# -- a scenario on a recorded drive ---------------------------------------------------------------

DRIVE = """
name = "drive"
duration_s = 5
devices = ["can"]
[vehicle]
legal_ecall = false
"""


def test_scenario_drive_section_is_validated(tmp_path: Path) -> None:
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "mine.asc").write_text("")
    scenario = tmp_path / "mine.toml"
    scenario.write_text(DRIVE + '[drive]\nreplay = "recordings/mine.asc"\nspeed = 2\nloop = true\nchannel = 1\n')
    drive = load_scenario(scenario).drive
    assert drive is not None
    assert (drive.recording, drive.speed, drive.loop, drive.channel) == (
        tmp_path / "recordings" / "mine.asc",
        2.0,
        True,
        "1",
    )
    assert load_scenario(library()["commute"]).drive is None
    bad = {
        '[drive]\nreplay = "nope.blf"\n': r"replay = 'nope.blf': no such file",
        "[drive]\nspeed = 2.0\n": r'needs replay = "path/to/recording.blf"',
        f'[drive]\nreplay = "{scenario}"\nspeed = 0\n': r"speed = 0: expected a positive number",
        f'[drive]\nreplay = "{scenario}"\nspeed = true\n': r"speed = True: expected a positive number",
        f'[drive]\nreplay = "{scenario}"\nloop = "yes"\n': r"loop = 'yes': expected true or false",
        f'[drive]\nreplay = "{scenario}"\nrate = 2\n': r"unknown key\(s\) rate",
        f'[drive]\nreplay = "{scenario}"\n[[step]]\nat = 1\ndo = "lock"\n': r"step\(s\) lock change the simulated CAN",
    }
    for extra, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            parse_scenario(DRIVE + extra, base=tmp_path)
    with pytest.raises(ConfigError, match=r'add "can" to devices'):
        parse_scenario(DRIVE.replace('["can"]', '["obd"]') + f'[drive]\nreplay = "{scenario}"\n')


def test_a_recorded_drive_passes_through_tcu_hil_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped scenario: its CAN bus is the BLF recording; what reaches the backend is what the
    recording encodes at its end (door open, unlocked, the odometer's last value)."""
    require_mosquitto()
    expected, carried = recorded_series(RECORDINGS / "commute.blf")
    code = hil_cli(["run", "replay_commute", "--workdir", str(tmp_path / "run"), "--broker", "mosquitto"])
    out = capsys.readouterr().out
    assert code == 0, out
    checks = len(load_scenario(library()["replay_commute"]).expectations)
    assert f"replay_commute: PASS ({checks}/{checks} expectations)" in out
    timeline = load_timeline(tmp_path / "run" / "report" / "timeline.json")
    details = {result.name: result.detail for result in timeline.expectations}
    assert details["signal_reported(path=Vehicle.Cabin.Door.Row1.DriverSide.IsOpen)"].startswith("last value True")
    assert details["signal_reported(path=Vehicle.Body.CentralLock.State)"].startswith("last value 'UNLOCKED'")
    odometer = details["signal_reported(path=Vehicle.TraveledDistance)"]
    assert odometer.startswith(f"last value {expected['Odometer'][-1]}"), odometer
    speeds = [sample.speed_kmh for sample in timeline.samples if sample.speed_kmh is not None]
    assert 50 < max(speeds) <= 62.0  # the recording's drive, not the simulated one
    replay = next(event for event in timeline.events if event.label == "replay")
    assert replay.detail.startswith(f"commute.blf: {carried} frame(s) sent; skipped 1 CAN FD frame, 1 error frame")


def test_the_runner_puts_the_recording_on_the_can_bus_at_its_own_speed(tmp_path: Path) -> None:
    """The recording's speed only: the bench's virtual time scales every timer, the replay's too."""
    from hil.runner import ScenarioRunner  # noqa: PLC0415
    from tcu.vehicle.drive_cycle import DriveCycle  # noqa: PLC0415

    recording = RECORDINGS / "commute.asc"
    scenario = parse_scenario(
        "time_scale = 3.0\n" + DRIVE + f'[drive]\nreplay = "{recording}"\nspeed = 0.5\nchannel = 0\n'
    )
    device = ScenarioRunner(scenario, tmp_path).can_device(DriveCycle(), str(tmp_path / "can"))
    assert isinstance(device, ReplayDevice)
    assert (device.recording, device.schedule.speed, device.schedule.channel) == (recording, 0.5, "0")
    device.schedule.close()
